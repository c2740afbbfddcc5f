"""Built-in evaluators; each module registers itself in `registry.EVALUATORS`."""

from big_vision_like.evaluators import classification  # noqa: F401
from big_vision_like.evaluators import fewshot  # noqa: F401
from big_vision_like.evaluators import knn  # noqa: F401
from big_vision_like.evaluators import linear_probe  # noqa: F401
from big_vision_like.evaluators import mean  # noqa: F401
from big_vision_like.evaluators import retrieval  # noqa: F401
from big_vision_like.evaluators import save_predictions  # noqa: F401
from big_vision_like.evaluators import zeroshot  # noqa: F401
from big_vision_like.evaluators import distill_agreement  # noqa: F401
