"""Smoke test of the benchmark tool on a tiny ViT (the real run is `make benchmark`)."""

import importlib.util
import re
import subprocess
import sys

import jax
import pytest

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


def test_largest_batch_fits_and_the_next_does_not():
  one_device = sharding.make_mesh(devices=jax.devices()[:1])
  need = lambda b: benchmark.step_bytes("vit", "mu/16", 32, b, "float32",
                                        one_device)
  limit = need(40) / 0.9 + 1.0
  batch, used = benchmark.largest_batch("vit", "mu/16", 32, "float32", limit,
                                        one_device)
  assert batch % 8 == 0 and used == need(batch) <= 0.9 * limit
  assert need(batch + 8) > 0.9 * limit
  with pytest.raises(ValueError, match=r"vit:mu/16 at batch 8 \(8 per "
                     r"device\) needs .* GiB per device, over the "
                     r".* GiB budget"):
    benchmark.largest_batch("vit", "mu/16", 32, "float32", need(8) / 2,
                            one_device)


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


# Not imported here: torch next to TensorFlow in one process can crash.
HAS_TIMM = importlib.util.find_spec("timm") is not None


@pytest.mark.skipif(not HAS_TIMM, reason="needs the torch extra")
def test_compare_timm_alternates_both_steps(monkeypatch, tmp_path):
  # A one-block ViT on our side keeps the compile short; timm's model is
  # the smallest it has (the protocol is what is tested here).
  monkeypatch.setitem(benchmark.TIMM_NAMES, "vit:mu/16",
                      "vit_tiny_patch16_224")
  rows = benchmark.compare("vit:mu/16", batch_size=8, steps=2, res=32,
                           dtype_mm="float32", devices=8, peak=1e12,
                           model_kw={"attention_impl": "xla"},
                           matmul_size=256, profile_dir=str(tmp_path))
  ours, timm_row, own_peak_row, ratio = rows
  # Our step (alone) was traced after the timing, with its HLO.
  assert "ENTRY" in (tmp_path / "step.hlo.txt").read_text()
  assert list(tmp_path.glob("plugins/profile/*/*.trace.json.gz"))
  assert ours.startswith("| vit:mu/16 | 8 |")
  assert timm_row.startswith(
      "| timm vit_tiny_patch16_224 (matmul peak ")
  # timm's utilisation against torch's own peak = its GFLOP/s / that peak.
  torch_peak = float(re.search(r"matmul peak ([\d.]+) GFLOP/s",
                               timm_row).group(1))
  assert torch_peak > 0
  assert own_peak_row.startswith(
      "| timm vit_tiny_patch16_224, against torch's own matmul peak |")
  gflops = float(timm_row.split("|")[7])
  # Both printed with 1 decimal: GFLOP/s off by up to 0.05 (a large part of
  # it on a loaded machine, where this tiny step runs at ~0.1 GFLOP/s), the
  # utilisation by up to 0.05 points.
  assert float(own_peak_row.split("|")[8].strip().rstrip("%")) == (
      pytest.approx(100 * gflops / torch_peak,
                    abs=100 * 0.05 / torch_peak + 0.05 + 1e-9))
  examples = [float(r.split("|")[4]) for r in (ours, timm_row)]
  assert min(examples) > 0
  want = examples[0] / examples[1]
  # The ratio is of the unrounded rates; the rows print each rate and the
  # ratio with 2 decimals, so allow for those roundings.
  tol = want * sum(0.005 / e for e in examples) + 0.005 + 1e-9
  assert float(ratio.split("|")[4].strip().rstrip("x")) == pytest.approx(
      want, abs=tol)


def test_compare_names_the_models_it_knows():
  with pytest.raises(ValueError, match="no timm model known for 'vit:mu/4'"):
    benchmark.timm_step("vit:mu/4", 8, 32, "float32")
  with pytest.raises(ValueError, match="no big_vision/models/vit.py there"):
    benchmark.big_vision_vit("S/16", "float32", "/nonexistent")


@pytest.mark.slow  # A subprocess compiling its own step: make test-slow.
def test_compare_big_vision_runs_its_vit_here_and_in_its_own_process(
    tmp_path):
  # A stand-in checkout (the real one cannot be downloaded here): its
  # big_vision/models/vit.py builds a one-block ViT, as big_vision's Model.
  models = tmp_path / "big_vision" / "models"
  models.mkdir(parents=True)
  for d in (tmp_path / "big_vision", models):
    (d / "__init__.py").write_text("")
  (models / "vit.py").write_text(
      "from big_vision_like.models import vit\n"
      "def Model(num_classes, variant, dtype_mm):\n"
      "  return vit.Model(num_classes, variant=variant, dtype_mm=dtype_mm,\n"
      "                   attention_impl='xla')\n")
  rows = benchmark.compare("vit:mu/16", batch_size=8, steps=2, res=32,
                           dtype_mm="float32", devices=8, peak=1e12,
                           model_kw={"attention_impl": "xla"},
                           against=("big_vision",),
                           big_vision_dir=str(tmp_path))
  names = [r.split("|")[1].strip() for r in rows]
  theirs = ("big_vision ViT (host memory glibc defaults "
            "(BIG_VISION_LIKE_HOST_MEMORY=default); CPU devices 1 "
            "(requested))")
  assert names == [
      "vit:mu/16", "big_vision ViT (this process)", theirs,
      "ratio (ours / big_vision ViT (this process) examples/s)",
      f"ratio (ours / {theirs} examples/s)"]
  assert all(float(r.split("|")[4].rstrip("x ")) > 0 for r in rows)


def test_own_peak_reads_the_servers_note():
  assert benchmark._own_peak("matmul peak 412.3 GFLOP/s") == 412.3e9
  assert benchmark._own_peak("torch 2.1") is None


# A step server that answers one step, then ends as argv[1] says.
_DYING_SERVER = """
import os, signal, sys
print("ready note", flush=True)
sys.stdin.readline()
print("0.5", flush=True)
sys.stdin.readline()
if sys.argv[1] == "kill":
  os.kill(os.getpid(), signal.SIGKILL)
sys.exit(3)
"""


@pytest.mark.parametrize("how, said", [
    ("kill", "was killed (SIGKILL: out of memory?)"),
    ("exit", "exited with status 3"),
])
def test_a_step_server_that_dies_is_named(how, said):
  server = benchmark.StepServer(
      [sys.executable, "-c", _DYING_SERVER, how], "ours@abc")
  assert server.name == "ours@abc (note)"
  assert server.run() == 0.5
  with pytest.raises(RuntimeError, match=re.escape(
      f"ours@abc (note): its step process {said}")):
    for _ in range(3):  # The pipe may take a write to break.
      server.run()
  server.close()  # No BrokenPipeError from a dead process.
