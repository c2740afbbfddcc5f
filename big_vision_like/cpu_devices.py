"""CPU-only runs: split the host into several JAX devices, data parallel.

On one CPU device XLA gives a step's large matmuls to all cores, but the
many smaller ops around them (elementwise and reduction fusions, copies,
the small per-head matmuls of attention) keep the cores busy only in part.
With the host split into N devices (`jax_num_cpu_devices`), each device
runs the same step on 1/N of the batch and the cores stay busy; gradients
are averaged across devices as on any data-parallel mesh. Measured on a
2-core CPU (ViT-S/16, batch 16, f32, `host_memory` kept): two devices ran
the train step 1.07-1.24x faster than one in most interleaved runs (1.00x
in one), at no more peak memory (README, Benchmarks, "CPU devices").

`configure(requested, batch_sizes=...)` sets the device count before JAX
starts its backends; the trainer calls it with `config.cpu_devices`, and
`tools/benchmark.py` with `--cpu_devices`. `requested` is:

- an integer N >= 1: N CPU devices (1: one device, JAX's own default);
- "auto": on a CPU-only single-process run, the most devices, at most
  `min(usable cores, AUTO_MAX)`, that every batch size divides (and, with
  gradient accumulation, whose per-device batch the accumulation steps
  divide; with a mesh of fixed sizes, its device count). Nothing is changed
  when the run may use an accelerator (the rule of `host_memory`), when
  `XLA_FLAGS` sets `--xla_force_host_platform_device_count` or code set
  `jax_num_cpu_devices` (the user's choice wins), under
  `jax.distributed` (set the count per process yourself), or when JAX's
  backends are already initialised (too late; an explicit N that differs
  from the running count is an error then).

`AUTO_MAX` is a guess beyond what was measured (2 cores): in-process
devices each hold a replica of the train state, and their all-reduce grows
with their number. `STATE` says what happened, e.g. for a log line.
"""

import math
import os
import re

from big_vision_like import host_memory

AUTO_MAX = 8
_FLAG = "--xla_force_host_platform_device_count"
_FLAG_RE = re.compile(rf"{_FLAG}=(\d+)")

STATE = "not configured"


def usable_cores():
  """CPUs this process may run on (its affinity mask where the OS has one)."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def auto_count(batch_sizes, cores, *, grad_accum_steps=1,
               mesh_config=(("data", -1),), most=AUTO_MAX):
  """The device count "auto" picks (pure; see the module doc).

  With a mesh of fixed sizes (no -1 axis), the count it names. Otherwise
  the most devices n <= min(cores, most), a multiple of the mesh's fixed
  sizes, that divide every batch size with each per-device batch a
  multiple of `grad_accum_steps`; the fixed sizes' product (1 for the
  default mesh) if no larger n does.
  """
  sizes = [int(size) for _, size in mesh_config]
  fixed = math.prod(s for s in sizes if s != -1)
  if -1 not in sizes:
    return fixed
  best = fixed
  for n in range(fixed, min(cores, most) + 1, fixed):
    if all(b % n == 0 and (b // n) % grad_accum_steps == 0
           for b in batch_sizes):
      best = n
  return best


def parse(text):
  """A command-line value: "auto" or a positive integer."""
  if text == "auto":
    return text
  if not text.isdigit() or int(text) < 1:
    raise ValueError(f"--cpu_devices {text!r}: expected 'auto' or an "
                     "integer >= 1.")
  return int(text)


def _flag_count(xla_flags):
  """The device count `XLA_FLAGS` sets, or None."""
  m = _FLAG_RE.search(xla_flags or "")
  return int(m.group(1)) if m else None


def without_count_flag(xla_flags):
  """`XLA_FLAGS` less its device count (for a child that picks its own)."""
  return _FLAG_RE.sub("", xla_flags or "").strip()


def configure(requested="auto", *, batch_sizes=(), grad_accum_steps=1,
              mesh_config=(("data", -1),), cores=None):
  """Sets JAX's CPU device count as `requested` says (see the module doc).

  Returns the count set, or None where it was left to JAX. `cores` defaults
  to `usable_cores()`.
  """
  global STATE
  if requested != "auto" and (not isinstance(requested, int)
                              or isinstance(requested, bool) or requested < 1):
    raise ValueError(f"config.cpu_devices={requested!r}: expected 'auto' or "
                     "an integer >= 1.")
  import jax  # pylint: disable=import-outside-toplevel
  flag = _flag_count(os.environ.get("XLA_FLAGS"))
  code = jax.config.jax_num_cpu_devices
  set_by_user = flag if flag is not None else (code if code > 0 else None)
  source = "XLA_FLAGS" if flag is not None else "code"
  if host_memory.jax_backends_initialized():
    running = len(jax.devices("cpu")) if jax.default_backend() == "cpu" else None
    if requested != "auto" and running is not None and running != requested:
      raise ValueError(
          f"config.cpu_devices={requested}: JAX already runs {running} CPU "
          "devices (its backends were initialised before the device count "
          "could be set; set it first, or use XLA_FLAGS="
          f"{_FLAG}={requested}).")
    STATE = "left as it was (JAX's backends were already initialised)"
    return None
  if requested != "auto":
    if set_by_user is not None and set_by_user != requested:
      raise ValueError(
          f"config.cpu_devices={requested} contradicts the {set_by_user} CPU "
          f"devices set by {source}; set one of them.")
    jax.config.update("jax_num_cpu_devices", requested)
    STATE = f"{requested} (requested)"
    return requested
  if set_by_user is not None:
    STATE = f"{set_by_user} (set by {source})"
    return None
  if not host_memory.cpu_only_run():
    STATE = "left to JAX (an accelerator may be used)"
    return None
  if getattr(jax.distributed, "is_initialized", lambda: False)():
    STATE = "left to JAX (jax.distributed: set the count per process)"
    return None
  cores = usable_cores() if cores is None else cores
  n = auto_count([int(b) for b in batch_sizes], cores,
                 grad_accum_steps=grad_accum_steps, mesh_config=mesh_config)
  jax.config.update("jax_num_cpu_devices", n)
  STATE = f"{n} (auto: {cores} cores)"
  return n

