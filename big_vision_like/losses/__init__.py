"""Built-in losses; each module registers its losses in `registry.LOSSES`."""

from big_vision_like.losses import classification  # noqa: F401
from big_vision_like.losses import contrastive  # noqa: F401
from big_vision_like.losses import distillation  # noqa: F401
