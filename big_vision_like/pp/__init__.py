"""Preprocessing ops and the pp-string builder (`get_preprocess_fn`).

Importing this package registers the built-in ops in `registry.PP_OPS`.
"""

from big_vision_like.pp import autoaugment  # noqa: F401  (registers ops)
from big_vision_like.pp import ops_general  # noqa: F401  (registers ops)
from big_vision_like.pp import ops_image  # noqa: F401  (registers ops)
from big_vision_like.pp import ops_text  # noqa: F401  (registers ops)
from big_vision_like.pp.builder import get_preprocess_fn

__all__ = ["get_preprocess_fn"]
