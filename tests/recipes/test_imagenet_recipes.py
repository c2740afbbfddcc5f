"""The ImageNet classification recipes run end to end on mocked TFDS data.

configs/vit_i1k.py and configs/nfnet_i1k.py, unchanged but for the model's
width and depth, the batch size and the number of steps: the real
resolutions and pp strings, every dataset and evaluator (ImageNet train,
val and minival, ReaL, v2, A, R, Sketch) read through TFDS from mocked
random examples with each dataset's real features (tests/mock_tfds.py).
"""

import math

import pytest

from big_vision_like import config as config_lib
from big_vision_like import train
from big_vision_like.evaluators import imagenet_data

BATCH = 8  # One example per simulated device.


_load = config_lib.load


def _mock_data(cfg, mock_tfds):
  """Points the train data and every eval's at mocked TFDS data dirs."""
  splits = {}
  for data in [cfg.input.data] + [ev.data for ev in cfg.evals.values()]:
    base = data.split.split("[")[0]
    splits.setdefault(data.name, set()).add(base)
  dirs = {name: mock_tfds(name, splits=tuple(sorted(s)))
          for name, s in splits.items()}
  cfg.input.data.data_dir = dirs[cfg.input.data.name]
  for ev in cfg.evals.values():
    ev.data.data_dir = dirs[ev.data.name]
  return sorted(splits)


def _shrink_run(cfg):
  """Two steps at batch 8; every evaluator at the end only."""
  cfg.total_epochs, cfg.total_steps = None, 2
  cfg.input.batch_size = BATCH
  for ev in cfg.evals.values():
    ev.batch_size = BATCH
    ev.log_steps = None


def _check_results(cfg, results):
  for name, ev in cfg.evals.items():
    assert ev.type == "classification"
    for key in ("prec@1", "prec@5", "loss"):
      value = results[f"{name}/{key}"]
      assert math.isfinite(value), (name, key, value)
    assert 0 <= results[f"{name}/prec@1"] <= results[f"{name}/prec@5"] <= 1
    assert results[f"{name}/loss"] >= 0
  assert math.isfinite(results["train/loss"])


def test_vit_i1k(tmp_path, mock_tfds):
  cfg = _load("vit_i1k")
  assert set(cfg.evals) == set(imagenet_data.CLASSIFICATION_EVALS)
  datasets = _mock_data(cfg, mock_tfds)
  assert datasets == ["imagenet2012", "imagenet2012_real", "imagenet_a",
                      "imagenet_r", "imagenet_sketch", "imagenet_v2"]
  cfg.model.update(width=16, depth=1, num_heads=1, mlp_dim=32)
  _shrink_run(cfg)
  _, results = train.train_and_evaluate(cfg, str(tmp_path / "vit"))
  _check_results(cfg, results)


# The slowest recipe run (~70 s: the NFNet step compiles slowly on XLA:CPU):
# in make test-slow, which CI runs after make test.
@pytest.mark.slow
def test_nfnet_i1k(tmp_path, mock_tfds):
  cfg = _load("nfnet_i1k")
  assert "192" in cfg.input.pp and "central_crop(256)" in cfg.evals.val.pp_fn
  assert {ev.pred_params for ev in cfg.evals.values()} == {"ema"}
  _mock_data(cfg, mock_tfds)
  cfg.model.update(depths=(1, 1, 1, 1), width_mult=1 / 16, dtype_mm="float32")
  _shrink_run(cfg)
  _, results = train.train_and_evaluate(cfg, str(tmp_path / "nfnet"))
  _check_results(cfg, results)
