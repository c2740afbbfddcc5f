"""big_vision_like: JAX/Flax pretraining of vision and vision-language models."""

from big_vision_like import host_memory as _host_memory

# Before any JAX computation starts XLA's threads; see host_memory's doc.
_host_memory.configure()
