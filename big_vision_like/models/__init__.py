"""Built-in models; importing this package registers them."""

from big_vision_like.models import vit  # noqa: F401
