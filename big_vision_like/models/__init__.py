"""Built-in models; importing this package registers them."""

from big_vision_like.models import nfnet  # noqa: F401
from big_vision_like.models import text_transformer  # noqa: F401
from big_vision_like.models import two_towers  # noqa: F401
from big_vision_like.models import vit  # noqa: F401
