"""Built-in models; importing this package registers them."""

from big_vision_like.models import bit  # noqa: F401
from big_vision_like.models import bit_paper  # noqa: F401
from big_vision_like.models import convnext  # noqa: F401
from big_vision_like.models import mlp_mixer  # noqa: F401
from big_vision_like.models import nfnet  # noqa: F401
from big_vision_like.models import text_transformer  # noqa: F401
from big_vision_like.models import two_towers  # noqa: F401
from big_vision_like.models import vit  # noqa: F401
