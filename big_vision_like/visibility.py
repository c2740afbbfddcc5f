"""What a run shows: parameters, device memory, FLOP utilisation, traces.

Small pieces the trainer calls:

- `param_count`, `param_table`, `write_param_table`: every parameter's
  shape, dtype, count and sharding (also written to `workdir/params.txt`).
- `memory_stats`, `memory_limit`: device memory in use, its peak and its
  limit, where the backend reports them (GPU, TPU; not CPU); `step_memory`:
  XLA's static memory analysis of the compiled step (every backend);
  `held_bytes`, `fit_batch`: what a compiled step holds per device, and the
  largest batch that fits.
- `step_flops`, `peak_flops_per_device`, `mfu`, `utilisation`: model FLOP
  utilisation = the step's FLOPs (XLA cost analysis) / step time / the
  devices' peak (`PEAK_FLOPS`, a measured matmul, or a given number).
- `Profiler`: a `jax.profiler` trace of a window of steps in
  `workdir/profile/`, for TensorBoard (profile plugin) and Perfetto;
  `write_hlo`: the compiled step's HLO beside a trace, for
  `tools/trace_summary.py`.
"""

import contextlib
import logging
import math
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_like import config as config_lib
from big_vision_like import fs
from big_vision_like import sharding
from big_vision_like.models import common
from big_vision_like.tree_util import tree_names

PARAMS_FILE = "params.txt"
PROFILE_DIR = "profile"

# ---------------------------------------------------------------- parameters


def param_count(params):
  """Number of scalars in a tree of arrays (or ShapeDtypeStructs)."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(params))


def _sharding_str(s, shape):
  """"replicated", or the PartitionSpec and the per-device shard shape."""
  if s is None:
    return ""
  spec = getattr(s, "spec", None)
  if spec is not None and all(a is None for a in spec):
    return "replicated"
  shard = list(s.shard_shape(tuple(shape)))
  if spec is None:
    return f"{s} shard {shard}"
  axes = [a if a is None or isinstance(a, str) else "+".join(a)
          for a in tuple(spec) + (None,) * (len(shape) - len(spec))]
  return f"({', '.join(str(a) for a in axes)}) shard {shard}"


def _columns(rows):
  """Text columns, the 4th (counts) right-aligned."""
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  return ["  ".join(c.rjust(w) if i == 3 else c.ljust(w)
                    for i, (c, w) in enumerate(zip(row, widths))).rstrip()
          for row in rows]


def format_bytes(n):
  """E.g. 1536 -> "1.5 KiB"."""
  for unit in ("B", "KiB", "MiB", "GiB"):
    if abs(n) < 1024 or unit == "GiB":
      return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
    n /= 1024


def param_table(params, shardings=None):
  """A text table of every parameter, per top-level module, and the total.

  Args:
    params: a tree of arrays or ShapeDtypeStructs (names joined by "/").
    shardings: a matching tree of shardings; by default each leaf's own
      `.sharding` where it has one.

  Returns:
    Columns name, shape, dtype, count, sharding (the PartitionSpec with the
    per-device shard shape, or "replicated"), then the count of each
    top-level module and the total count and size.
  """
  names, leaves = tree_names(params), jax.tree.leaves(params)
  if shardings is None:
    shards = [getattr(x, "sharding", None) for x in leaves]
  else:
    shards = jax.tree.leaves(shardings, is_leaf=lambda s: s is None)
  rows = [("name", "shape", "dtype", "count", "sharding")]
  modules = {}
  for name, x, s in zip(names, leaves, shards):
    n = math.prod(x.shape)
    module = name.split("/")[0]
    modules[module] = modules.get(module, 0) + n
    rows.append((name, str(list(x.shape)), str(np.dtype(x.dtype)), f"{n:,}",
                 _sharding_str(s, x.shape)))
  total = param_count(params)
  nbytes = sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize
               for x in leaves)
  lines = _columns(rows)
  lines.insert(1, "-" * len(lines[0]))
  lines += ["", "Per module:"]
  lines += [f"  {m}: {n:,} ({100 * n / max(total, 1):.1f}%)"
            for m, n in modules.items()]
  lines.append(f"Total: {total:,} parameters ({format_bytes(nbytes)}) in "
               f"{len(leaves)} arrays.")
  return "\n".join(lines)


def write_param_table(workdir, params, shardings=None):
  """Writes `param_table` to `workdir/params.txt` and returns it.

  Call it on the main process only (the file is the same for every process).
  """
  table = param_table(params, shardings)
  fs.write_atomic(fs.join(workdir, PARAMS_FILE), table + "\n")
  return table


# -------------------------------------------------------------------- memory


def memory_stats(devices=None):
  """Device memory of this process's devices, as flat metrics.

  Args:
    devices: the devices to read (default: `jax.local_devices()`).

  Returns:
    `memory/bytes_in_use_max` and `memory/peak_bytes_in_use_max` (the
    largest over the devices, in bytes) and `memory/bytes_limit_min` (the
    smallest capacity), from `device.memory_stats()`; {} where the backend
    reports nothing (the CPU backend returns None).
  """
  devices = jax.local_devices() if devices is None else devices
  stats = []
  for d in devices:
    try:
      s = d.memory_stats()
    except (NotImplementedError, RuntimeError):
      s = None
    if s:
      stats.append(s)
  out = {}
  for key, reduce in (("bytes_in_use", max), ("peak_bytes_in_use", max),
                      ("bytes_limit", min)):
    values = [s[key] for s in stats if key in s]
    if values:
      suffix = "max" if reduce is max else "min"
      out[f"memory/{key}_{suffix}"] = float(reduce(values))
  return out


def memory_limit(gib=None):
  """Bytes per device a step may hold: `gib` GiB if given, else the
  smallest limit the devices report (None where none is: a CPU)."""
  return gib * 2**30 if gib else memory_stats().get("memory/bytes_limit_min")


def step_memory(compiled):
  """XLA's memory analysis of a compiled step, per device, in bytes.

  Static sizes known at compile time (on every backend, CPU included):
  `memory/step_argument_bytes`, `..._output_bytes`, `..._temp_bytes`,
  `..._alias_bytes` (outputs that reuse donated arguments). {} if the
  backend has no analysis.
  """
  try:
    m = compiled.memory_analysis()
  except (NotImplementedError, RuntimeError, AttributeError):
    return {}
  if m is None:
    return {}
  out = {}
  for key in ("argument", "output", "temp", "alias"):
    value = getattr(m, f"{key}_size_in_bytes", None)
    if value is not None:
      out[f"memory/step_{key}_bytes"] = float(value)
  return out


# The share of a device's memory a step found by a batch search may hold
# (the rest: what XLA's analysis does not see, cuDNN's workspaces,
# fragmentation).
FIT_FRACTION = 0.9


def held_bytes(compiled):
  """Bytes per device a compiled step holds (XLA's memory analysis):
  arguments + temporaries + the outputs that do not reuse donated arguments.
  """
  m = step_memory(compiled)
  if not m:
    raise ValueError("This backend has no memory analysis of a compiled step.")
  return (m["memory/step_argument_bytes"] + m["memory/step_temp_bytes"]
          + m["memory/step_output_bytes"] - m["memory/step_alias_bytes"])


def compile_for_memory(lowered):
  """`lowered.compile()` for its memory analysis alone: on a GPU without
  autotuning its matmuls, which takes most of a compile there and changes
  little but cuBLAS's workspaces (the headroom `fit_batch`'s callers keep
  covers them)."""
  gpu = jax.default_backend() == "gpu"
  return lowered.compile(
      compiler_options={"xla_gpu_autotune_level": 0} if gpu else None)


def fit_batch(need, unit, budget, *, what="the step", devices=1):
  """The largest multiple of `unit` whose `need(batch)` is <= `budget`.

  `need(batch)`: bytes per device of a step at that global batch (e.g.
  `held_bytes` of its compiled step), about affine in the batch. Its
  values at `unit` and 2 `unit` draw a line; each batch the line predicts
  is tried and the line re-drawn through it, until the largest batch that
  fits is next to the smallest known not to (usually 3-4 calls of `need`).

  Returns:
    (batch, need(batch)).
  Raises:
    ValueError: not even `unit` fits (`what` and `devices` name it).
  """
  first = need(unit)
  if first > budget:
    raise ValueError(
        f"{what} at batch {unit} ({unit // devices} per device) needs "
        f"{first / 2**30:.2f} GiB per device, over the "
        f"{budget / 2**30:.2f} GiB budget.")
  fits, too_big = (unit, first), None  # Largest fitting, smallest not.
  b = 2 * unit
  while True:
    m = need(b)
    if b == 2 * unit and m <= first:
      raise ValueError(f"{what}: memory does not grow with the batch "
                       f"({first:.0f} bytes at {unit}, {m:.0f} at {b}).")
    if m <= budget:
      fits = (b, m)
    else:
      too_big = b
    per_example = max(m - first, 1.0) / (b - unit)
    b = unit + int((budget - first) / per_example) // unit * unit
    b = max(b, fits[0] + unit)
    if too_big is not None:
      b = min(b, too_big - unit)
    if b <= fits[0]:
      return fits


# ---------------------------------------------------------- FLOPs and peaks


def step_flops(stage):
  """FLOPs of one call of a jitted function, all devices together.

  Args:
    stage: a `jax.stages.Compiled` (e.g. `jax.jit(f).lower(*a).compile()`):
      XLA's count of the partitioned per-device program times the number of
      devices; or a `jax.stages.Lowered`: XLA's count of the whole
      unpartitioned program (the same on every platform; `shard_map` bodies
      count once, per shard). On GPU a compiled executable's count misses
      the matmuls handed to cuBLAS (jax-ml/jax#22249): pass the Lowered.

  A Lowered for a backend that runs through a PJRT plugin (jax's CUDA and
  ROCm plugins: `Lowered.cost_analysis` returns None there, or raises
  NotImplementedError) is counted by XLA's HLO cost analysis on the CPU
  client, the same count; custom calls (cuDNN's fused attention, say)
  count zero FLOPs there.

  Returns:
    The FLOPs, or None where the backend has no cost analysis.
  """
  try:
    flops = _flops(stage.cost_analysis())
  except (NotImplementedError, RuntimeError):
    flops = None
  if flops is None and isinstance(stage, jax.stages.Lowered):
    flops = _flops(_cpu_cost_analysis(stage))
  if flops is None:
    return None
  if isinstance(stage, jax.stages.Compiled):
    flops *= _num_devices(stage)
  return flops


def _flops(cost):
  """The "flops" of a cost analysis (a dict, or a list of one), or None."""
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or cost.get("flops", -1) < 0:
    return None
  return float(cost["flops"])


_CPU_CLIENT = []  # A CPU client made for the cost analysis, once.


def _cpu_client():
  """jax's CPU client, or (JAX_PLATFORMS without "cpu") a client of its own."""
  try:
    return jax.devices("cpu")[0].client
  except RuntimeError:
    if not _CPU_CLIENT:
      from jax._src.lib import xla_client  # pylint: disable=import-outside-toplevel
      _CPU_CLIENT.append(xla_client.make_cpu_client())
    return _CPU_CLIENT[0]


def _cpu_cost_analysis(lowered):
  """XLA's cost analysis of `lowered`'s HLO on the CPU client, or None."""
  try:
    from jax._src.lib import _jax  # pylint: disable=import-outside-toplevel
    module = lowered.compiler_ir("hlo").as_hlo_module()
    return _jax.hlo_module_cost_analysis(_cpu_client(), module)
  except Exception as e:  # pylint: disable=broad-except  # Internal API moved.
    logging.warning("No FLOP count for this step (XLA's cost analysis on "
                    "the CPU client failed: %s: %s).", type(e).__name__, e)
    return None


def _num_devices(compiled):
  """Devices a compiled SPMD program runs on (one copy of it each)."""
  leaves = jax.tree.leaves(
      (compiled.input_shardings, compiled.output_shardings))
  sets = [s.device_set for s in leaves if hasattr(s, "device_set")]
  return max((len(s) for s in sets), default=1)


# Dense (no sparsity) peak FLOP/s per JAX device, by `device.device_kind`
# (first full match wins). float32 means JAX's default matmul precision for
# float32 inputs: one bfloat16 pass on TPU, TensorFloat-32 on NVIDIA GPUs
# (https://docs.jax.dev/en/latest/201/precision.html), so its peak is the
# bf16 peak on TPU and the TF32 tensor-core peak on GPU. TPU v4 and v5p
# are one device per chip (megacore); v5e and v6e have one core per chip.
PEAK_FLOPS = (
    # cloud.google.com/tpu/docs/v4: 275 TFLOP/s bf16 per chip.
    (r"TPU v4", {"bfloat16": 275e12, "float32": 275e12}),
    # cloud.google.com/tpu/docs/v5e: 197 TFLOP/s bf16 per chip.
    (r"TPU v5( lite|e)", {"bfloat16": 197e12, "float32": 197e12}),
    # cloud.google.com/tpu/docs/v5p: 459 TFLOP/s bf16 per chip.
    (r"TPU v5p?", {"bfloat16": 459e12, "float32": 459e12}),
    # cloud.google.com/tpu/docs/v6e (Trillium): 918 TFLOP/s bf16 per chip.
    (r"TPU v6( lite|e)", {"bfloat16": 918e12, "float32": 918e12}),
    # NVIDIA A100 datasheet (SXM and PCIe, 40/80GB): BF16 tensor 312,
    # TF32 tensor 156 TFLOP/s dense.
    (r"NVIDIA A100.*", {"bfloat16": 312e12, "float32": 156e12}),
    # NVIDIA H100 datasheet, PCIe: BF16 756, TF32 378 TFLOP/s dense.
    (r"NVIDIA H100.*PCIe.*", {"bfloat16": 756e12, "float32": 378e12}),
    # NVIDIA H100 datasheet, SXM ("NVIDIA H100 80GB HBM3"): BF16 989,
    # TF32 494 TFLOP/s dense (1,979 / 989 with sparsity).
    (r"NVIDIA H100.*", {"bfloat16": 989e12, "float32": 494e12}),
    # NVIDIA H200 datasheet, NVL: BF16 835, TF32 418 TFLOP/s dense.
    (r"NVIDIA H200 NVL.*", {"bfloat16": 835e12, "float32": 418e12}),
    # NVIDIA H200 datasheet, SXM: same tensor cores as H100 SXM.
    (r"NVIDIA H200.*", {"bfloat16": 989e12, "float32": 494e12}),
)


def table_peak_flops(device_kind, dtype="float32"):
  """`PEAK_FLOPS` of a device kind and matmul dtype; None if not listed."""
  dtype = np.dtype(dtype).name
  for pattern, peaks in PEAK_FLOPS:
    if re.fullmatch(pattern, device_kind):
      return peaks.get(dtype)
  return None


def _time(fn, *args, steps, calls=1):
  """Seconds per call of a compiled function: the median over `steps`
  samples, each `calls` calls dispatched back to back and waited for once
  (so a sample of a short kernel is not mostly dispatch and wait)."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    jax.block_until_ready([fn(*args) for _ in range(calls)])
    times.append((time.perf_counter() - t0) / calls)
  return float(np.median(times))


def matmul_peak(n, mesh, dtype="float32"):
  """Measured FLOP/s of an n x n matmul per device, summed over the mesh.

  The matmul is the models' (`models.common.einsum`): in bfloat16 on CPU,
  accumulated in float32, which XLA:CPU runs on its bfloat16 kernels.
  """
  sh = sharding.batch_sharding(mesh)
  d = mesh.devices.size
  # Random operands: a GPU multiplies constant ones or zeros faster (less
  # switching power), which would overstate the peak.
  a = np.random.default_rng(0).standard_normal((d, n, n), np.float32)
  a = jax.device_put(a.astype(jnp.dtype(dtype)), sh)  # From the host, split.
  f = jax.jit(lambda x: common.einsum("bij,bjk->bik", x, x)).lower(a).compile()
  # Four calls a sample: with one call and its wait per sample the H200's
  # 8192^3 bfloat16 matmul (about 1.4 ms) measured 528-650 TFLOP/s in five
  # processes while torch's cuBLAS measured 762-765 in the same minutes;
  # the dispatch and wait are likely part of that gap (not re-measured).
  return 2.0 * d * n**3 / _time(f, a, steps=5, calls=4)


def peak_flops_per_device(device, dtype="float32", override=None):
  """The peak FLOP/s of one device, for `mfu`.

  Args:
    device: a `jax.Device` (its `device_kind` is looked up in `PEAK_FLOPS`).
    dtype: the matmul dtype (e.g. the model's `dtype_mm`).
    override: None (the table), a number (FLOP/s per device, e.g. from
      `config.peak_flops`), or "measure": a large matmul on this process's
      devices (`matmul_peak`; 8192^2 on accelerators, 1024^2 on CPU).

  Returns:
    FLOP/s, or None for a device kind the table does not list.
  """
  if override is None:
    return table_peak_flops(device.device_kind, dtype)
  if override == "measure":
    mesh = sharding.make_mesh(devices=jax.local_devices())
    n = 1024 if device.platform == "cpu" else 8192
    return matmul_peak(n, mesh, dtype) / mesh.devices.size
  if (not config_lib.is_finite_number(override)) or override <= 0:
    raise ValueError(f"config.peak_flops={override!r}: must be None, a "
                     "positive number (FLOP/s per device) or 'measure'.")
  return float(override)


def matmul_dtype(model_config):
  """The `dtype_mm` of a model config, for the peak: "float32" if unset.

  Sub-dicts are searched too (a two-tower's `image` and `text`); of several
  dtypes, a lower-precision one wins (its higher peak understates MFU
  rather than overstating it).
  """
  found = []

  def visit(cfg):
    for key, value in dict(cfg).items():
      if key == "dtype_mm" and value:
        found.append(np.dtype(value))
      elif hasattr(value, "items"):
        visit(value)

  visit(model_config)
  return min(found, key=lambda d: d.itemsize, default=np.dtype("float32")).name


def _si(n):
  """E.g. 2.1e9 -> "2.10 G" (3 significant digits and an SI prefix)."""
  for prefix in ("", "k", "M", "G", "T"):
    if abs(n) < 1000 or prefix == "T":
      return f"{n:.3g} {prefix}"
    n /= 1000


def describe_step(flops, memory, peak):
  """A console line about the compiled step (see `step_flops`, `step_memory`).

  E.g. "Train step: 2.1 GFLOP (XLA cost analysis); per device: arguments
  1.2 MiB, outputs 1.2 MiB, temporaries 3.4 MiB; peak 989 TFLOP/s per
  device."
  """
  parts = [f"{_si(flops)}FLOP (XLA cost analysis)" if flops
           else "FLOPs unknown (no XLA cost analysis)"]
  sizes = [f"{label} {format_bytes(memory[f'memory/step_{key}_bytes'])}"
           for key, label in (("argument", "arguments"), ("output", "outputs"),
                              ("temp", "temporaries"))
           if f"memory/step_{key}_bytes" in memory]
  if sizes:
    parts.append("per device: " + ", ".join(sizes))
  parts.append(f"peak {_si(peak)}FLOP/s per device" if peak else
               "no peak FLOP/s known for this device, so no MFU (set "
               "config.peak_flops to FLOP/s per device, or 'measure')")
  return "Train step: " + "; ".join(parts) + "."


def mfu(flops, step_seconds, num_devices, peak):
  """Model FLOP utilisation: flops / step_seconds / (num_devices * peak)."""
  return flops / step_seconds / (num_devices * peak)


def utilisation(flops, steps_per_sec, num_devices, peak=None):
  """Per-step FLOP metrics: `flops_per_sec_per_device` and `mfu`.

  {} when `flops` or `steps_per_sec` is unknown; no `mfu` without a peak.
  """
  if not flops or not steps_per_sec:
    return {}
  out = {"flops_per_sec_per_device": flops * steps_per_sec / num_devices}
  if peak:
    out["mfu"] = mfu(flops, 1.0 / steps_per_sec, num_devices, peak)
  return out


# ------------------------------------------------------------------ profiler


def write_hlo(compiled, directory, name):
  """Writes a compiled step's HLO text (with each op's `op_name` metadata,
  which `tools/trace_summary.py` reads) to `directory/NAME.hlo.txt`;
  returns that path."""
  fs.makedirs(directory)
  path = fs.join(directory, f"{name}.hlo.txt")
  with fs.open(path, "w") as f:
    f.write(compiled.as_text())
  return path


class Profiler:
  """A `jax.profiler` trace of steps first_step..first_step+num_steps-1.

  Around each train step:

    with profiler.step(step):  # Starts the trace at first_step.
      state, metrics = step_fn(state, batch)
    profiler.after(step, wait_for=metrics)  # Stops it after the last one.

  and `close()` at the end (in a `finally`). The trace goes to
  `workdir/profile/plugins/profile/<time>/`: `<host>.xplane.pb` for
  TensorBoard's profile plugin (`tensorboard --logdir workdir/profile`) and
  `<host>.trace.json.gz` for ui.perfetto.dev (and, from `save_hlo`, the
  step's HLO: `python -m big_vision_like.tools.trace_summary
  workdir/profile` sums the trace by kind of op). Only the traced steps (and
  whatever the host does meanwhile, e.g. tf.data) are in it, not evaluators
  or checkpoints after them. A run resumed inside the window traces the
  rest of it; one resumed past it traces nothing. In a run of several
  processes each traces into `workdir/profile/process_<index>/`: the trace
  files are named by host alone, so processes sharing a host (one per GPU,
  or this project's tests) would overwrite each other's; the HLO, the same
  program on every process, stays in `workdir/profile/`.

  Args:
    workdir: the run's directory; None: the profiler does nothing.
    first_step: the first traced step (>= 1).
    num_steps: how many steps to trace (>= 1).
  """

  def __init__(self, workdir, first_step=1, num_steps=1):
    for key, value in (("first_step", first_step), ("num_steps", num_steps)):
      if not config_lib.is_integer(value) or value < 1:
        raise ValueError(f"config.profile.{key}={value!r}: must be an "
                         "integer >= 1.")
    self.logdir = (None if workdir is None
                   else fs.join(workdir, PROFILE_DIR))
    self.tracedir = self.logdir
    if workdir is not None and jax.process_count() > 1:
      self.tracedir = fs.join(self.logdir, f"process_{jax.process_index()}")
    self.first_step, self.last_step = first_step, first_step + num_steps - 1
    self.active = False

  @classmethod
  def from_config(cls, workdir, profile):
    """From `config.profile`: None (no trace) or dict(first_step, num_steps)."""
    if profile is None:
      return cls(None)
    profile = dict(profile)
    config_lib.check_kwargs(cls, profile, "config.profile", skip=("workdir",))
    return cls(workdir, **profile)

  def step(self, step):
    """A context around running `step`: starts the trace at the window's
    first step (or the first step of a run resumed inside it) and marks
    each traced step for TensorBoard's step view."""
    inside = self.first_step <= step <= self.last_step
    if self.logdir is None or not inside:
      return contextlib.nullcontext()
    if not self.active:
      jax.profiler.start_trace(self.tracedir)
      self.active = True
    return jax.profiler.StepTraceAnnotation("train", step_num=step)

  def save_hlo(self, compiled, step, name="train_step"):
    """Writes the compiled step's HLO text as `workdir/profile/NAME.hlo.txt`
    (process 0; nothing if no step from `step` on is traced), so
    `tools/trace_summary.py` can tell the traced ops' kinds and FLOPs."""
    if (self.logdir is None or step > self.last_step
        or jax.process_index() != 0):
      return None
    return write_hlo(compiled, self.logdir, name)

  def after(self, step, wait_for=None):
    """Stops the trace once `step`, the window's last, is done.

    Args:
      step: the step just dispatched.
      wait_for: its outputs, waited for so that the trace holds its device
        work (JAX dispatches asynchronously).
    """
    if self.active and step >= self.last_step:
      jax.block_until_ready(wait_for)
      self.close()

  def close(self):
    """Stops a trace still running (e.g. the run ended inside the window)."""
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
