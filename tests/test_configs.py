"""Every config file builds; the contrastive recipes train a few steps."""

import glob
import importlib.util
import os

import jax
import numpy as np
import pytest

from big_vision_like import config as config_lib
from big_vision_like import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


def load(name, arg=None):
  path = os.path.join(ROOT, "configs", f"{name}.py")
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_builds_and_passes_the_key_check(path):
  name = os.path.basename(path)[:-3]
  cfg = load(name)
  config_lib.check_and_fill(cfg, train.DEFAULTS)
  module_doc = open(path).read()
  assert "python -m big_vision_like.train" in module_doc  # The command.


@pytest.mark.parametrize("loss", ["sigmoid", "softmax"])
def test_swapping_the_contrastive_loss_is_one_word(tmp_path, loss):
  cfg = load("siglip_shapes", f"short,loss={loss}")
  cfg.input.data = dict(name="bvl_shapes/small", split="train")
  for ev in cfg.evals.values():
    ev.data = dict(name="bvl_shapes/small", split="test")
  state, results = train.train_and_evaluate(cfg, str(tmp_path))
  assert cfg.loss == f"{loss}_loss"
  assert np.isfinite(results["train/loss"])
  assert 0 <= results["zeroshot/prec@1"] <= 1
  assert 0 <= results["retrieval/dedup_i2t_recall@1"] <= 1
  assert ("b" in state["params"]) == (loss == "sigmoid")


def test_lit_locks_the_image_tower(tmp_path):
  pre = load("siglip_shapes", "short")
  pre.input.data = dict(name="bvl_shapes/small", split="train")
  pre.evals = {}
  pretrained, _ = train.train_and_evaluate(pre, str(tmp_path / "pre"))
  cfg = load("lit_shapes", f"short,img_init={tmp_path}/pre:img")
  cfg.input.data = dict(name="bvl_shapes/small", split="train")
  cfg.evals = {}
  state, _ = train.train_and_evaluate(cfg, str(tmp_path / "lit"))
  img0 = jax.device_get(pretrained["params"]["img"])
  jax.tree.map(np.testing.assert_array_equal,
               jax.device_get(state["params"]["img"]), img0)
  txt0 = jax.device_get(pretrained["params"]["txt"])
  changed = jax.tree.leaves(jax.tree.map(
      lambda a, b: not np.allclose(a, b), jax.device_get(state["params"]["txt"]),
      txt0))
  assert any(changed)  # The text tower trains (from scratch here).
  opt_shapes = {x.shape for x in jax.tree.leaves(state["opt"])}
  kernel = state["params"]["img"]["embedding"]["kernel"]
  assert kernel.shape not in opt_shapes  # No optimizer state for img.
