"""Host memory on CPU runs: keep XLA:CPU's per-step buffers mapped.

XLA:CPU gives every run of an executable one temp buffer holding all its
intermediates (2 GB for the ViT-S/16 train step at batch 16), allocated with
`posix_memalign` and freed when the run ends. glibc serves an allocation that
large with a fresh `mmap` and gives it back with `munmap`, so on every step
the kernel page-faults and zero-fills the whole buffer again: about 0.5 M
page faults and 1 s of system time per ViT-S/16 step on a 2-core CPU, a
quarter of the step's CPU time (`getrusage` around a step; `strace` shows
the `mmap`/`munmap` pair).

`configure()` sets three glibc malloc options (`mallopt`) so that freed
memory stays in the process and the next step reuses it without a fault:

- `M_ARENA_MAX=1`: one malloc arena. XLA's worker threads would otherwise
  each get an arena of their own, and an arena other than the main one
  serves anything above 64 MiB with `mmap` whatever the options say.
- `M_MMAP_MAX=0`: no allocation served by `mmap`; large ones grow the heap.
- `M_TRIM_THRESHOLD=-1` (no limit): the heap's free top is never given back.

The costs: the process's resident memory does not shrink after its peak, and
all threads allocate from one arena. Where the step is small and tf.data's
threads feed it from the same cores, that one arena is contended: `make
demo` (SigLIP on shapes, 2 CPU devices, a temp buffer of 57 MiB per device)
trained in 366.7 s with it and in 253.3 s (1.45x) with `keep_arenas`, the
last two options without M_ARENA_MAX=1, which keeps buffers below a thread
arena's 64 MiB heap mapped while threads allocate from arenas of their own
(the ViT-S/16 step at batch 16, a 2 GB temp buffer, runs 0.91x with it,
as slow as glibc's defaults). `make demo` and `make demo-digits` choose
`keep_arenas`; the trainer logs which mode suits its compiled step
(`advice`). Which arenas threads get is settled when they first allocate,
so the choice cannot wait for the step's size.

The options only reach threads that had not allocated yet, so they must be
set before the first JAX computation starts XLA's threads: importing
`big_vision_like` calls `configure()`, which does nothing when

- the platform is not Linux with glibc;
- the run may use an accelerator: `JAX_PLATFORMS` names one, or (unset) a
  CUDA/ROCm/TPU plugin is installed (their host buffers are small, and the
  input pipeline of an accelerator host has many threads to feed);
- JAX's backends are already initialised (too late to help);
- `BIG_VISION_LIKE_HOST_MEMORY=default` is set (`keep` forces it on,
  `keep_arenas` forces it on without the one arena).

`STATE` says what happened, e.g. for a benchmark's header; `KEPT` is the
mode in effect ("keep" or "keep_arenas"), or None.
"""

import ctypes
import importlib.util
import os
import sys

ENV = "BIG_VISION_LIKE_HOST_MEMORY"  # one of MODES; unset: "auto"
MODES = ("auto", "keep", "keep_arenas", "default")
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_ACCELERATOR_MODULES = ("jax_cuda12_plugin", "jax_cuda13_plugin",
                        "jax_rocm60_plugin", "jax_rocm7_plugin", "libtpu")

STATE = "not configured"
KEPT = None  # The mode whose options are set: "keep", "keep_arenas" or None.


def accelerator_possible(jax_platforms, installed):
  """Whether a run may use an accelerator.

  `jax_platforms`: the `JAX_PLATFORMS` value (None or "" when unset);
  `installed`: names of the installed accelerator plugin modules.
  """
  if jax_platforms:
    return any(p.strip() not in ("cpu", "") for p in jax_platforms.split(","))
  return bool(installed)


def _installed_plugins():
  found = [m for m in _ACCELERATOR_MODULES if importlib.util.find_spec(m)]
  try:
    spec = importlib.util.find_spec("jax_plugins")
  except (ImportError, ValueError):
    spec = None
  if spec is not None and spec.submodule_search_locations:
    for path in spec.submodule_search_locations:
      if os.path.isdir(path):
        found += [f"jax_plugins.{n}" for n in os.listdir(path)
                  if not n.startswith(("_", "."))]
  return found


def cpu_only_run():
  """Whether this run can only use the CPU (see `accelerator_possible`)."""
  return not accelerator_possible(_jax_platforms(), _installed_plugins())


# Above this temp buffer per device a thread arena mmaps the buffer anew on
# every step (its heaps hold 64 MiB), so only the one arena keeps it mapped.
ARENA_HEAP_BYTES = 64 << 20


def advice(temp_bytes_per_device):
  """A line suggesting the other mode where this process's suits a step
  with `temp_bytes_per_device` (XLA's temp buffer) worse, else None."""
  if temp_bytes_per_device is None:
    return None
  mib = temp_bytes_per_device / 2**20
  if KEPT == "keep" and temp_bytes_per_device < ARENA_HEAP_BYTES:
    return (f"Host memory: the step's temp buffer is small ({mib:.0f} MiB "
            f"per device); {ENV}=keep_arenas avoids contending for one malloc "
            "arena with the input pipeline (make demo: 1.45x).")
  if KEPT == "keep_arenas" and temp_bytes_per_device > ARENA_HEAP_BYTES:
    return (f"Host memory: the step's temp buffer ({mib:.0f} MiB per device) "
            f"is above a thread arena's 64 MiB heap; {ENV}=keep keeps it "
            "mapped between steps (ViT-S/16 at batch 16: 1.10x).")
  return None


def jax_backends_initialized():
  """Whether JAX has started its backends (too late for process options)."""
  if "jax" not in sys.modules:
    return False
  try:
    from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
    return bool(xla_bridge.backends_are_initialized())
  except (ImportError, AttributeError):
    return False


def _jax_platforms():
  if "jax" in sys.modules:  # Set in code: jax.config.update("jax_platforms").
    value = getattr(sys.modules["jax"].config, "jax_platforms", None)
    if value:
      return value
  return os.environ.get("JAX_PLATFORMS")


def _glibc_mallopt():
  if not sys.platform.startswith("linux"):
    return None
  try:
    libc = ctypes.CDLL(None)
    libc.gnu_get_libc_version  # pylint: disable=pointless-statement
    return libc.mallopt
  except (OSError, AttributeError):
    return None  # musl, or no libc symbols.


def configure():
  """Keeps freed host memory mapped on CPU runs (see the module doc).

  Returns True when the malloc options were set (now or before).
  """
  global STATE, KEPT
  if KEPT:
    return True
  mode = os.environ.get(ENV, "auto")
  if mode not in MODES:
    raise ValueError(f"{ENV}={mode!r}: expected one of {MODES[1:]} or "
                     "unset.")
  mallopt = _glibc_mallopt()
  if mode == "default":
    STATE = f"glibc defaults ({ENV}=default)"
  elif mallopt is None:
    STATE = "platform defaults (not Linux/glibc)"
  elif jax_backends_initialized():
    STATE = ("glibc defaults (JAX's backends were initialised before "
             "big_vision_like was imported)")
  elif mode == "auto" and accelerator_possible(_jax_platforms(),
                                               _installed_plugins()):
    STATE = "glibc defaults (an accelerator may be used)"
  else:
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    options = {"M_MMAP_MAX=0": (_M_MMAP_MAX, 0),
               "no trim": (_M_TRIM_THRESHOLD, -1)}
    if mode != "keep_arenas":
      options = {"M_ARENA_MAX=1": (_M_ARENA_MAX, 1), **options}
    if all(mallopt(*option) == 1 for option in options.values()):
      KEPT = "keep_arenas" if mode == "keep_arenas" else "keep"
      STATE = f"kept (glibc {', '.join(options)})"
    else:
      STATE = "glibc defaults (mallopt refused)"
  return bool(KEPT)
