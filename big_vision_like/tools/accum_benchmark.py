r"""Per-device memory of the train step against `grad_accum_steps`.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 \
    python -m big_vision_like.tools.accum_benchmark --batch_size 256 \
        --grad_accum 1,2,4,8

Compiles (without running, unless `--steps` > 0) the trainer's train step of
a SigLIP B/16-shaped two-tower model (ViT-B/16 image tower at 224px, a B
text tower over 64 tokens of a 32k vocabulary, 768-d embeddings, sigmoid
loss on the chunked ring, AdamW) at a fixed global batch for each K and
prints XLA's memory analysis per device: arguments (params, optimizer state,
batch), temporaries (activations, gradients and the step's scratch) and the
temporaries' ratio to K=1's. Activations scale with the micro-batch, B/K per
step; gradients and the optimizer's scratch do not, so the temporaries tend
to a floor as K grows; a least-squares fit of `floor + activations / K`
over the rows shows how close the rest comes to 1/K. Each row also gives
the FLOPs of a step (XLA's count of the K=1 step, `visibility.step_flops`).
`--steps N` also runs N steps on real arrays and prints examples/s and
GFLOP/s (on an accelerator: how large a batch fits with K, and how fast).
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

_BATCH = flags.DEFINE_integer("batch_size", 256, "Global batch size.")
_ACCUM = flags.DEFINE_list("grad_accum", ["1", "2", "4", "8"],
                           "grad_accum_steps values to compile.")
_IMAGE = flags.DEFINE_string("image_variant", "B/16", "ViT variant.")
_TEXT = flags.DEFINE_string("text_variant", "B", "Text tower variant.")
_RES = flags.DEFINE_integer("res", 224, "Image resolution.")
_LEN = flags.DEFINE_integer("text_len", 64, "Tokens per text.")
_LOSS = flags.DEFINE_string("implementation", "chunked",
                            "sigmoid_loss implementation.")
_DTYPE = flags.DEFINE_string("dtype_mm", "float32", "Matmul dtype.")
_STEPS = flags.DEFINE_integer("steps", 0, "Steps to time (0: compile only).")


def _model():
  return step_lib.build_model("two_towers", dict(
      image=dict(variant=_IMAGE.value, pool_type="map",
                 dtype_mm=_DTYPE.value),
      text=dict(variant=_TEXT.value, vocab_size=32_000,
                dtype_mm=_DTYPE.value),
      out_dim=(768, 768), temperature_init=10.0, bias_init=-10.0))


def _init_params(model):
  return model.init(jax.random.key(0),
                    jnp.zeros((1, _RES.value, _RES.value, 3)),
                    jnp.zeros((1, _LEN.value), jnp.int32))["params"]


def lower_step(k, mesh):
  """The lowered train step with `grad_accum_steps=k` and its state shape."""
  model, b = _model(), _BATCH.value
  batch = {"image": jax.ShapeDtypeStruct((b, _RES.value, _RES.value, 3),
                                         jnp.float32),
           "text": jax.ShapeDtypeStruct((b, _LEN.value), jnp.int32)}
  params = jax.eval_shape(lambda: _init_params(model))
  cfg = {"optax_name": "adamw", "lr": 1e-3, "wd": 1e-4,
         "schedule": {"decay_type": "cosine", "warmup_steps": 10}}
  tx, scheds = optim.make_optimizer(cfg, params, total_steps=1000,
                                    batch_size=b)
  state = jax.eval_shape(lambda p: {"params": p, "opt": tx.init(p),
                                    "step": jnp.zeros([], jnp.int32)}, params)
  state_sh = sharding.infer_shardings(state, [(".*", "replicate")], mesh)
  batch_sh = sharding.batch_sharding(mesh)
  loss = step_lib.build_loss("sigmoid_loss",
                             {"implementation": _LOSS.value}, mesh)
  step = step_lib.make_train_step(
      model, loss, tx, scheds[0][1], model_inputs=("image", "text"), seed=0,
      grad_accum_steps=k, batch_sharding=batch_sh)
  jitted = jax.jit(step, in_shardings=(state_sh, batch_sh),
                   out_shardings=(state_sh, sharding.replicated(mesh)),
                   donate_argnums=0)
  batch_shs = jax.tree.map(lambda _: batch_sh, batch)
  lowered = jitted.lower(sharding.with_shardings(state, state_sh),
                         sharding.with_shardings(batch, batch_shs))
  return lowered, (state_sh, batch, batch_sh, tx)


def step_flops(mesh):
  """FLOPs of a step over the global batch: XLA's count of K=1's step (a
  K > 1 step loops over its micro-batches; XLA counts a loop body once)."""
  return visibility.step_flops(lower_step(1, mesh)[0])


def _time(compiled, shapes, steps):
  state_sh, batch, batch_sh, tx = shapes
  model = _model()
  real = jax.jit(lambda: _init_params(model))()
  state = jax.device_put({"params": real, "opt": tx.init(real),
                          "step": jnp.zeros([], jnp.int32)}, state_sh)
  data = jax.device_put(
      {k: np.zeros(v.shape, v.dtype) for k, v in batch.items()}, batch_sh)
  state, _ = compiled(state, data)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, data)
  jax.block_until_ready(metrics)
  return steps * _BATCH.value / (time.perf_counter() - t0)


def main(argv):
  del argv
  mesh = sharding.make_mesh()
  n = jax.device_count()
  print(f"{n} x {jax.devices()[0].device_kind}; two_towers image "
        f"{_IMAGE.value} @{_RES.value}px, text {_TEXT.value} x {_LEN.value} "
        f"tokens; sigmoid_loss {_LOSS.value}; global batch {_BATCH.value} "
        f"({_BATCH.value // n} per device); dtype_mm {_DTYPE.value}")
  print("| grad_accum_steps | micro-batch / device | arguments MiB | "
        "temporaries MiB | temporaries / K=1 | compile s | GFLOP/step |"
        + (" examples/s | GFLOP/s |" if _STEPS.value else ""))
  print("|---|---|---|---|---|---|---|" + ("---|---|" if _STEPS.value else ""))
  base, rows = None, []
  flops = step_flops(mesh)
  for k in (int(x) for x in _ACCUM.value):
    t0 = time.perf_counter()
    lowered, shapes = lower_step(k, mesh)
    compiled = lowered.compile()
    sec = time.perf_counter() - t0
    mem = visibility.step_memory(compiled)
    temp = mem["memory/step_temp_bytes"] / 2**20
    args = mem["memory/step_argument_bytes"] / 2**20
    base = base or temp
    rows.append((k, temp))
    gflop = "n/a" if flops is None else f"{flops / 1e9:.1f}"
    row = (f"| {k} | {_BATCH.value // n // k} | {args:.0f} | {temp:.0f} | "
           f"{temp / base:.3f} | {sec:.0f} | {gflop} |")
    if _STEPS.value:
      rate = _time(compiled, shapes, _STEPS.value)
      per_sec = ("n/a" if flops is None else
                 f"{flops * rate / _BATCH.value / 1e9:.1f}")
      row += f" {rate:.1f} | {per_sec} |"
    print(row, flush=True)
  if len(rows) > 2:
    print(_fit(rows))


def _fit(rows):
  """Least-squares `temporaries = floor + activations / K` over the rows."""
  ks, temps = np.array([r[0] for r in rows], float), np.array(
      [r[1] for r in rows])
  (floor, act), *_ = np.linalg.lstsq(np.stack([np.ones_like(ks), 1 / ks], 1),
                                     temps, rcond=None)
  share = ", ".join(f"K={k:.0f}: {(t - floor) / act:.3f}"
                    for k, t in zip(ks, temps))
  return (f"Fit: temporaries = {floor:.0f} MiB + {act:.0f} MiB / K. "
          f"(temporaries - {floor:.0f}) / {act:.0f} (ideal 1/K): {share}")


if __name__ == "__main__":
  app.run(main)
