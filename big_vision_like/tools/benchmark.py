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

`--compare` also times other steps of the same model size, each in turn
with ours (one step each, round after round), so all see the same load;
their utilisation uses our FLOP count and peak:

- `timm` (needs the `torch` extra): timm's model (`TIMM_NAMES`) with the
  same batch, resolution, matmul precision (torch.autocast for bfloat16) and
  optimizer (AdamW, lr 1e-3, wd 1e-4), in a subprocess
  (`tools/torch_step.py`), which also measures torch's own matmul peak
  (the same `--matmul_size` matmul, its kernels and threads): one more row
  gives timm's utilisation against that peak, so a gap between the steps
  can be read as kernels (torch's matmul faster than XLA's here) or the
  rest of the step;
- `big_vision` (ViTs): google-research/big_vision's own ViT
  (`big_vision.models.vit`, from `--big_vision_dir`, a checkout, or an
  installed `big_vision`) in our train step, twice: in this process, and in
  a subprocess (`tools/jax_step.py`) as big_vision runs it: glibc's
  malloc defaults and one CPU device;
- `glibc_malloc`: our step in a subprocess with glibc's malloc defaults
  (`BIG_VISION_LIKE_HOST_MEMORY=default`): what `host_memory` gains;
- `one_device`: our step in a subprocess on one CPU device
  (`--cpu_devices 1`): what splitting the host into devices gains.

`--cpu_devices` ("auto" by default, or N) splits a CPU-only host into
devices as the trainer's `config.cpu_devices` does (`cpu_devices.py`; auto
counts divide every `--batch_size`). The header says how many devices run
and how this process holds host memory (`host_memory.STATE`).
`--attention_impl` picks the ViT attention kernel (`models/attention.py`).
`--batch_size max` measures the largest batch whose step fits 90%
(`FIT_FRACTION`) of the device's memory (XLA's memory analysis of compiled
steps, `largest_batch`; `--memory_limit_gib` where the device reports no
limit). `--profile_dir DIR` traces 3 more steps of each row into
`DIR/<model>_b<batch>/` with the compiled step's HLO; `python -m
big_vision_like.tools.trace_summary DIR/vit_S16_b16 --steps 3` says where
the step's device time goes.
"""

import os
import re
import signal
import subprocess
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from big_vision_like import cpu_devices
from big_vision_like import fs
from big_vision_like import host_memory
from big_vision_like import optim
from big_vision_like import sharding
from big_vision_like import step as step_lib
from big_vision_like import visibility
from big_vision_like.registry import LOSSES
from big_vision_like.registry import MODELS

matmul_peak = visibility.matmul_peak  # Shared with the trainer's MFU.
FIT_FRACTION = visibility.FIT_FRACTION  # `--batch_size max`'s share.
PROFILE_STEPS = 3  # Steps traced with --profile_dir.

_MODELS = flags.DEFINE_list("models", ["vit:S/16"],
                            "Registered model names with their variant.")
_RES = flags.DEFINE_integer("res", 224, "Image resolution.")
_BATCH = flags.DEFINE_list(
    "batch_size", ["8", "16", "32"], "Global batch sizes to measure; `max`: "
    "the largest that fits the device memory (`largest_batch`).")
_MEMORY = flags.DEFINE_float(
    "memory_limit_gib", None, "Device memory for --batch_size max (default: "
    "what the device reports; a CPU reports none).")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps (after 1 warm-up).")
_DTYPE = flags.DEFINE_string("dtype_mm", "float32", "Matmul dtype.")
_MATMUL = flags.DEFINE_integer("matmul_size", 2048, "Peak-matmul size.")
COMPARISONS = ("timm", "big_vision", "glibc_malloc", "one_device")
_COMPARE = flags.DEFINE_list(
    "compare", [], f"Also time, alternating with ours: any of {COMPARISONS}.")
_BIG_VISION = flags.DEFINE_string(
    "big_vision_dir", None, "A checkout of google-research/big_vision "
    "(DIR/big_vision/models/vit.py), for --compare big_vision.")
_ATTENTION = flags.DEFINE_string("attention_impl", None,
                                 "ViT attention kernel (models/attention.py).")
_PROFILE = flags.DEFINE_string(
    "profile_dir", None, "Trace 3 more steps of each of our rows (with "
    "--compare, after the timing; the others are not traced) into "
    "DIR/<model>_b<batch>/, with the step's HLO, for tools/trace_summary.py.")
_CPU_DEVICES = flags.DEFINE_string(
    "cpu_devices", "auto", "CPU-only runs: 'auto' or N devices "
    "(cpu_devices.py).")

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


def big_vision_vit(variant, dtype_mm, big_vision_dir=None):
  """google-research/big_vision's own ViT, from a checkout or installed."""
  if big_vision_dir:
    if not os.path.isfile(os.path.join(big_vision_dir, "big_vision", "models",
                                       "vit.py")):
      raise ValueError(f"--big_vision_dir {big_vision_dir}: no "
                       "big_vision/models/vit.py there (a checkout of "
                       "google-research/big_vision is expected).")
    sys.path.insert(0, os.path.abspath(big_vision_dir))
  try:
    from big_vision.models import vit  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ValueError("--compare big_vision needs google-research/big_vision: "
                     f"pass --big_vision_dir (a checkout) ({e}).") from None
  return vit.Model(num_classes=1000, variant=variant, dtype_mm=dtype_mm)


def lower_step(model_name, variant, res, batch_size, dtype_mm, mesh=None,
               model=None, *, shapes_only=False, **model_kw):
  """Returns (the trainer's train step Lowered for these shapes, state,
  batch); see `build_step`. With `shapes_only`, state and batch are
  `jax.ShapeDtypeStruct`s: nothing is computed or put on the devices
  (enough to compile, e.g. for the step's memory)."""
  mesh = mesh or sharding.make_mesh()
  if model is None:
    model = MODELS.get(model_name)(num_classes=1000, variant=variant,
                                   dtype_mm=dtype_mm, **model_kw)

  def batch_and_params():
    images = jnp.zeros((batch_size, res, res, 3), jnp.float32)
    labels = jax.nn.one_hot(jnp.arange(batch_size) % 1000, 1000)
    params = model.init(jax.random.key(0), images[:1], train=False)["params"]
    return {"image": images, "labels": labels}, params
  make = lambda f, *a: (jax.eval_shape(f, *a) if shapes_only
                        else jax.jit(f)(*a))
  batch, params = make(batch_and_params)
  cfg = {"optax_name": "adamw", "lr": 1e-3, "wd": 1e-4,
         "schedule": {"decay_type": "cosine", "warmup_steps": 10}}
  tx, scheds = optim.make_optimizer(cfg, params, total_steps=1000,
                                    batch_size=batch_size)
  state = make(lambda p: {"params": p, "opt": tx.init(p),
                          "step": jnp.zeros([], jnp.int32)}, params)
  state_sh = sharding.infer_shardings(state, [(".*", "replicate")], mesh)
  batch_sh = sharding.batch_sharding(mesh)
  if not shapes_only:
    state = jax.device_put(state, state_sh)
    batch = jax.device_put(batch, batch_sh)
  step = step_lib.make_train_step(model, LOSSES.get("softmax_xent"), tx,
                                  scheds[0][1], model_inputs=("image",), seed=0)
  lowered = jax.jit(step, in_shardings=(state_sh, batch_sh),
                    out_shardings=(state_sh, sharding.replicated(mesh)),
                    donate_argnums=0).lower(state, batch)
  return lowered, state, batch


def build_step(model_name, variant, res, batch_size, dtype_mm, mesh=None,
               model=None, **model_kw):
  """Returns (`run()`: seconds of one more train step, FLOPs per step).

  The model is the registered `model_name` with `variant`, or `model`.
  FLOPs are XLA's count of the whole unpartitioned global step
  (`visibility.step_flops` of the Lowered): the same on every platform,
  where a GPU executable's own count misses the matmuls given to cuBLAS
  (96.6 GFLOP of the 26,890 of ViT-B/16 at batch 256 on an H200); None
  (rows say n/a) where there is no cost analysis.
  The first (compiling) step has run when this returns.
  """
  lowered, state, batch = lower_step(model_name, variant, res, batch_size,
                                     dtype_mm, mesh, model, **model_kw)
  flops = visibility.step_flops(lowered)
  compiled = lowered.compile()
  box = list(compiled(state, batch))  # Warm-up.

  def run():
    t0 = time.perf_counter()
    box[:] = compiled(box[0], batch)
    jax.block_until_ready(box[1])
    return time.perf_counter() - t0

  run.compiled = compiled
  return run, flops


def step_bytes(model_name, variant, res, batch_size, dtype_mm, mesh=None,
               **model_kw):
  """Bytes per device the compiled train step holds (`visibility.held_bytes`).
  """
  lowered, _, _ = lower_step(model_name, variant, res, batch_size, dtype_mm,
                             mesh, shapes_only=True, **model_kw)
  return visibility.held_bytes(visibility.compile_for_memory(lowered))


def largest_batch(model_name, variant, res, dtype_mm, limit, mesh=None, *,
                  fraction=FIT_FRACTION, **model_kw):
  """The largest global batch whose train step fits a device's memory.

  Batches are multiples of 8 per device; a step fits when `step_bytes` is at
  most `fraction` of `limit` (bytes per device; the rest is left to what
  XLA's analysis does not see: cuDNN's workspaces, fragmentation). The
  search is `visibility.fit_batch`'s (usually 3-4 compiles).

  Returns:
    (batch size, its step_bytes).
  """
  mesh = mesh or sharding.make_mesh()
  return visibility.fit_batch(
      lambda b: step_bytes(model_name, variant, res, b, dtype_mm, mesh,
                           **model_kw),
      8 * mesh.size, fraction * limit, what=f"{model_name}:{variant}",
      devices=mesh.size)


def step_benchmark(model_name, variant, res, batch_size, steps, dtype_mm,
                   mesh=None, *, profile_dir=None, **model_kw):
  """Returns (median seconds per step, FLOPs per step); see `build_step`.

  With `profile_dir`, `trace_steps` after the timed steps, for
  `tools/trace_summary.py`.
  """
  run, flops = build_step(model_name, variant, res, batch_size, dtype_mm,
                          mesh, **model_kw)
  sec = float(np.median([run() for _ in range(steps)]))
  if profile_dir:
    trace_steps(run, profile_dir)
  return sec, flops


def trace_steps(run, profile_dir):
  """Runs PROFILE_STEPS more steps of `run` (of `build_step`) under
  `jax.profiler` (the trace in `profile_dir/plugins/profile/`) and writes
  the compiled step's HLO to `profile_dir/step.hlo.txt`."""
  visibility.write_hlo(run.compiled, profile_dir, "step")
  options = jax.profiler.ProfileOptions()
  options.python_tracer_level = 0  # Device ops only (a smaller trace).
  jax.profiler.start_trace(profile_dir, profiler_options=options)
  try:
    for _ in range(PROFILE_STEPS):
      run()
  finally:
    jax.profiler.stop_trace()


class StepServer:
  """A train step in a subprocess that answers each request with its seconds.

  The protocol of `tools/torch_step.py` and `tools/jax_step.py`: the
  process prints `ready` (and what it wants said of its runtime) once its
  step has run, then one line of seconds per `step` line read.
  """

  def __init__(self, argv, name, env=None):
    self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, env=env)
    ready, _, note = self.proc.stdout.readline().strip().partition(" ")
    if ready != "ready":
      self.proc.kill()
      raise RuntimeError(f"{name}'s step did not start (its error is above).")
    self.note = note
    self.name = f"{name} ({note})" if note else name

  def run(self):
    try:
      self.proc.stdin.write("step\n")
      self.proc.stdin.flush()
      line = self.proc.stdout.readline()
    except BrokenPipeError:
      line = ""
    if not line:
      raise RuntimeError(f"{self.name}: its step process {self._ended()}.")
    return float(line)

  def _ended(self):
    """How the process ended, e.g. "was killed (SIGKILL: out of memory?)"."""
    try:
      code = self.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      return "stopped answering"
    if code < 0:
      sig = signal.Signals(-code).name
      hint = ": out of memory?" if sig == "SIGKILL" else ""
      return f"was killed ({sig}{hint})"
    return f"exited with status {code} (its error is above)"

  def close(self):
    try:
      self.proc.stdin.close()
    except BrokenPipeError:
      pass
    self.proc.wait()


def timm_step(spec, batch_size, res, dtype_mm, matmul_size=0, *,
              host_memory_mode="default"):
  """timm's model of the size of `spec` (`TIMM_NAMES`), in a subprocess;
  with `matmul_size`, its `note` says torch's matmul peak at that size.
  Host memory as `host_memory_mode`: by default glibc's malloc defaults, as
  a timm user runs (the server is imported through big_vision_like, whose
  import would set host_memory's options)."""
  if spec not in TIMM_NAMES:
    raise ValueError(f"--compare timm: no timm model known for {spec!r}; "
                     f"known: {sorted(TIMM_NAMES)}.")
  return StepServer(
      [sys.executable, "-m", "big_vision_like.tools.torch_step",
       "--model", TIMM_NAMES[spec], "--batch_size", str(batch_size),
       "--res", str(res), "--dtype_mm", dtype_mm,
       "--matmul_size", str(matmul_size)], f"timm {TIMM_NAMES[spec]}",
      env={**os.environ, host_memory.ENV: host_memory_mode})


def jax_step(spec, batch_size, res, dtype_mm, name, *, big_vision_dir=None,
             host_memory_mode="default", model_kw=None, devices=1):
  """Our step of `spec` ("big_vision:vit:S/16": big_vision's ViT) in a
  subprocess (`tools/jax_step.py`), host memory as `host_memory_mode`, on
  `devices` ("auto" or N) CPU devices on a CPU-only host."""
  argv = [sys.executable, "-m", "big_vision_like.tools.jax_step",
          "--model", spec, "--batch_size", str(batch_size), "--res", str(res),
          "--dtype_mm", dtype_mm, "--cpu_devices", str(devices)]
  if big_vision_dir:
    argv += ["--big_vision_dir", big_vision_dir]
  for k, v in (model_kw or {}).items():
    argv += [f"--{k}", str(v)]
  env = {**os.environ, host_memory.ENV: host_memory_mode}
  # The count asked for here, not one this process's XLA_FLAGS forced.
  env["XLA_FLAGS"] = cpu_devices.without_count_flag(env.get("XLA_FLAGS"))
  return StepServer(argv, name, env=env)


def times_in_turn(runners, steps):
  """{name: [seconds of each round]} of `runners` ([(name, run)]) timed one
  step each, round after round, `steps` rounds: all see the same load."""
  times = {n: [] for n, _ in runners}
  for _ in range(steps):
    for n, run in runners:
      times[n].append(run())
  return times


def time_in_turn(runners, steps):
  """{name: median seconds} of `times_in_turn`."""
  return {n: float(np.median(v))
          for n, v in times_in_turn(runners, steps).items()}


def _row(name, batch_size, sec, flops, devices, peak):
  head = (f"| {name} | {batch_size} | {sec * 1e3:.0f} | "
          f"{batch_size / sec:.2f} | {batch_size / sec / devices:.2f} | ")
  if flops is None:  # No cost analysis on this backend.
    return head + "n/a | n/a | n/a |"
  util = visibility.mfu(flops, sec, devices, peak / devices)
  return head + (f"{flops / 1e9:.1f} | {flops / sec / 1e9:.1f} | "
                 f"{100 * util:.1f}% |")


def _own_peak(note):
  """FLOP/s of `matmul peak 412.3 GFLOP/s` in a server's note, or None."""
  m = re.search(r"matmul peak ([\d.]+) GFLOP/s", note)
  return float(m.group(1)) * 1e9 if m else None


def compare(spec, batch_size, steps, res, dtype_mm, devices, peak,
            model_kw, against=("timm",), big_vision_dir=None, matmul_size=0,
            profile_dir=None):
  """Rows for our step and each of `against` (see the module doc), timed in
  turn `steps` times each, then a ratio row per comparison. With
  `matmul_size`, timm's process also measures torch's own matmul peak, and
  a row gives timm's utilisation against it: how much of the gap between
  the steps is the frameworks' matmul kernels. With `profile_dir`, our step
  (not the others) is traced after the timing (`trace_steps`)."""
  name, _, variant = spec.partition(":")
  ours, flops = build_step(name, variant or None, res, batch_size, dtype_mm,
                           **model_kw)
  runners, servers, row_devices = [(spec, ours)], [], {spec: devices}
  try:
    for other in against:
      if other == "timm":
        servers.append(timm_step(spec, batch_size, res, dtype_mm,
                                 matmul_size))
      elif other == "big_vision":
        if name != "vit":
          raise ValueError(f"--compare big_vision: ViTs only, not {spec!r}.")
        theirs, _ = build_step(name, variant, res, batch_size, dtype_mm,
                               model=big_vision_vit(variant, dtype_mm,
                                                    big_vision_dir))
        runners.append(("big_vision ViT (this process)", theirs))
        row_devices[runners[-1][0]] = devices
        servers.append(jax_step(f"big_vision:{spec}", batch_size, res,
                                dtype_mm, "big_vision ViT",
                                big_vision_dir=big_vision_dir, devices=1))
      elif other == "glibc_malloc":
        servers.append(jax_step(spec, batch_size, res, dtype_mm, spec,
                                model_kw=model_kw, devices=devices))
      elif other == "one_device":
        servers.append(jax_step(spec, batch_size, res, dtype_mm, spec,
                                model_kw=model_kw, devices=1,
                                host_memory_mode=host_memory.KEPT or "default"))
      else:
        raise ValueError(f"--compare {other!r}: expected any of "
                         f"{COMPARISONS}.")
    runners += [(s.name, s.run) for s in servers]
    sec = time_in_turn(runners, steps)
    if profile_dir:
      trace_steps(ours, profile_dir)
  finally:
    for s in servers:
      s.close()
  rows = [_row(n, batch_size, sec[n], flops, row_devices.get(n, 1), peak)
          for n in sec]
  # Rows below timm's own name it without its peak (its own row shows that).
  short = {s.name: s.name.split(" (matmul peak")[0] for s in servers}
  for s in servers:
    own = _own_peak(s.note)
    if own and flops:
      util = visibility.mfu(flops, sec[s.name], 1, own)
      rows.append(f"| {short[s.name]}, against torch's own matmul peak "
                  f"| | | | | | | {100 * util:.1f}% |")
  return rows + [f"| ratio (ours / {short.get(n, n)} examples/s) | | | "
                 f"{sec[n] / sec[spec]:.2f}x | | | | |" for n in list(sec)[1:]]


def main(argv):
  del argv
  unknown = sorted(set(_COMPARE.value) - set(COMPARISONS))
  if unknown:
    raise app.UsageError(f"--compare {','.join(unknown)}: expected any of "
                         f"{COMPARISONS}.")
  bad = [b for b in _BATCH.value
         if b != "max" and not (b.isdigit() and int(b) > 0)]
  if bad:
    raise app.UsageError(f"--batch_size {','.join(bad)}: expected positive "
                         "integers or `max`.")
  try:
    cpu_devices.configure(cpu_devices.parse(_CPU_DEVICES.value),
                          batch_sizes=[int(b) for b in _BATCH.value
                                       if b != "max"])
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  mesh = sharding.make_mesh()
  peak = matmul_peak(_MATMUL.value, mesh, _DTYPE.value)
  devices = jax.device_count()
  kind = jax.devices()[0].device_kind
  table = visibility.table_peak_flops(kind, _DTYPE.value)
  print(f"devices: {devices} x {kind}"
        + (f" (cpu_devices: {cpu_devices.STATE})" if kind == "cpu" else "")
        + "; matmul peak "
        f"({_MATMUL.value}^3 {_DTYPE.value}): {peak / 1e9:.1f} GFLOP/s"
        + (f" (datasheet: {table * devices / 1e9:.1f})" if table else ""))
  print(f"{_RES.value}px, dtype_mm {_DTYPE.value}; host memory: "
        f"{host_memory.STATE}")
  print("| model | batch | step ms | examples/s | examples/s/device | "
        "GFLOP/step | GFLOP/s | utilisation |")
  print("|---|---|---|---|---|---|---|---|")
  model_kw = ({"attention_impl": _ATTENTION.value}
              if _ATTENTION.value else {})
  for spec in _MODELS.value:
    name, _, variant = spec.partition(":")
    kw = model_kw if name == "vit" else {}
    for batch_size in _BATCH.value:
      batch_size = (_largest_batch(name, variant or None, kw)
                    if batch_size == "max" else int(batch_size))
      prof = _PROFILE.value and fs.join(
          _PROFILE.value, re.sub(r"\W", "", f"{name}_{variant}") +
          f"_b{batch_size}")
      if _COMPARE.value:
        rows = compare(spec, batch_size, _STEPS.value, _RES.value,
                       _DTYPE.value, devices, peak, kw, _COMPARE.value,
                       _BIG_VISION.value, _MATMUL.value, profile_dir=prof)
      else:
        sec, flops = step_benchmark(name, variant or None, _RES.value,
                                    batch_size, _STEPS.value, _DTYPE.value,
                                    profile_dir=prof, **kw)
        rows = [_row(spec, batch_size, sec, flops, devices, peak)]
      print("\n".join(rows), flush=True)


def _largest_batch(name, variant, model_kw):
  """`largest_batch` for the flags, with a line saying what it found."""
  limit = visibility.memory_limit(_MEMORY.value)
  if not limit:
    raise app.UsageError("--batch_size max: this device reports no memory "
                         "limit (a CPU); pass --memory_limit_gib.")
  batch, need = largest_batch(name, variant, _RES.value, _DTYPE.value, limit,
                              **model_kw)
  print(f"| (largest batch that fits {FIT_FRACTION:.0%} of "
        f"{limit / 2**30:.1f} GiB per "
        f"device: {batch}, step {need / 2**30:.2f} GiB per device) "
        "| | | | | | | |", flush=True)
  return batch


if __name__ == "__main__":
  app.run(main)
