r"""Train-step throughput and FLOP utilisation of models, on this machine.

  python -m big_vision_like.tools.benchmark --models vit:S/16 --res 224 \
      --batch_size 8,16,32 --steps 5
  # ViT-B/16 next to NFNet-F0 (forward + backward + update):
  python -m big_vision_like.tools.benchmark --models vit:B/16,nfnet:F0 \
      --batch_size 8

Prints, for each model and batch size, examples/s, the step time, the step's
FLOPs (XLA cost analysis) and the utilisation = FLOPs / step time / the
measured peak of a large matmul in the matmul dtype on the same devices. The
step is the trainer's own `make_train_step` (forward, backward, softmax
cross-entropy, AdamW update) on constant data.
"""

import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from big_vision_like import optim
from big_vision_like import sharding
from big_vision_like import step as step_lib
from big_vision_like import visibility
from big_vision_like.registry import LOSSES
from big_vision_like.registry import MODELS

matmul_peak = visibility.matmul_peak  # Shared with the trainer's MFU.

_MODELS = flags.DEFINE_list("models", ["vit:S/16"],
                            "Registered model names with their variant.")
_RES = flags.DEFINE_integer("res", 224, "Image resolution.")
_BATCH = flags.DEFINE_list("batch_size", ["8", "16", "32"],
                           "Global batch sizes to measure.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps (after 1 warm-up).")
_DTYPE = flags.DEFINE_string("dtype_mm", "float32", "Matmul dtype.")
_MATMUL = flags.DEFINE_integer("matmul_size", 2048, "Peak-matmul size.")


def step_benchmark(model_name, variant, res, batch_size, steps, dtype_mm,
                   mesh=None):
  """Returns (seconds per step, FLOPs per step) of a model's train step.

  FLOPs are XLA's count of the whole unpartitioned global step
  (`visibility.step_flops` of the Lowered): the same on every platform,
  where a GPU executable's own count misses the matmuls given to cuBLAS.
  """
  mesh = mesh or sharding.make_mesh()
  model = MODELS.get(model_name)(num_classes=1000, variant=variant,
                                 dtype_mm=dtype_mm)
  images = jnp.zeros((batch_size, res, res, 3), jnp.float32)
  labels = jax.nn.one_hot(jnp.arange(batch_size) % 1000, 1000)
  params = jax.jit(model.init, static_argnames="train")(
      jax.random.key(0), images[:1], train=False)["params"]
  cfg = {"optax_name": "adamw", "lr": 1e-3, "wd": 1e-4,
         "schedule": {"decay_type": "cosine", "warmup_steps": 10}}
  tx, scheds = optim.make_optimizer(cfg, params, total_steps=1000,
                                    batch_size=batch_size)
  state = {"params": params, "opt": tx.init(params),
           "step": jnp.zeros([], jnp.int32)}
  state_sh = sharding.infer_shardings(state, [(".*", "replicate")], mesh)
  batch_sh = sharding.batch_sharding(mesh)
  state = jax.device_put(state, state_sh)
  batch = jax.device_put({"image": images, "labels": labels}, batch_sh)
  step = step_lib.make_train_step(model, LOSSES.get("softmax_xent"), tx,
                                  scheds[0][1], model_inputs=("image",), seed=0)
  lowered = jax.jit(step, in_shardings=(state_sh, batch_sh),
                    out_shardings=(state_sh, sharding.replicated(mesh)),
                    donate_argnums=0).lower(state, batch)
  flops = visibility.step_flops(lowered)
  compiled = lowered.compile()
  state, _ = compiled(state, batch)  # Warm-up.
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  return float(np.median(times)), flops


def main(argv):
  del argv
  mesh = sharding.make_mesh()
  peak = matmul_peak(_MATMUL.value, mesh, _DTYPE.value)
  devices = jax.device_count()
  kind = jax.devices()[0].device_kind
  table = visibility.table_peak_flops(kind, _DTYPE.value)
  print(f"devices: {devices} x {kind}; matmul peak "
        f"({_MATMUL.value}^3 {_DTYPE.value}): {peak / 1e9:.1f} GFLOP/s"
        + (f" (datasheet: {table * devices / 1e9:.1f})" if table else ""))
  print(f"{_RES.value}px, dtype_mm {_DTYPE.value}")
  print("| model | batch | step ms | examples/s | examples/s/device | "
        "GFLOP/step | GFLOP/s | utilisation |")
  print("|---|---|---|---|---|---|---|---|")
  for spec in _MODELS.value:
    name, _, variant = spec.partition(":")
    for batch_size in (int(b) for b in _BATCH.value):
      sec, flops = step_benchmark(name, variant or None, _RES.value,
                                  batch_size, _STEPS.value, _DTYPE.value)
      util = visibility.mfu(flops, sec, devices, peak / devices)
      print(f"| {spec} | {batch_size} | {sec * 1e3:.0f} | "
            f"{batch_size / sec:.2f} | "
            f"{batch_size / sec / devices:.2f} | {flops / 1e9:.1f} | "
            f"{flops / sec / 1e9:.1f} | {100 * util:.1f}% |",
            flush=True)


if __name__ == "__main__":
  app.run(main)
