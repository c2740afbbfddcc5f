"""CPU device count: the "auto" rule, and when configure() leaves JAX alone."""

import os
import subprocess
import sys

import pytest

from big_vision_like import cpu_devices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("sizes,cores,kw,want", [
    ([16], 2, {}, 2),
    ([16], 16, {}, 8),  # At most AUTO_MAX.
    ([6], 8, {}, 6),
    ([16, 12], 8, {}, 4),  # Divides every batch size (train and evals).
    ([7], 2, {}, 1),
    ([32], 8, {"grad_accum_steps": 8}, 4),  # 32 / 4 = 8 per device.
    ([32], 8, {"grad_accum_steps": 3}, 1),
    ([16], 8, {"mesh_config": (("data", -1), ("model", 2))}, 8),
    ([12], 8, {"mesh_config": (("data", -1), ("model", 4))}, 4),
    ([24], 2, {"mesh_config": (("data", -1), ("model", 4))}, 4),  # The mesh's.
    ([16], 2, {"mesh_config": (("data", 4),)}, 4),  # A fixed mesh's count.
])
def test_auto_count(sizes, cores, kw, want):
  assert cpu_devices.auto_count(sizes, cores, **kw) == want


def _run(code, **env):
  """`code` in a fresh Python (JAX not started), with `env` over ours."""
  full = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  full.update(env, PYTHONPATH=ROOT)
  out = subprocess.run([sys.executable, "-c", code], env=full, text=True,
                       capture_output=True, timeout=120, check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  return out.stdout.strip().splitlines()[-1]


def test_configure_splits_the_host_and_names_what_it_did():
  code = """
import jax
from big_vision_like import cpu_devices as c
n = c.configure("auto", batch_sizes=[6, 12], cores=4)
print(n, jax.device_count(), c.STATE, end=" | ")
print(c.configure("auto", batch_sizes=[6]), c.STATE, end=" | ")
try:
  c.configure(2)
except ValueError as e:
  print("error:", e)
"""
  first, later, error = _run(code, JAX_PLATFORMS="cpu").split(" | ")
  assert first == "3 3 3 (auto: 4 cores)"
  assert later == ("None left as it was (JAX's backends were already "
                   "initialised)")
  assert "config.cpu_devices=2: JAX already runs 3 CPU devices" in error


def test_configure_leaves_the_users_count_and_accelerators_alone():
  code = """
import jax
from big_vision_like import cpu_devices as c
print(c.configure("auto", batch_sizes=[8], cores=8), c.STATE, end=" | ")
try:
  c.configure(2)
except ValueError as e:
  print("error:", e, end=" | ")
print(jax.device_count())
"""
  auto, error, devices = _run(
      code, JAX_PLATFORMS="cpu",
      XLA_FLAGS="--xla_force_host_platform_device_count=3").split(" | ")
  assert auto == "None 3 (set by XLA_FLAGS)"
  assert error == ("error: config.cpu_devices=2 contradicts the 3 CPU "
                   "devices set by XLA_FLAGS; set one of them.")
  assert devices == "3"
  code = """
from big_vision_like import cpu_devices as c
print(c.configure("auto", batch_sizes=[8], cores=8), c.STATE)
"""
  assert _run(code, JAX_PLATFORMS="cuda") == (
      "None left to JAX (an accelerator may be used)")


def test_configure_rejects_bad_values():
  for bad in (0, -2, "4", 2.0, True):
    with pytest.raises(ValueError, match="expected 'auto' or an integer"):
      cpu_devices.configure(bad)
