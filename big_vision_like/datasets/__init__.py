"""Data sources: built-in offline TFDS builders and own-data sources.

Importing this package registers the built-in TFDS builders (`bvl_digits`,
`bvl_shapes`).
"""

from big_vision_like.datasets import digits  # noqa: F401  (registers builder)
from big_vision_like.datasets import shapes  # noqa: F401  (registers builder)
from big_vision_like.datasets.core import DataSource
from big_vision_like.datasets.core import get_builder
from big_vision_like.datasets.core import get_source
from big_vision_like.datasets.core import TfdsSource

__all__ = ["DataSource", "TfdsSource", "get_builder", "get_source"]
