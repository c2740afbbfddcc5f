"""Tests for big_vision_like.models.bit and models.bit_paper."""

import functools
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_like import checkpoint, registry, train, tree_util
from big_vision_like.models import bit, bit_paper, common, two_towers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
MODULES = {"bit": bit, "bit_paper": bit_paper}
# Half width (32 root channels: GroupNorm's 32 groups), a non-first unit in
# stage 2 (unit names without a projection).
TINY = {"width": 0.5, "depth": (1, 2, 1, 1)}
# One stage of one unit: the trainer and two_towers tests check the wiring,
# and compiling (most of their time) grows with the number of units.
ONE_UNIT = {"width": 0.5, "depth": [1]}
X = jnp.asarray(np.random.default_rng(0).standard_normal((2, 16, 16, 3)),
                jnp.float32)
# Published parameter counts (ImageNet-1k heads). `bit` R50x1 is a ResNet-50
# v1 with two parameters per normalised channel, as torchvision's
# resnet50 (25,557,032); `bit_paper`'s are timm's `resnetv2_*_bit` cards.
PUBLISHED_PARAMS_M = {("bit", "R50x1"): 25.557,
                      ("bit_paper", "R50x1"): 25.55,
                      ("bit_paper", "R101x3"): 387.93,
                      ("bit_paper", "R152x4"): 936.53}


def _names_shapes(params):
  return dict(zip(tree_util.tree_names(params),
                  (tuple(p.shape) for p in jax.tree.leaves(params))))


@functools.lru_cache
def _jitted(model):
  """jit of params -> ((loss, (out, aux)), grads) on X: one compile serves
  the forward and backward checks (XLA:CPU compiles slowly)."""

  def loss(params):
    out, aux = model.apply({"params": params}, X)
    return jnp.mean(jnp.square(out)), (out, aux)

  return jax.jit(jax.value_and_grad(loss, has_aux=True))


def _apply(model, params):
  """(out, aux) of `model` on X."""
  (_, out_aux), _ = _jitted(model)(params)
  return out_aux


def _random_params(model, *inputs, seed=1):
  """Random values for every param of `model` (no init compile): normal
  kernels (standardised anyway), scales around 1, biases around 0."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), *inputs)["params"]
  rng = np.random.default_rng(seed)

  def value(name, s):
    x = rng.standard_normal(s.shape).astype(np.float32)
    return 1 + 0.3 * x if name.endswith("scale") else 0.3 * x

  return tree_util.tree_map_with_names(value, shapes)


@functools.lru_cache
def _tiny(name):
  """(model, random numpy params) of the TINY `name` with 5 classes."""
  model = MODULES[name].Model(5, **TINY)
  return model, _random_params(model, X)


# ---------------------------------------------------------------- sizes


def _count(blocks, w, classes, pre_act):
  """Parameter count by hand: convs have no bias, a norm has 2 per channel."""
  n = 49 * 3 * w + (0 if pre_act else 2 * w)  # Root conv (+ gn_root).
  cin = w
  for i, units in enumerate(blocks):
    m = w * 2 ** i
    for j in range(units):
      n += cin * m + 9 * m * m + m * 4 * m  # conv1, conv2, conv3
      n += 2 * (cin + m + m) if pre_act else 2 * (m + m + 4 * m)  # gn1..3
      if j == 0:  # conv_proj (+ gn_proj)
        n += cin * 4 * m + (0 if pre_act else 2 * 4 * m)
      cin = 4 * m
  return n + (2 * cin if pre_act else 0) + cin * classes + classes


@pytest.mark.parametrize("name,variant", [
    ("bit", "R50x1"), ("bit_paper", "R50x1"), ("bit_paper", "R101x3"),
    ("bit_paper", "R152x4")])
def test_variants_have_published_names_shapes_and_sizes(name, variant):
  depth, width = {"R50x1": (50, 1), "R101x3": (101, 3),
                  "R152x4": (152, 4)}[variant]
  blocks, w, c = bit.BLOCKS[depth], 64 * width, 2048 * width
  img = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  model = registry.MODELS.get(name)(1000, variant=variant)
  assert (model.depth, model.width) == (depth, width)
  shapes = _names_shapes(jax.eval_shape(model.init, jax.random.key(0),
                                        img)["params"])
  if name == "bit":
    last = f"block4/unit{blocks[3]}"
    assert shapes["conv_root/kernel"] == (7, 7, 3, w)
    assert shapes["gn_root/scale"] == shapes["gn_root/bias"] == (w,)
    assert shapes["block1/unit1/conv_proj/kernel"] == (1, 1, w, 4 * w)
    assert shapes["block1/unit1/gn_proj/scale"] == (4 * w,)
    assert shapes["block2/unit1/conv2/kernel"] == (3, 3, 2 * w, 2 * w)
    assert shapes[f"{last}/conv3/kernel"] == (1, 1, c // 4, c)
    assert shapes[f"{last}/gn3/bias"] == (c,)
    units = {n.split("/")[1] for n in shapes if n.startswith("block3/")}
    assert units == {f"unit{j + 1}" for j in range(blocks[2])}
  else:
    last = f"block4/unit{blocks[3]:02d}"
    assert shapes["root_block/conv_root/kernel"] == (7, 7, 3, w)
    assert shapes["block1/unit01/gn1/scale"] == (1, 1, 1, w)
    assert shapes["block1/unit01/conv_proj/kernel"] == (1, 1, w, 4 * w)
    assert shapes["block2/unit01/gn1/bias"] == (1, 1, 1, 4 * w)
    assert shapes["block2/unit01/conv2/kernel"] == (3, 3, 2 * w, 2 * w)
    assert shapes[f"{last}/conv3/kernel"] == (1, 1, c // 4, c)
    assert shapes[f"{last}/gn3/scale"] == (1, 1, 1, c // 4)
    assert shapes["norm-pre-head/scale"] == (1, 1, 1, c)
    units = {n.split("/")[1] for n in shapes if n.startswith("block3/")}
    assert units == {f"unit{j + 1:02d}" for j in range(blocks[2])}
    assert "block2/unit02/conv_proj/kernel" not in shapes
  assert shapes["head/kernel"] == (c, 1000)
  count = sum(int(np.prod(s)) for s in shapes.values())
  assert count == _count(blocks, w, 1000, pre_act=name == "bit_paper")
  assert abs(count / 1e6 - PUBLISHED_PARAMS_M[name, variant]) < 0.01
  if (name, variant) == ("bit", "R50x1"):
    assert count == 25_557_032  # torchvision's resnet50.
  if (name, variant) == ("bit_paper", "R50x1"):  # BiT-M: 21,843 classes.
    assert _count(blocks, w, 21843, True) == count + 2049 * 20843


def test_depths_variants_and_errors():
  assert bit.block_counts(101) == (3, 4, 23, 3)
  assert bit.block_counts([1, 2, 3]) == (1, 2, 3)
  assert bit_paper.Model(variant="R152x4").width == 4
  assert bit.Model(variant="R50x1", depth=[2, 2]).depth == (2, 2)
  assert registry.MODELS.get("bit") is bit.Model
  assert registry.MODELS.get("bit_paper") is bit_paper.Model
  with pytest.raises(ValueError, match=r"Unknown BiT depth 34.*26, 50"):
    bit.Model(depth=34)
  with pytest.raises(ValueError, match=r"depth \[3, 0\].*>= 1"):
    bit_paper.Model(depth=[3, 0])
  with pytest.raises(ValueError, match=r"width=0.3 gives 19 root channels"):
    bit.Model(width=0.3)
  with pytest.raises(ValueError, match="Unknown BiT variant 'R34x1'"):
    bit_paper.Model(variant="R34x1")
  with pytest.raises(ValueError, match="Unknown root_pool_pad 'zeros'"):
    bit_paper.Model(root_pool_pad="zeros")


# ---------------------------------------------------------------- numerics


def _np_group_norm(x, groups, eps, scale, bias):
  b, h, w, c = x.shape
  g = x.reshape(b, h, w, groups, c // groups).astype(np.float64)
  mean = g.mean(axis=(1, 2, 4), keepdims=True)
  var = ((g - mean) ** 2).mean(axis=(1, 2, 4), keepdims=True)
  y = ((g - mean) / np.sqrt(var + eps)).reshape(x.shape)
  return y * scale.reshape(-1) + bias.reshape(-1)


def _np_conv(x, w, stride, pad):
  """Direct convolution; pad = ((top, bottom), (left, right))."""
  x = np.pad(x.astype(np.float64), ((0, 0), *pad, (0, 0)))
  kh, kw = w.shape[:2]
  oh = (x.shape[1] - kh) // stride + 1
  ow = (x.shape[2] - kw) // stride + 1
  out = 0
  for dy in range(kh):
    for dx in range(kw):
      patch = x[:, dy:dy + stride * oh:stride, dx:dx + stride * ow:stride]
      out = out + patch @ w[dy, dx].astype(np.float64)
  return out


def _same_pad(size, k, s):
  total = max((-(-size // s) - 1) * s + k - size, 0)
  return (total // 2, total - total // 2)


def test_weight_standardisation_and_group_norm_match_numpy():
  rng = np.random.default_rng(0)
  kernel = rng.standard_normal((3, 3, 8, 4)) * rng.uniform(1e-5, 1, 4)
  m = kernel.mean(axis=(0, 1, 2))
  v1 = (kernel - m) / (kernel.std(axis=(0, 1, 2)) + 1e-5)  # bit: eps on std
  v2 = (kernel - m) / np.sqrt(kernel.var(axis=(0, 1, 2)) + 1e-10)  # paper
  k32 = jnp.asarray(kernel, jnp.float32)
  np.testing.assert_allclose(bit.standardize(k32), v1, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(bit_paper.standardize_kernel(k32), v2,
                             rtol=1e-4, atol=1e-5)

  x = rng.standard_normal((2, 5, 5, 64)) * 3 + 1
  scale, bias = rng.standard_normal((2, 64))
  gn = bit_paper.GroupNorm()
  y = gn.apply({"params": {"scale": scale.reshape(1, 1, 1, -1),
                           "bias": bias.reshape(1, 1, 1, -1)}},
               jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(y, _np_group_norm(x, 32, 1e-5, scale, bias),
                             rtol=1e-4, atol=1e-4)
  y = bit._gn("gn").apply({"params": {"scale": scale, "bias": bias}},
                          jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(y, _np_group_norm(x, 32, 1e-6, scale, bias),
                             rtol=1e-4, atol=1e-4)
  # A channel group of constants: eps decides (0 / sqrt(eps) = 0, not nan).
  x[..., :2] = 7.0
  y = gn.apply({"params": {"scale": np.ones((1, 1, 1, 64)),
                           "bias": np.zeros((1, 1, 1, 64))}},
               jnp.asarray(x, jnp.float32))
  np.testing.assert_array_equal(np.asarray(y)[..., :2], 0.0)


@pytest.mark.parametrize("name,k,stride", [
    ("bit", 7, 2), ("bit", 3, 2), ("bit", 1, 2),
    ("bit_paper", 7, 2), ("bit_paper", 3, 2), ("bit_paper", 1, 2)])
def test_std_conv_matches_numpy(name, k, stride):
  """Standardised kernel + padding: big_vision's TF "SAME" (bit, 1x1 convs
  of bit_paper) or k // 2 on every side (bit_paper's 7x7 and 3x3)."""
  rng = np.random.default_rng(k)
  x = rng.standard_normal((2, 11, 10, 4))
  kernel = rng.standard_normal((k, k, 4, 6))
  m, var = kernel.mean(axis=(0, 1, 2)), kernel.var(axis=(0, 1, 2))
  if name == "bit":
    w, pad = (kernel - m) / (np.sqrt(var) + 1e-5), "SAME"
  else:
    w = (kernel - m) / np.sqrt(var + 1e-10)
    pad = "SAME" if k == 1 else k // 2
  conv = bit.StdConv(6, k, stride, pad, bit.standardize if name == "bit"
                     else bit_paper.standardize_kernel)
  y = conv.apply({"params": {"kernel": kernel}}, jnp.asarray(x, jnp.float32))
  pads = ((_same_pad(11, k, stride), _same_pad(10, k, stride))
          if pad == "SAME" else ((pad, pad), (pad, pad)))
  np.testing.assert_allclose(y, _np_conv(x, w, stride, pads), rtol=1e-4,
                             atol=1e-4)


def test_root_pool_padding():
  """-inf padding (big_vision) vs zero padding (original BiT code, timm)."""
  x = -1 - np.random.default_rng(0).uniform(size=(1, 5, 5, 1)).astype(
      np.float32)  # All < 0.
  for pad, value in (("-inf", -np.inf), ("zero", 0.0)):
    got = np.asarray(bit_paper.max_pool_3x3s2(jnp.asarray(x), pad))
    p = np.pad(x[0, ..., 0], 1, constant_values=value)  # [7, 7]
    want = [[p[2 * i:2 * i + 3, 2 * j:2 * j + 3].max() for j in range(3)]
            for i in range(3)]
    np.testing.assert_array_equal(got[0, ..., 0], want)
  # Only the centre window sees no padding.
  assert (got == 0).sum() == 8


# ---------------------------------------------------------------- forward


@pytest.mark.parametrize("name", ["bit", "bit_paper"])
def test_forward_aux_and_gradients(name):
  model, params = _tiny(name)
  logits, aux = _apply(model, params)
  assert logits.shape == (2, 5)
  assert aux["stem"].shape == (2, 4, 4, 32)
  assert [aux[f"stage{i}"].shape for i in (1, 2, 3, 4)] == [
      (2, 4, 4, 128), (2, 2, 2, 256), (2, 1, 1, 512), (2, 1, 1, 1024)]
  if name == "bit":
    np.testing.assert_array_equal(aux["pre_logits_2d"], aux["stage4"])
  np.testing.assert_allclose(aux["pre_logits"],
                             aux["pre_logits_2d"].mean(axis=(1, 2)),
                             rtol=1e-6, atol=1e-6)
  # The head is linear: averaging logits_2d over positions gives logits.
  np.testing.assert_allclose(aux["logits_2d"].mean(axis=(1, 2)), logits,
                             rtol=1e-5, atol=1e-5)
  if name == "bit_paper":
    np.testing.assert_array_equal(aux["stage2/unit02"], aux["stage2"])
    np.testing.assert_array_equal(
        aux["pre_logits_2d"], np.maximum(aux["norm_pre_head"], 0))

  _, grads = _jitted(model)(params)
  for n, g in zip(tree_util.tree_names(grads), jax.tree.leaves(grads)):
    assert np.all(np.isfinite(g)) and np.any(g != 0), n
  headless, aux = jax.eval_shape(MODULES[name].Model(None, **TINY).apply,
                                 {"params": params}, X)
  assert headless.shape == (2, 1024) and "logits" not in aux


@pytest.mark.parametrize("name", ["bit", "bit_paper"])
def test_bfloat16_matmuls(name):
  model = MODULES[name].Model(5, **ONE_UNIT)
  params = _random_params(model, X)
  model16 = model.clone(dtype_mm="bfloat16")
  out, _ = jax.jit(model16.apply)({"params": params}, X)
  ref, _ = jax.jit(model.apply)({"params": params}, X)
  jaxpr = str(jax.make_jaxpr(model16.apply)({"params": params}, X))
  convs = [ln.split("=")[0] for ln in jaxpr.splitlines()
           if "= conv_general_dilated" in ln]
  assert len(convs) == 5 and all("bf16[" in c for c in convs), convs
  assert not np.array_equal(out, ref)
  np.testing.assert_allclose(np.asarray(out, np.float32), ref, rtol=0.1,
                             atol=0.05 * np.abs(ref).max())


# ---------------------------------------------------------------- loading


def _write_npz(path, flat):
  np.savez(path, **{k: np.asarray(v) for k, v in flat.items()})
  return str(path)


@pytest.mark.parametrize("name", ["bit", "bit_paper"])
def test_big_vision_npz_loads_and_gives_its_outputs(tmp_path, name):
  """A big_vision `.npz` (flat `/`-joined names, here with the `params/`
  prefix some files carry) loads by name into a fresh model."""
  model, params = _tiny(name)
  flat = dict(zip(tree_util.tree_names(params), jax.tree.leaves(params)))
  path = _write_npz(tmp_path / "bv.npz",
                    {f"params/{k}": v for k, v in flat.items()})
  init = jax.tree.map(np.zeros_like, params)
  loaded = common.load_into(init, checkpoint.load_params(path), model=name)
  want, _ = _apply(model, params)
  got, _ = _apply(model, loaded)
  np.testing.assert_array_equal(got, want)


def _release_names(params):
  """The BiT paper's file layout (`resnet/...`) of bit_paper params, written
  from the original code's naming, independently of `from_big_transfer`."""
  out = {}
  for name, v in zip(tree_util.tree_names(params), jax.tree.leaves(params)):
    v, parts = np.asarray(v), name.split("/")
    if parts[0] == "root_block":
      out["resnet/root_block/standardized_conv2d/kernel"] = v
    elif parts[0] == "norm-pre-head":
      leaf = {"scale": "gamma", "bias": "beta"}[parts[1]]
      out[f"resnet/group_norm/{leaf}"] = v.reshape(-1)
    elif parts[0] == "head":
      out[f"resnet/head/conv2d/{parts[1]}"] = (
          v[None, None] if parts[1] == "kernel" else v)
    else:
      block, unit, layer, leaf = parts
      unit_path = f"resnet/{block}/{unit}"
      if layer == "conv_proj":
        out[f"{unit_path}/a/proj/standardized_conv2d/kernel"] = v
      elif layer.startswith("conv"):
        part = "abc"[int(layer[-1]) - 1]
        out[f"{unit_path}/{part}/standardized_conv2d/kernel"] = v
      else:
        part = "abc"[int(layer[-1]) - 1]
        gn = {"scale": "gamma", "bias": "beta"}[leaf]
        out[f"{unit_path}/{part}/group_norm/{gn}"] = v.reshape(-1)
  return out


def test_bit_release_npz_loads_and_gives_its_outputs(tmp_path):
  model, params = _tiny("bit_paper")
  release = _release_names(params)
  # Some release files name a conv `standardized_conv2d_1`.
  k = "resnet/block2/unit02/b/standardized_conv2d/kernel"
  release[k.replace("conv2d/", "conv2d_1/")] = release.pop(k)
  path = _write_npz(tmp_path / "BiT-M-R-tiny.npz", release)
  loaded = bit_paper.from_big_transfer(checkpoint.load_params(path))
  got, _ = _apply(model, common.merge_params(loaded, params))
  want, _ = _apply(model, params)
  np.testing.assert_array_equal(got, want)
  # What config.model_init does with model_name "bit_paper".
  got, _ = _apply(model, common.load_into(params, path, model="bit_paper"))
  np.testing.assert_array_equal(got, want)
  assert bit_paper.from_big_transfer(params) is params  # Already bv names.
  with pytest.raises(ValueError, match=r"resnet/block1/unit01/d/group_norm"):
    bit_paper.from_big_transfer(
        {**release, "resnet/block1/unit01/d/group_norm/gamma": np.ones(3)})


# ---------------------------------------------------------------- trainer


def _digits_config(model_name):
  spec = importlib.util.spec_from_file_location(
      "vit_digits", os.path.join(ROOT, "configs", "vit_digits.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  cfg = module.get_config("short,tune")
  cfg.total_steps = cfg.ckpt_steps = 2
  cfg.input.batch_size = 16
  cfg.model_name = model_name
  cfg.model = dict(num_classes=10, **ONE_UNIT)
  cfg.evals = {}
  return cfg


@pytest.mark.parametrize("name", ["bit", "bit_paper"])
def test_trains_two_steps(tmp_path, name):
  state, results = train.train_and_evaluate(_digits_config(name),
                                            str(tmp_path))
  assert int(state["step"]) == 2 and np.isfinite(results["train/loss"])
  params = jax.device_get(state["params"])
  model = MODULES[name].Model(10, **ONE_UNIT)
  img = jax.ShapeDtypeStruct((1, 16, 16, 1), jnp.float32)  # Digits: grey.
  assert _names_shapes(params) == _names_shapes(
      jax.eval_shape(model.init, jax.random.key(0), img)["params"])
  assert np.any(params["head"]["kernel"] != 0)  # Zero-initialised: updated.


@pytest.mark.parametrize("name", ["bit", "bit_paper"])
def test_image_tower_of_two_towers(name):
  model = two_towers.Model(
      image_model=name, image=ONE_UNIT,
      text=dict(variant="mu", depth=1, vocab_size=50), out_dim=(8, 8),
      temperature_init=10.0, bias_init=-10.0)
  text = jnp.array([[5, 9, 13, 1], [7, 3, 1, 1]], jnp.int32)
  params = _random_params(model, X, text)
  shapes = _names_shapes(params)
  stem = "root_block/conv_root" if name == "bit_paper" else "conv_root"
  assert shapes[f"img/{stem}/kernel"] == (7, 7, 3, 32)
  assert shapes["img/head/kernel"] == (128, 8)
  zimg, ztxt, aux = jax.jit(model.apply)({"params": params}, X, text)
  assert zimg.shape == ztxt.shape == (2, 8)
  np.testing.assert_allclose(np.linalg.norm(zimg, axis=-1), 1.0, rtol=1e-5)
  assert aux["img/pre_logits"].shape == (2, 128)
  assert aux["img/stage1"].shape == (2, 4, 4, 128)
