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
GFLOP/s.

`--batch_size max` finds, for each K, the largest global batch whose step
fits 90% of a device's memory (`visibility.fit_batch` over compiled steps;
micro-batches of multiples of 8 per device; `--memory_limit_gib` where the
device reports no limit, e.g. a CPU): on an accelerator, how large a batch
fits with K, and (with `--steps`) how fast it runs.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_like import optim
from big_vision_like import sharding
from big_vision_like import step as step_lib
from big_vision_like import visibility

# The model's shape: image_variant, text_variant, res, text_len, dtype_mm.
DEFAULT_SHAPE = dict(image_variant="B/16", text_variant="B", res=224,
                     text_len=64, dtype_mm="float32")

FIT_FRACTION = visibility.FIT_FRACTION  # `--batch_size max`'s share.


def _model(image_variant, text_variant, dtype_mm, **_):
  return step_lib.build_model("two_towers", dict(
      image=dict(variant=image_variant, pool_type="map", dtype_mm=dtype_mm),
      text=dict(variant=text_variant, vocab_size=32_000, dtype_mm=dtype_mm),
      out_dim=(768, 768), temperature_init=10.0, bias_init=-10.0))


def _init_params(model, res, text_len, **_):
  return model.init(jax.random.key(0), jnp.zeros((1, res, res, 3)),
                    jnp.zeros((1, text_len), jnp.int32))["params"]


def lower_step(k, mesh, batch_size, implementation="chunked", **shape):
  """The train step with `grad_accum_steps=k` at a global batch, lowered
  from shapes alone; returns (Lowered, (state shardings, batch shapes,
  batch sharding, optimizer)). `shape`: `DEFAULT_SHAPE`'s keys."""
  shape = {**DEFAULT_SHAPE, **shape}
  model, b, res = _model(**shape), batch_size, shape["res"]
  batch = {"image": jax.ShapeDtypeStruct((b, res, res, 3), jnp.float32),
           "text": jax.ShapeDtypeStruct((b, shape["text_len"]), jnp.int32)}
  params = jax.eval_shape(lambda: _init_params(model, **shape))
  cfg = {"optax_name": "adamw", "lr": 1e-3, "wd": 1e-4,
         "schedule": {"decay_type": "cosine", "warmup_steps": 10}}
  tx, scheds = optim.make_optimizer(cfg, params, total_steps=1000,
                                    batch_size=b)
  state = jax.eval_shape(lambda p: {"params": p, "opt": tx.init(p),
                                    "step": jnp.zeros([], jnp.int32)}, params)
  state_sh = sharding.infer_shardings(state, [(".*", "replicate")], mesh)
  batch_sh = sharding.batch_sharding(mesh)
  loss = step_lib.build_loss("sigmoid_loss",
                             {"implementation": implementation}, mesh)
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


def step_flops(mesh, batch_size, **kw):
  """FLOPs of a step over the global batch: XLA's count of K=1's step (a
  K > 1 step loops over its micro-batches; XLA counts a loop body once)."""
  return visibility.step_flops(lower_step(1, mesh, batch_size, **kw)[0])


def compile_row(k, mesh, batch_size, limit=None, **kw):
  """Compiles the step with `grad_accum_steps=k` at `batch_size`, or, with
  `batch_size="max"`, at the largest global batch whose step holds at most
  `FIT_FRACTION` of `limit` bytes per device (multiples of 8 examples per
  device per micro-batch; the search compiles for memory alone,
  `visibility.compile_for_memory`).

  Returns:
    (global batch, compiled step, its shapes (see `lower_step`), seconds
    of its lowering and compile).
  """
  if batch_size == "max":
    batch_size, _ = visibility.fit_batch(
        lambda b: visibility.held_bytes(visibility.compile_for_memory(
            lower_step(k, mesh, b, **kw)[0])),
        8 * mesh.size * k, FIT_FRACTION * limit,
        what=f"grad_accum_steps={k}", devices=mesh.size)
  t0 = time.perf_counter()
  lowered, shapes = lower_step(k, mesh, batch_size, **kw)
  compiled = lowered.compile()
  return batch_size, compiled, shapes, time.perf_counter() - t0


def _time(compiled, shapes, steps, batch_size, **shape):
  state_sh, batch, batch_sh, tx = shapes
  shape = {**DEFAULT_SHAPE, **shape}
  model = _model(**shape)
  real = jax.jit(lambda: _init_params(model, **shape))()
  state = jax.device_put({"params": real, "opt": tx.init(real),
                          "step": jnp.zeros([], jnp.int32)}, state_sh)
  del real
  data = jax.device_put(
      {k: np.zeros(v.shape, v.dtype) for k, v in batch.items()}, batch_sh)
  state, _ = compiled(state, data)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, data)
  jax.block_until_ready(metrics)
  return steps * batch_size / (time.perf_counter() - t0)


def parse_args(argv=None):
  """The command-line options (argparse: no global absl flags to clash)."""
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batch_size", default="256", help="Global batch size, or "
                 "`max`: for each K the largest that fits the device memory.")
  p.add_argument("--memory_limit_gib", type=float, default=None,
                 help="Device memory for --batch_size max (default: what the "
                 "device reports; a CPU reports none).")
  p.add_argument("--grad_accum", default="1,2,4,8",
                 help="grad_accum_steps values to compile, comma-separated.")
  for key, value in DEFAULT_SHAPE.items():
    p.add_argument(f"--{key}", type=type(value), default=value)
  p.add_argument("--implementation", default="chunked",
                 help="sigmoid_loss implementation.")
  p.add_argument("--steps", type=int, default=0,
                 help="Steps to time (0: compile only).")
  args = p.parse_args(argv)
  if args.batch_size != "max" and not (args.batch_size.isdigit()
                                       and int(args.batch_size) > 0):
    p.error(f"--batch_size {args.batch_size}: expected a positive integer "
            "or `max`.")
  if not all(k.isdigit() and int(k) > 0 for k in args.grad_accum.split(",")):
    p.error(f"--grad_accum {args.grad_accum}: expected positive integers, "
            "comma-separated.")
  args.limit = visibility.memory_limit(args.memory_limit_gib)
  if args.batch_size == "max" and not args.limit:
    p.error("--batch_size max: this device reports no memory limit (a CPU); "
            "pass --memory_limit_gib.")
  return args


def main(argv=None):
  args = parse_args(argv)
  fixed = args.batch_size != "max"
  mesh = sharding.make_mesh()
  n = jax.device_count()
  kw = {k: getattr(args, k) for k in (*DEFAULT_SHAPE, "implementation")}
  print(f"{n} x {jax.devices()[0].device_kind}; two_towers image "
        f"{args.image_variant} @{args.res}px, text {args.text_variant} x "
        f"{args.text_len} tokens; sigmoid_loss {args.implementation}; "
        f"dtype_mm {args.dtype_mm}; "
        + (f"global batch {args.batch_size}" if fixed else
           f"largest batch within {FIT_FRACTION:.0%} of "
           f"{args.limit / 2**30:.1f} GiB per device"))
  print("| grad_accum_steps | global batch | micro-batch / device | "
        "arguments MiB | temporaries MiB | "
        + ("temporaries / K=1" if fixed else "held GiB | batch / K=1")
        + " | compile s | GFLOP/step |"
        + (" examples/s | GFLOP/s |" if args.steps else ""))
  print("|---" * (8 + (not fixed) + 2 * bool(args.steps)) + "|")
  base, rows = None, []
  flops = step_flops(mesh, int(args.batch_size), **kw) if fixed else None
  for k in (int(x) for x in args.grad_accum.split(",")):
    batch, compiled, shapes, sec = compile_row(
        k, mesh, int(args.batch_size) if fixed else "max", args.limit, **kw)
    mem = visibility.step_memory(compiled)
    temp = mem["memory/step_temp_bytes"] / 2**20
    arg_mib = mem["memory/step_argument_bytes"] / 2**20
    if fixed:
      base = base or temp
      ratio = f"{temp / base:.3f}"
    else:
      base = base or batch
      ratio = (f"{visibility.held_bytes(compiled) / 2**30:.2f} | "
               f"{batch / base:.2f}")
      flops = step_flops(mesh, batch, **kw)
    rows.append((k, temp))
    gflop = "n/a" if flops is None else f"{flops / 1e9:.1f}"
    row = (f"| {k} | {batch} | {batch // n // k} | {arg_mib:.0f} | "
           f"{temp:.0f} | {ratio} | {sec:.0f} | {gflop} |")
    if args.steps:
      rate = _time(compiled, shapes, args.steps, batch, **kw)
      per_sec = "n/a" if flops is None else f"{flops * rate / batch / 1e9:.1f}"
      row += f" {rate:.1f} | {per_sec} |"
    print(row, flush=True)
  if fixed and len(rows) > 2:
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
  main()
