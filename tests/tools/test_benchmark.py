"""Smoke test of the benchmark tool on a tiny ViT (the real run is `make benchmark`)."""

import jax

from big_vision_like import sharding
from big_vision_like.tools import benchmark


def test_step_benchmark_reports_time_and_flops():
  sec, flops = benchmark.step_benchmark("mu/16", 32, batch_size=8, steps=1,
                                        dtype_mm="float32")
  assert sec > 0
  # mu/16 at 32px: 4 patches + conv stem; forward alone is > 1 MFLOP/image.
  assert flops > 8 * 3 * 1e6


def test_matmul_peak_is_positive():
  assert benchmark.matmul_peak(128, sharding.make_mesh()) > 0
  assert jax.device_count() == 8
