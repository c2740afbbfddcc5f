r"""Peak memory and step time of the contrastive losses at large batch.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 \
      python -m big_vision_like.tools.loss_benchmark --batch 32768 --dim 512

For each implementation (sigmoid chunked, sigmoid all_gather, softmax
all_gather) it compiles the loss and its gradient with respect to both
embeddings on the batch sharded over every device, and prints the per-device
peak memory XLA plans for the compiled step (`memory_analysis`: arguments +
outputs + temporaries) and the measured step time.
"""

import time

from absl import app
from absl import flags
import jax
import numpy as np

from big_vision_like import sharding
from big_vision_like.losses import contrastive

_BATCH = flags.DEFINE_integer("batch", 32768, "Global batch size.")
_DIM = flags.DEFINE_integer("dim", 512, "Embedding dimension.")
_STEPS = flags.DEFINE_integer("timed_steps", 2, "Timed steps after a warm-up.")

IMPLEMENTATIONS = (("sigmoid", "chunked"), ("sigmoid", "all_gather"),
                   ("softmax", "all_gather"))


def _loss_fn(loss, implementation, mesh):
  if loss == "sigmoid":
    return lambda zi, zt: contrastive.sigmoid_loss(
        zi, zt, 10.0, -10.0, implementation=implementation, mesh=mesh)
  return lambda zi, zt: contrastive.softmax_loss(
      zi, zt, 10.0, implementation=implementation, mesh=mesh)


def peak_bytes(compiled):
  """Per-device bytes XLA needs for a compiled step (args, outs, temps)."""
  m = compiled.memory_analysis()
  return (m.argument_size_in_bytes + m.output_size_in_bytes +
          m.temp_size_in_bytes - m.alias_size_in_bytes)


def measure(loss, implementation, batch, dim, steps, mesh=None):
  """Returns (peak bytes per device, seconds per step) of loss + gradient."""
  mesh = mesh or sharding.make_mesh()
  sh = sharding.batch_sharding(mesh)
  rng = np.random.default_rng(0)
  z = [rng.normal(size=(batch, dim)).astype(np.float32) for _ in range(2)]
  z = [jax.device_put(x / np.linalg.norm(x, axis=-1, keepdims=True), sh)
       for x in z]
  step = jax.jit(jax.value_and_grad(_loss_fn(loss, implementation, mesh),
                                    argnums=(0, 1)))
  compiled = step.lower(*z).compile()
  jax.block_until_ready(compiled(*z))
  t0 = time.perf_counter()
  for _ in range(steps):
    jax.block_until_ready(compiled(*z))
  return peak_bytes(compiled), (time.perf_counter() - t0) / steps


def main(argv):
  del argv
  n = jax.device_count()
  print(f"global batch {_BATCH.value}, dim {_DIM.value}, {n} devices "
        f"({jax.devices()[0].device_kind}); local batch {_BATCH.value // n}")
  print("| loss | implementation | peak memory per device (MiB) | step s |")
  print("|---|---|---|---|")
  for loss, implementation in IMPLEMENTATIONS:
    peak, sec = measure(loss, implementation, _BATCH.value, _DIM.value,
                        _STEPS.value)
    print(f"| {loss} | {implementation} | {peak / 2**20:.0f} | {sec:.2f} |",
          flush=True)


if __name__ == "__main__":
  app.run(main)
