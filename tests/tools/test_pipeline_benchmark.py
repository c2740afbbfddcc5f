"""Smoke test of the input-pipeline benchmark on a few tiny JPEGs."""

from big_vision_like.datasets import core
from big_vision_like.pp import builder
from big_vision_like.tools import pipeline_benchmark


def test_default_pp_uses_registered_ops():
  pp = pipeline_benchmark.default_pp(32)
  assert "(32)" in pp and "flip_lr" in pp
  builder.get_preprocess_fn(pp)  # Every op exists.


def test_write_images_is_an_imagefolder(tmp_path):
  pipeline_benchmark.write_images(str(tmp_path), 6, 12, 10, num_classes=3)
  source = core.get_source(f"imagefolder:{tmp_path}")
  assert source.num_examples("train") == 6
  assert source.class_names == ["class_0", "class_1", "class_2"]


def test_main_reports_throughput(capsys):
  rate = pipeline_benchmark.main(
      ["--num_images=8", "--height=30", "--width=40", "--size=16",
       "--batch_size=4", "--warmup=1", "--batches=2"])
  assert rate > 0
  out = capsys.readouterr().out
  assert "pp: " in out and "examples/s" in out
  assert "(4, 16, 16, 3)" in out
