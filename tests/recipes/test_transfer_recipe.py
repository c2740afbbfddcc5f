"""configs/transfer.py: builds for every dataset; fine-tunes a saved `.npz`
on mocked CIFAR-10 and on an image folder, with every evaluator.

Only the model's size (width 16, one block), the batch (8) and the steps (2)
are shrunk; the resolutions and pp strings are the recipe's.
"""

import importlib.util
import math
import os

import jax
import numpy as np
import pytest
import tensorflow as tf

from big_vision_like import config as config_lib
from big_vision_like import train
from big_vision_like import tree_util
from big_vision_like.models import common as models_common
from big_vision_like.registry import MODELS
from big_vision_like.tools import convert

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TINY_VIT = dict(width=16, depth=1, mlp_dim=32, num_heads=2)


def _module():
  path = os.path.join(ROOT, "configs", "transfer.py")
  spec = importlib.util.spec_from_file_location("transfer_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


TRANSFER = _module()


def _config(arg):
  cfg = TRANSFER.get_config(arg)
  config_lib.check_and_fill(cfg, train.DEFAULTS)
  return cfg


@pytest.mark.parametrize("dataset", sorted(TRANSFER.DATASETS))
def test_every_dataset_builds_with_its_classes_and_schedule(dataset):
  task = TRANSFER.DATASETS[dataset]
  cfg = _config(f"dataset={dataset},model=bit_paper:R50x1")
  classes = task.classes
  assert cfg.model.num_classes == classes
  assert f"onehot({classes}," in cfg.input.pp
  # BiT-HyperRule: 500 steps under 20k examples, else 10k (with mixup).
  big = task.train_size >= 20_000
  assert cfg.total_steps == (10_000 if big else 500)
  assert cfg.schedule.warmup_steps == (500 if big else 100)
  assert cfg.schedule.mults == [0.1, 0.01, 0.001]
  assert (cfg.mixup is not None) == big
  crop = 128 if task.small else 384
  assert f"random_crop({crop})" in cfg.input.pp
  assert cfg.evals.test.data.split == task.test
  assert set(cfg.evals) == {"minival", "test", "fewshot", "knn",
                            "linear_probe"}
  assert cfg.model_load.dont_load == ("head/.*",)
  assert cfg.optax_name == "sgd" and cfg.lr == 0.003 and cfg.wd == 0.0


def test_options_and_bad_arguments():
  cfg = _config("model=vit:B/32,rule=big_vision,steps=100,res=224,frozen")
  assert cfg.total_steps == 100
  assert cfg.schedule[1] == (".*", None)  # Only the head trains.
  assert cfg.schedule[0][1]["decay_type"] == "cosine"
  assert cfg.schedule[0][1]["warmup_steps"] == 5  # 500 of 10k, scaled.
  assert "resize_small(261)|random_crop(224)" in cfg.input.pp
  assert cfg.grad_clip_norm == 1.0 and cfg.mixup is None
  for arg, match in (("dataset=imagenet", "dataset="),
                     ("model=resnet:R50", "model="), ("model=vit", "variant"),
                     ("rule=bit", "rule="), ("batch=0", "batch="),
                     ("dataset=imagefolder:/does/not/exist", "not exist")):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
      TRANSFER.get_config(arg)


def _tiny_vit_npz(path, *, image_size, num_classes):
  """Random tiny-ViT params saved as a big_vision `.npz`."""
  model = MODELS.get("vit")(num_classes, variant="B/16", pool_type="tok",
                            head_zeroinit=False, **TINY_VIT)
  image = np.zeros((1, image_size, image_size, 3), np.float32)
  params = jax.jit(model.init)(jax.random.key(7), image)["params"]
  convert.save_npz(jax.device_get(params), str(path))
  return tree_util.flatten(jax.device_get(params))


def _shrink(cfg):
  cfg.model.update(TINY_VIT)
  return cfg


def _check_results(results):
  for key in ("test/prec@1", "fewshot/transfer_1shot",
              "fewshot/transfer_25shot", "knn/prec@1_k10",
              "linear_probe/prec@1", "linear_probe/val_prec@1"):
    assert 0 <= results[key] <= 1, key
  assert np.isfinite(results["test/loss"])
  assert np.isfinite(results["train/loss"])


def _check_loaded(params, npz, atol):
  """Every non-head param equals the `.npz`'s (the posemb resampled)."""
  params = tree_util.flatten(jax.device_get(params))
  side = math.isqrt(params["pos_embedding"].shape[1])
  for name, value in params.items():
    if name.startswith("head/"):
      continue
    want = npz[name]
    if name == "pos_embedding":
      want = models_common.resample_posemb(want, side)
    np.testing.assert_allclose(value, want, atol=atol, err_msg=name)


def test_cifar10_from_npz_with_every_evaluator(mock_tfds, tmp_path):
  """A 224px checkpoint with a 1000-class head, fine-tuned at 384px."""
  npz = _tiny_vit_npz(tmp_path / "vit.npz", image_size=224, num_classes=1000)
  data_dir = mock_tfds("cifar10", splits=("train", "test"))
  cfg = _shrink(_config(f"dataset=cifar10,init={tmp_path / 'vit.npz'},"
                        f"batch=8,steps=2,data_dir={data_dir}"))
  assert "resize_small(448)|random_crop(384)" in cfg.input.pp
  state, results = train.train_and_evaluate(cfg, str(tmp_path / "w"))
  _check_results(results)
  # (The mock serves its 6 random examples for any split, train[98%:] too.)
  assert 0 <= results["minival/prec@1"] <= 1
  assert state["params"]["head"]["kernel"].shape == (16, 10)
  # The zero head passes no gradient back at step 1, so the backbone moves
  # by at most one tiny step: it is the checkpoint's.
  _check_loaded(state["params"], npz, atol=1e-3)


def _write_folder(root, splits=("train", "val", "test"), classes=10,
                  per_class=1, size=40):
  rng = np.random.default_rng(0)
  for split in splits:
    for cls in range(classes):
      os.makedirs(root / split / f"class{cls}")
      for i in range(per_class):
        image = rng.integers(0, 256, (size, size, 3), np.uint8)
        tf.io.write_file(str(root / split / f"class{cls}" / f"{i}.png"),
                         tf.io.encode_png(image))


def test_imagefolder_head_only(tmp_path):
  """Own data: classes and size counted from the folder; `frozen` trains the
  head alone, so the frozen-feature suite sees the checkpoint's features."""
  _write_folder(tmp_path / "data")  # 10 classes: the CIFAR test's shapes.
  npz = _tiny_vit_npz(tmp_path / "vit.npz", image_size=224, num_classes=1000)
  dataset = f"imagefolder:{tmp_path / 'data'}"
  cfg = _shrink(_config(f"dataset={dataset},init={tmp_path / 'vit.npz'},"
                        "frozen,batch=8,steps=2"))
  assert cfg.model.num_classes == 10
  # The CIFAR-10 test runs the few-shot and linear probes (slow to compile).
  for name in ("fewshot", "linear_probe"):
    del cfg.evals[name]
  assert (cfg.input.data.split, cfg.evals.minival.data.split) == ("train",
                                                                   "val")
  state, results = train.train_and_evaluate(cfg, str(tmp_path / "w"))
  for key in ("minival/prec@1", "test/prec@1", "knn/prec@1_k10"):
    assert 0 <= results[key] <= 1, key
  _check_loaded(state["params"], npz, atol=0)
  assert np.any(state["params"]["head"]["kernel"] != 0)  # The head trained.


def test_imagefolder_buckets_and_splits(tmp_path):
  """Small images take the BiT rule's 128px; no val split: train[90%:]."""
  _write_folder(tmp_path / "data", splits=("train",), size=32)
  cfg = _config(f"dataset=imagefolder:{tmp_path / 'data'},model=bit:R50x1")
  assert "resize(160)|random_crop(128)" in cfg.input.pp
  assert cfg.input.data.split == "train[:90%]"
  assert cfg.evals.minival.data.split == "train[90%:]"
  assert "test" not in cfg.evals and cfg.total_steps == 500
  assert cfg.evals.linear_probe.val_data is None
  os.rename(tmp_path / "data" / "train", tmp_path / "data" / "other")
  with pytest.raises(ValueError, match="needs a `train` split"):
    TRANSFER.get_config(f"dataset=imagefolder:{tmp_path / 'data'}")
