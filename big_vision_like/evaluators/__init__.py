"""Built-in evaluators; each module registers itself in `registry.EVALUATORS`."""

from big_vision_like.evaluators import classification  # noqa: F401
