"""Smoke test of the benchmark tool on a tiny ViT (the real run is `make benchmark`)."""

import subprocess
import sys

import jax

from big_vision_like import sharding
from big_vision_like.tools import benchmark


def test_step_benchmark_reports_time_and_flops():
  one_device = sharding.make_mesh(devices=jax.devices()[:1])
  sec, flops = benchmark.step_benchmark("vit", "mu/16", 32, batch_size=8,
                                        steps=1, dtype_mm="float32",
                                        mesh=one_device)
  assert sec > 0
  # mu/16 at 32px, 8 images: the forward's matmuls (stem, attention, MLP,
  # 1000-way head) are 361k FLOPs per image; a train step is about 3x that
  # plus the AdamW update.
  forward = 8 * (4 * 768 * 32 * 2 + 4 * 32 * 32 * 4 * 2 + 4 * 32 * 128 * 4 +
                 4 * 4 * 32 * 4 + 32 * 1000 * 2)
  assert 2.5 * forward < flops < 4.5 * forward


def test_matmul_peak_is_positive():
  assert benchmark.matmul_peak(128, sharding.make_mesh()) > 0
  assert jax.device_count() == 8


def test_step_imports_without_tensorflow():
  """The step, models and losses run where TF is absent (e.g. a GPU box)."""
  code = ("import sys; sys.modules['tensorflow'] = None; "
          "from big_vision_like.tools import benchmark; "
          "from big_vision_like import models, losses; "
          "print('ok')")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, check=False)
  assert out.returncode == 0, out.stderr
