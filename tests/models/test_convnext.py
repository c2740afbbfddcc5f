"""Tests for big_vision_like.models.convnext.

Outputs are checked against a NumPy forward pass written here from the
papers (depthwise 7x7 conv with zero padding, LayerNorm eps 1e-6, exact
GELU, GRN, LayerScale), on param trees whose names the tests spell out.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from big_vision_like import registry, train, tree_util
from big_vision_like.models import common, convnext, two_towers
from tests.test_train import tiny_config

# Two stages of one block: every kind of layer, 16x16 images -> 4x4 -> 2x2.
TINY = dict(variant=None, depths=(1, 1), dims=(8, 16))


def _names_and_shapes(depths, dims, classes, *, v2=False, patch=4, k=7,
                      channels=3):
  """The documented param names and shapes, written out by hand."""
  out = {"stem/conv/kernel": (patch, patch, channels, dims[0]),
         "stem/conv/bias": (dims[0],), "stem/norm/scale": (dims[0],),
         "stem/norm/bias": (dims[0],), "head_norm/scale": (dims[-1],),
         "head_norm/bias": (dims[-1],)}
  for i, (depth, c) in enumerate(zip(depths, dims)):
    if i:
      ds = f"stage{i}/downsample/"
      out.update({ds + "norm/scale": (dims[i - 1],),
                  ds + "norm/bias": (dims[i - 1],),
                  ds + "conv/kernel": (2, 2, dims[i - 1], c),
                  ds + "conv/bias": (c,)})
    for j in range(depth):
      b = f"stage{i}/block{j}/"
      out.update({b + "dwconv/kernel": (k, k, 1, c), b + "dwconv/bias": (c,),
                  b + "norm/scale": (c,), b + "norm/bias": (c,),
                  b + "fc1/kernel": (c, 4 * c), b + "fc1/bias": (4 * c,),
                  b + "fc2/kernel": (4 * c, c), b + "fc2/bias": (c,)})
      if v2:
        out[b + "grn/gamma"] = out[b + "grn/beta"] = (4 * c,)
      else:
        out[b + "layerscale"] = (c,)
  if classes:
    out["head/kernel"], out["head/bias"] = (dims[-1], classes), (classes,)
  return out


def _shapes(model, res=224):
  img = jax.ShapeDtypeStruct((1, res, res, 3), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.key(0), img)["params"]
  return {n: tuple(p.shape) for n, p in
          zip(tree_util.tree_names(params), jax.tree.leaves(params))}


def _random_tree(shapes, seed=0):
  rng = np.random.default_rng(seed)
  tree = {}
  for name, shape in shapes.items():
    node = tree
    *path, leaf = name.split("/")
    for key in path:
      node = node.setdefault(key, {})
    node[leaf] = (0.3 * rng.standard_normal(shape)
                  + (leaf == "scale")).astype(np.float32)
  return tree


def _images(b=4, res=16, seed=0):
  return np.random.default_rng(seed).standard_normal(
      (b, res, res, 3)).astype(np.float32)


def _init(model, *inputs):
  # XLA:CPU compiles threefry-based inits slowly; rbg keys are fast.
  return jax.jit(model.init)(jax.random.key(0, impl="rbg"), *inputs)["params"]


@functools.lru_cache
def _apply(model):
  return jax.jit(model.apply, static_argnames="train")


# ----------------------------------------------------------------------------
# NumPy reference.


def _ln(x, p):
  mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-6) * p["scale"] + p["bias"]


def _patchify(x, p, k):
  """Non-overlapping k x k conv, stride k: [B, H, W, C] -> [B, H/k, W/k, O]."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // k, k, w // k, k, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // k, w // k, -1) @ p["kernel"].reshape(
      -1, p["kernel"].shape[-1]) + p["bias"]


def _dwconv(x, p):
  """Depthwise conv with zero 'same' padding, written as a sum of shifts."""
  k = p["kernel"].shape[0]
  h, w = x.shape[1:3]
  xp = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
  out = np.zeros_like(x)
  for dy in range(k):
    for dx in range(k):
      out += xp[:, dy:dy + h, dx:dx + w] * p["kernel"][dy, dx, 0]
  return out + p["bias"]


def _branch(x, p):
  """The residual branch of a block (before drop path)."""
  y = _ln(_dwconv(x, p["dwconv"]), p["norm"])
  y = y @ p["fc1"]["kernel"] + p["fc1"]["bias"]
  y = 0.5 * y * (1 + special.erf(y / math.sqrt(2)))  # exact GELU
  if "grn" in p:
    gx = np.sqrt((y**2).sum(axis=(1, 2), keepdims=True))
    y = y + p["grn"]["beta"] + p["grn"]["gamma"] * y * (
        gx / (gx.mean(-1, keepdims=True) + 1e-6))
  y = y @ p["fc2"]["kernel"] + p["fc2"]["bias"]
  return y * p["layerscale"] if "layerscale" in p else y


def _reference(params, x, patch=4):
  x = _ln(_patchify(x.astype(np.float64), params["stem"]["conv"], patch),
          params["stem"]["norm"])
  i = 0
  while f"stage{i}" in params:
    stage = params[f"stage{i}"]
    if "downsample" in stage:
      x = _patchify(_ln(x, stage["downsample"]["norm"]),
                    stage["downsample"]["conv"], 2)
    j = 0
    while f"block{j}" in stage:
      x, j = x + _branch(x, stage[f"block{j}"]), j + 1
    i += 1
  x = _ln(x.mean(axis=(1, 2)), params["head_norm"])
  return x @ params["head"]["kernel"] + params["head"]["bias"]


# ----------------------------------------------------------------------------
# Variants, names, counts.


def _count(depths, dims, classes=1000, v2=False, k=7, patch=4):
  """ConvNeXt's parameter count, from the architecture's description."""
  n = patch * patch * 3 * dims[0] + 3 * dims[0]  # stem conv + LayerNorm
  for i, (depth, c) in enumerate(zip(depths, dims)):
    if i:
      n += 2 * dims[i - 1] + 4 * dims[i - 1] * c + c  # LN + 2x2 conv
    block = k * k * c + c + 2 * c + 2 * (4 * c * c) + 4 * c + c
    block += 8 * c if v2 else c  # GRN gamma, beta / LayerScale
    n += depth * block
  return n + 2 * dims[-1] + dims[-1] * classes + classes


def test_convnext_t_names_and_published_size():
  depths, dims = (3, 3, 9, 3), (96, 192, 384, 768)
  shapes = _shapes(convnext.Model(1000, variant="T"))
  assert shapes == _names_and_shapes(depths, dims, 1000)
  count = sum(math.prod(s) for s in shapes.values())
  assert count == _count(depths, dims)
  assert abs(count / 1e6 - 28.6) < 0.05, count  # ConvNeXt-T: 28.6M.


@pytest.mark.parametrize("variant", ["XL", "V2-A", "V2-T"])
def test_other_variants_sizes(variant):
  depths, dims = convnext.SIZES[variant.removeprefix("V2-")]
  v2 = variant.startswith("V2-")
  shapes = _shapes(convnext.Model(1000, variant=variant), res=64)
  assert shapes == _names_and_shapes(depths, dims, 1000, v2=v2)
  count = sum(math.prod(s) for s in shapes.values())
  assert count == _count(depths, dims, v2=v2)
  assert abs(count / 1e6 - convnext.PUBLISHED_PARAMS_M[variant]) < 0.05


def test_variant_arguments_and_errors():
  m = convnext.Model(10, variant="V2-N")
  assert (m.depths, m.dims, m.grn, m.layerscale) == (
      (2, 2, 8, 2), (80, 160, 320, 640), True, None)
  m = convnext.Model(10, variant="B", drop_path=0.5)
  assert (m.dims[0], m.layerscale, m.grn, m.drop_path) == (128, 1e-6, False,
                                                           0.5)
  assert convnext.Model().dims == (96, 192, 384, 768)  # ConvNeXt-T.
  assert registry.MODELS.get("convnext") is convnext.Model
  with pytest.raises(ValueError, match=r"'V2-S'.*Known.*'XL'.*'V2-H'"):
    convnext.Model(10, variant="V2-S")  # V2 has no S.
  with pytest.raises(ValueError, match="same length"):
    _shapes(convnext.Model(10, variant=None, depths=(1, 1), dims=(8,)))


# ----------------------------------------------------------------------------
# Outputs.


@pytest.mark.parametrize("v2", [False, True])
def test_outputs_match_numpy_reference(v2):
  tree = _random_tree(_names_and_shapes((1, 1), (8, 16), 5, v2=v2))
  x = _images()
  model = convnext.Model(5, **TINY, grn=v2, layerscale=None if v2 else 1e-6)
  init = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
  params = common.merge_params(tree, init)  # Same names and shapes.
  logits, aux = _apply(model)({"params": params}, x)
  np.testing.assert_allclose(logits, _reference(tree, x), rtol=1e-4,
                             atol=1e-4)
  assert aux["stem"].shape == aux["stage0"].shape == (4, 4, 4, 8)
  assert aux["stage1"].shape == (4, 2, 2, 16)
  assert aux["pre_logits"].shape == (4, 16)
  np.testing.assert_array_equal(aux["logits"], logits)


def test_init_values_and_headless_model():
  x = _images(2)
  params = _init(convnext.Model(5, **TINY), x)
  np.testing.assert_array_equal(params["stage0"]["block0"]["layerscale"],
                                np.float32(1e-6))
  np.testing.assert_array_equal(params["head"]["kernel"], 0)  # zero init
  rep, aux = jax.eval_shape(convnext.Model(None, **TINY).apply,
                            {"params": params}, x)
  assert rep.shape == (2, 16) and "logits" not in aux


# ----------------------------------------------------------------------------
# Stochastic depth.


def test_drop_path_rates():
  rates = convnext.drop_path_rates((1, 2, 2), 0.4)
  np.testing.assert_allclose([r for st in rates for r in st],
                             [0.0, 0.1, 0.2, 0.3, 0.4])
  assert [len(r) for r in rates] == [1, 2, 2]


def test_drop_path_drops_whole_branches_per_example():
  """Train: each example is x (dropped) or x + branch / (1 - rate); eval:
  x + branch, whatever the rng."""
  p = _random_tree(_names_and_shapes((1,), (8,), None))["stage0"]["block0"]
  x = np.random.default_rng(1).standard_normal((64, 5, 5, 8)).astype(
      np.float32)
  block = convnext.Block(drop_path=0.25)
  run = jax.jit(block.apply, static_argnums=2)
  branch = _branch(x.astype(np.float64), p)
  for seed in (0, 1):
    y = run({"params": p}, x, False, rngs={"dropout": jax.random.key(seed)})
    np.testing.assert_allclose(y, x + branch, rtol=1e-4, atol=1e-4)
  y = np.asarray(run({"params": p}, x, True,
                     rngs={"dropout": jax.random.key(0)}))
  kept = []
  for i in range(len(x)):
    if np.allclose(y[i], x[i] + branch[i] / 0.75, rtol=1e-4, atol=1e-4):
      kept.append(True)
    else:
      np.testing.assert_array_equal(y[i], x[i])  # Dropped, nothing else.
      kept.append(False)
  assert 0.55 < np.mean(kept) < 0.95, np.mean(kept)


# ----------------------------------------------------------------------------
# Trainer and two-tower use.


def test_trains_two_steps_through_the_trainer(tmp_path):
  cfg = tiny_config(total_steps=2, evals={}, model_name="convnext",
                    schedule=dict(decay_type="cosine", warmup_steps=0))
  # 3x3 depthwise convs: XLA:CPU compiles their gradients faster.
  cfg.model = dict(num_classes=10, **TINY, patch_size=2, kernel_size=3,
                   drop_path=0.3)
  state, results = train.train_and_evaluate(cfg, str(tmp_path))
  assert int(state["step"]) == 2 and np.isfinite(results["train/loss"])
  assert state["params"]["stem"]["conv"]["kernel"].shape == (2, 2, 1, 8)


def test_image_tower_of_two_towers():
  model = two_towers.Model(
      image_model="convnext", image=dict(TINY, variant="V2-T"),
      text=dict(variant="mu", depth=1, vocab_size=50), out_dim=(6, 6))
  x = jnp.asarray(_images(2))
  text = jnp.array([[5, 9, 1, 1], [7, 3, 8, 1]], jnp.int32)
  (zimg, ztxt, aux), variables = jax.jit(model.init_with_output)(
      jax.random.key(0, impl="rbg"), x, text)
  img = variables["params"]["img"]
  assert img["head"]["kernel"].shape == (16, 6)
  assert "grn" in img["stage1"]["block0"]  # The variant's V2 blocks.
  assert zimg.shape == ztxt.shape == (2, 6)
  np.testing.assert_allclose(np.linalg.norm(zimg, axis=-1), 1, rtol=1e-5)
  assert aux["img/stage1"].shape == (2, 2, 2, 16)
