"""Every config file builds; the contrastive recipes train a few steps."""

import glob
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_like import config as config_lib
from big_vision_like import optim
from big_vision_like import step as step_lib
from big_vision_like import train
from big_vision_like import tree_util
from big_vision_like.registry import MODELS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))


load = config_lib.load


def load_small(name, arg):
  """The config with one block per tower: what these tests check does not
  depend on depth, and compiling (most of their time) does."""
  cfg = load(name, arg)
  cfg.model.image.depth = cfg.model.text.depth = 1
  return cfg


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_builds_and_passes_the_key_check(path):
  name = os.path.basename(path)[:-3]
  cfg = load(name)
  config_lib.check_and_fill(cfg, train.DEFAULTS)
  module_doc = open(path).read()
  assert "python -m big_vision_like.train" in module_doc  # The command.


def test_swapping_the_contrastive_loss_is_one_word(tmp_path):
  """`:loss=softmax` changes the loss and its init only; it trains (the
  sigmoid default trains in tests/recipes/test_image_text_recipes.py and
  tests/test_accumulation.py)."""
  sigmoid = load_small("siglip_shapes", "short").to_dict()
  cfg = load_small("siglip_shapes", "short,loss=softmax")
  softmax = cfg.to_dict()
  assert (sigmoid["loss"], softmax["loss"]) == ("sigmoid_loss", "softmax_loss")
  for c in (sigmoid, softmax):
    del c["loss"], c["model"]["temperature_init"]
  assert sigmoid["model"].pop("bias_init") == -10.0
  assert sigmoid == softmax  # Nothing else differs.
  cfg.input.data = dict(name="bvl_shapes/small", split="train")
  for ev in cfg.evals.values():
    ev.data = dict(name="bvl_shapes/small", split="test")
  state, results = train.train_and_evaluate(cfg, str(tmp_path))
  assert np.isfinite(results["train/loss"])
  assert 0 <= results["zeroshot/prec@1"] <= 1
  assert 0 <= results["retrieval/dedup_i2t_recall@1"] <= 1
  assert "b" not in state["params"]


def _flat(tree):
  """{'/'-joined name: host array} of a params tree."""
  tree = jax.device_get(tree)
  return dict(zip(tree_util.tree_names(tree), jax.tree.leaves(tree)))


def _lit(tmp_path, arg, name, **overrides):
  """Trains `lit_shapes:short,{arg}` 2 steps on small shapes; final state.

  Weight decay is off, so any change of a parameter is a gradient update.
  """
  cfg = load_small("lit_shapes", f"short,{arg}")
  cfg.input.data = dict(name="bvl_shapes/small", split="train")
  cfg.evals = {}
  cfg.wd = 0.0
  cfg.total_steps = cfg.ckpt_steps = 2
  cfg.update(overrides)
  state, _ = train.train_and_evaluate(cfg, str(tmp_path / name))
  return state


def _lit_and_initial(tmp_path, arg):
  """(LiT's trained state, LiT's initial params).

  With lr 0 every update is zero, so that run ends with the params it
  started from, which are those of the trained run: same config and seed,
  and the initialisation does not depend on the learning rate.
  """
  state = _lit(tmp_path, arg, "lit")
  initial = _lit(tmp_path, arg, "lit_lr0", lr=0.0)["params"]
  return state, _flat(initial)


def test_lit_locks_the_image_tower(tmp_path):
  pre = load_small("siglip_shapes", "short")
  pre.input.data = dict(name="bvl_shapes/small", split="train")
  pre.evals = {}
  pretrained, _ = train.train_and_evaluate(pre, str(tmp_path / "pre"))
  state, initial = _lit_and_initial(tmp_path, f"img_init={tmp_path}/pre:img")
  final = _flat(state["params"])
  loaded = {f"img/{k}": v
            for k, v in _flat(pretrained["params"]["img"]).items()}
  assert "img/head/kernel" in loaded  # The SigLIP image head, loaded too.
  assert {k for k in final if k.startswith("img/")} == set(loaded)
  for name, value in loaded.items():  # Locked: exactly what was loaded.
    np.testing.assert_array_equal(final[name], value, err_msg=name)
  # Everything else trains, from LiT's own initial values.
  learning = [k for k in final if not k.startswith("img/")]
  assert "t" in learning and "b" in learning and len(learning) > 10
  unchanged = [k for k in learning if np.array_equal(final[k], initial[k])]
  assert not unchanged, unchanged
  opt_shapes = {x.shape for x in jax.tree.leaves(state["opt"])}
  assert loaded["img/embedding/kernel"].shape not in opt_shapes  # No state.


def _classifier_npz(path, image_kw, num_classes=24):
  """Writes a ViT classifier's params (random) as a big_vision .npz."""
  vit = MODELS.get("vit")(num_classes=num_classes, **image_kw)
  params = vit.init(jax.random.key(7), jnp.zeros((1, 32, 32, 3)))["params"]
  flat = _flat(params)
  np.savez(path, **flat)
  return flat


@pytest.mark.parametrize("img_head", ["none", "train"])
def test_lit_from_a_classifier_locks_what_it_loads(tmp_path, img_head):
  image_kw = load_small("lit_shapes", "short").model.image.to_dict()
  npz = tmp_path / "vit.npz"
  classifier = _classifier_npz(npz, image_kw)
  body = {f"img/{k}": v for k, v in classifier.items()
          if not k.startswith("head/")}
  arg = f"img_init={npz},img_head={img_head}"
  if img_head == "train":
    state, initial = _lit_and_initial(tmp_path, arg)
  else:
    state = _lit(tmp_path, arg, "lit")
  final = _flat(state["params"])
  img = {k for k in final if k.startswith("img/")}
  head = {"img/head/kernel", "img/head/bias"} if img_head == "train" else set()
  assert img == set(body) | head  # The classifier's head is not loaded.
  for name, value in body.items():  # Locked: exactly what was loaded.
    np.testing.assert_array_equal(final[name], value, err_msg=name)
  if img_head == "train":  # A new image head, trained.
    assert final["img/head/kernel"].shape == (image_kw["width"], 64)
    for name in head:
      assert not np.array_equal(final[name], initial[name]), name
  else:  # The text embeds into the pre-logits space.
    assert final["txt/head/kernel"].shape[-1] == image_kw["width"]


@pytest.mark.parametrize("img_head", ["load", "none", "train"])
def test_lit_locks_no_parameter_it_does_not_load(img_head):
  cfg = load("lit_shapes", f"short,img_head={img_head}")
  model = step_lib.build_model(cfg.model_name, cfg.model)
  image = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  text = jax.ShapeDtypeStruct((1, 16), jnp.int32)
  params = jax.eval_shape(model.init, jax.random.key(0), image, text)
  frozen = _flat(optim.frozen_mask(cfg, params["params"]))
  skip = list(cfg.model_load.dont_load)

  def loaded(name):  # model_init maps a subtree; dont_load is relative to it.
    top, _, rest = name.partition("/")
    return (top in cfg.model_init
            and not any(re.fullmatch(p, rest) for p in skip))

  locked = {name for name, f in frozen.items() if f}
  # The whole image tower is locked, but for a head it does not load.
  assert locked == {n for n in frozen if n.startswith("img/") and loaded(n)}
  assert ("img/head/kernel" in frozen) == (img_head != "none")
  assert ("img/head/kernel" in locked) == (img_head == "load")
  assert "img/embedding/kernel" in locked


def test_lit_rejects_an_unknown_img_head():
  with pytest.raises(ValueError, match="img_head='frozen'"):
    load("lit_shapes", "img_head=frozen")
