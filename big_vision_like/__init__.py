"""big_vision_like: JAX/Flax pretraining of vision and vision-language models."""
