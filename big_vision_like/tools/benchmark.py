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

`--compare timm` (needs the `torch` extra) also times timm's model of the
same size (`TIMM_NAMES`) with the same batch, resolution, matmul precision
(torch.autocast for bfloat16) and optimizer (AdamW, lr 1e-3, wd 1e-4), in a
subprocess (`tools/torch_step.py`) whose steps alternate with the JAX
steps, so both see the same load; its utilisation uses the same FLOP count
and peak. `--attention_impl` picks the ViT attention kernel
(`models/attention.py`).
"""

import subprocess
import sys
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
_COMPARE = flags.DEFINE_enum("compare", None, ["timm"],
                             "Also time timm's model of the same size.")
_ATTENTION = flags.DEFINE_string("attention_impl", None,
                                 "ViT attention kernel (models/attention.py).")

# Our model spec -> timm's model of the same architecture and size.
TIMM_NAMES = {
    "vit:Ti/16": "vit_tiny_patch16_224",
    "vit:S/16": "vit_small_patch16_224",
    "vit:B/16": "vit_base_patch16_224",
    "vit:B/32": "vit_base_patch32_224",
    "vit:L/16": "vit_large_patch16_224",
    "nfnet:F0": "dm_nfnet_f0",
    "nfnet:F1": "dm_nfnet_f1",
    "mlp_mixer:B/16": "mixer_b16_224",
    "mlp_mixer:L/16": "mixer_l16_224",
    "convnext:T": "convnext_tiny",
    "convnext:S": "convnext_small",
    "convnext:B": "convnext_base",
    "bit_paper:R50x1": "resnetv2_50x1_bit",
    "bit_paper:R101x1": "resnetv2_101x1_bit",
}


def build_step(model_name, variant, res, batch_size, dtype_mm, mesh=None,
               **model_kw):
  """Returns (`run()`: seconds of one more train step, FLOPs per step).

  FLOPs are XLA's count of the whole unpartitioned global step
  (`visibility.step_flops` of the Lowered): the same on every platform,
  where a GPU executable's own count misses the matmuls given to cuBLAS.
  The first (compiling) step has run when this returns.
  """
  mesh = mesh or sharding.make_mesh()
  model = MODELS.get(model_name)(num_classes=1000, variant=variant,
                                 dtype_mm=dtype_mm, **model_kw)
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
  box = list(compiled(state, batch))  # Warm-up.

  def run():
    t0 = time.perf_counter()
    box[:] = compiled(box[0], batch)
    jax.block_until_ready(box[1])
    return time.perf_counter() - t0

  return run, flops


def step_benchmark(model_name, variant, res, batch_size, steps, dtype_mm,
                   mesh=None, **model_kw):
  """Returns (median seconds per step, FLOPs per step); see `build_step`."""
  run, flops = build_step(model_name, variant, res, batch_size, dtype_mm,
                          mesh, **model_kw)
  return float(np.median([run() for _ in range(steps)])), flops


class TorchStep:
  """timm's train step in a subprocess (`tools/torch_step.py`), on request."""

  def __init__(self, spec, batch_size, res, dtype_mm):
    if spec not in TIMM_NAMES:
      raise ValueError(f"--compare timm: no timm model known for {spec!r}; "
                       f"known: {sorted(TIMM_NAMES)}.")
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "big_vision_like.tools.torch_step",
         "--model", TIMM_NAMES[spec], "--batch_size", str(batch_size),
         "--res", str(res), "--dtype_mm", dtype_mm],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if self.proc.stdout.readline().strip() != "ready":
      self.proc.kill()
      raise RuntimeError(f"timm's {TIMM_NAMES[spec]} step did not start "
                         "(its error is above).")

  def run(self):
    self.proc.stdin.write("step\n")
    self.proc.stdin.flush()
    return float(self.proc.stdout.readline())

  def close(self):
    self.proc.stdin.close()
    self.proc.wait()


def _row(name, batch_size, sec, flops, devices, peak):
  util = visibility.mfu(flops, sec, devices, peak / devices)
  return (f"| {name} | {batch_size} | {sec * 1e3:.0f} | "
          f"{batch_size / sec:.2f} | {batch_size / sec / devices:.2f} | "
          f"{flops / 1e9:.1f} | {flops / sec / 1e9:.1f} | {100 * util:.1f}% |")


def compare(spec, batch_size, steps, res, dtype_mm, devices, peak,
            model_kw):
  """Rows for our step and timm's, timed alternately `steps` times each."""
  name, _, variant = spec.partition(":")
  ours, flops = build_step(name, variant or None, res, batch_size, dtype_mm,
                           **model_kw)
  theirs = TorchStep(spec, batch_size, res, dtype_mm)
  times = {"ours": [], "timm": []}
  try:
    for _ in range(steps):
      times["ours"].append(ours())
      times["timm"].append(theirs.run())
  finally:
    theirs.close()
  sec = {k: float(np.median(v)) for k, v in times.items()}
  return [_row(spec, batch_size, sec["ours"], flops, devices, peak),
          _row(f"timm {TIMM_NAMES[spec]}", batch_size, sec["timm"], flops,
               devices, peak),
          f"| ratio (ours / timm examples/s) | | | "
          f"{sec['timm'] / sec['ours']:.2f}x | | | | |"]


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
  model_kw = ({"attention_impl": _ATTENTION.value}
              if _ATTENTION.value else {})
  for spec in _MODELS.value:
    name, _, variant = spec.partition(":")
    kw = model_kw if name == "vit" else {}
    for batch_size in (int(b) for b in _BATCH.value):
      if _COMPARE.value:
        rows = compare(spec, batch_size, _STEPS.value, _RES.value,
                       _DTYPE.value, devices, peak, kw)
      else:
        sec, flops = step_benchmark(name, variant or None, _RES.value,
                                    batch_size, _STEPS.value, _DTYPE.value,
                                    **kw)
        rows = [_row(spec, batch_size, sec, flops, devices, peak)]
      print("\n".join(rows), flush=True)


if __name__ == "__main__":
  app.run(main)
