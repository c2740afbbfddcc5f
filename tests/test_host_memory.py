"""host_memory: XLA:CPU's per-step temp buffer stays mapped between steps."""

import os
import statistics
import subprocess
import sys
import textwrap

import pytest

from big_vision_like import host_memory

GLIBC = host_memory._glibc_mallopt() is not None  # pylint: disable=protected-access

# A jitted function whose 2048 x WIDTH float32 intermediate (tanh(x @ w): 128
# MiB at the default width 16384; not fusable into the second matmul) lives
# in XLA's temp buffer; prints the minor page faults of runs 4-10. A mode
# that keeps the buffer has runs with none (the fewest is checked); one that
# does not faults it in on most runs (the median is checked: which thread
# allocates varies, and now and then a run faults nothing; a CI run once saw
# 0 as the fewest of 7 with arenas per thread, where 6 local runs of 7
# faulted in all 49). The pause lets XLA free a run's buffer (on one of its
# threads) before the next run allocates; without it, on a loaded machine a
# run can allocate while the last buffer is still held and fault in new pages.
_FAULTS = textwrap.dedent("""
    import resource, sys, time
    import big_vision_like
    from big_vision_like import host_memory
    import jax, jax.numpy as jnp
    width = int(sys.argv[1])
    x = jnp.ones((2048, 64)); w = jnp.full((64, width), 1e-3)
    v = jnp.ones((width, 8))
    f = jax.jit(lambda x, w, v: jnp.tanh(x @ w) @ v)
    for _ in range(3):
      f(x, w, v).block_until_ready()
    faults = []
    for _ in range(7):
      time.sleep(0.2)
      before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      f(x, w, v).block_until_ready()
      faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(*faults)
    print(host_memory.STATE)
""")


def _faults(mode, width=16384):
  env = {**os.environ, host_memory.ENV: mode, "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", _FAULTS, str(width)], env=env,
                       check=True, capture_output=True,
                       text=True).stdout.split("\n")
  return [int(f) for f in out[0].split()], out[1]


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc options (Linux)")
def test_temp_buffer_is_reused_without_page_faults():
  pages = 2048 * 16384 * 4 // 4096  # The intermediate: 32,768 pages.
  faults, state = _faults("default")
  assert state.startswith("glibc defaults"), state
  # mmap'd, touched and unmapped by (most) runs.
  assert statistics.median(faults) > 0.9 * pages
  faults, state = _faults("keep")
  assert state.startswith("kept"), state
  assert min(faults) < 0.05 * pages
  # Arenas per thread: a buffer above a thread arena's 64 MiB heap is
  # mmap'd (and faulted in) by every run again...
  faults, state = _faults("keep_arenas")
  assert state == "kept (glibc M_MMAP_MAX=0, no trim)", state
  assert statistics.median(faults) > 0.9 * pages


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc options (Linux)")
def test_small_temp_buffer_is_reused_with_arenas_per_thread():
  # ...one of 48 MiB stays in the thread's arena; glibc's defaults mmap it
  # (above their 32 MiB largest mmap threshold) on every run.
  width = 6144
  pages = 2048 * width * 4 // 4096
  assert statistics.median(_faults("default", width)[0]) > 0.9 * pages
  assert min(_faults("keep_arenas", width)[0]) < 0.05 * pages


def test_accelerator_possible():
  possible = host_memory.accelerator_possible
  assert not possible(None, [])
  assert not possible("", [])
  assert not possible("cpu", ["jax_cuda12_plugin"])  # Asked for CPU only.
  assert possible(None, ["jax_cuda12_plugin"])
  assert possible("cuda,cpu", [])
  assert possible("tpu", [])


def test_configure_checks_its_variable_and_reports_a_late_call(monkeypatch):
  monkeypatch.setattr(host_memory, "STATE", "not configured")
  monkeypatch.setattr(host_memory, "KEPT", None)
  monkeypatch.setenv(host_memory.ENV, "always")
  with pytest.raises(ValueError, match="BIG_VISION_LIKE_HOST_MEMORY='always'"):
    host_memory.configure()
  monkeypatch.setenv(host_memory.ENV, "keep")
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  jnp.zeros(1).block_until_ready()  # XLA's threads are running.
  if GLIBC:
    assert not host_memory.configure()
    assert "initialised before" in host_memory.STATE


def test_advice_names_the_mode_that_suits_the_step(monkeypatch):
  mib = 2**20
  monkeypatch.setattr(host_memory, "KEPT", "keep")
  assert "=keep_arenas" in host_memory.advice(57 * mib)
  assert host_memory.advice(2048 * mib) is None
  assert host_memory.advice(None) is None
  monkeypatch.setattr(host_memory, "KEPT", "keep_arenas")
  assert "=keep " in host_memory.advice(2048 * mib)
  assert host_memory.advice(57 * mib) is None
  monkeypatch.setattr(host_memory, "KEPT", None)
  assert host_memory.advice(57 * mib) is None
  assert host_memory.advice(2048 * mib) is None
