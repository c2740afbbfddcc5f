"""Tests for big_vision_like.models.mlp_mixer.

Outputs are checked against a NumPy re-implementation of big_vision's Mixer
written here from the paper (tanh GELU, LayerNorm eps 1e-6, token MLP on
the transposed tokens), on param trees whose names and shapes the tests
spell out themselves.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_like import checkpoint, registry, train, tree_util
from big_vision_like.models import common, mlp_mixer, two_towers
from tests.test_train import tiny_config

# A tiny Mixer: 16x16 images, 4x4 patches (16 tokens), 2 blocks.
TINY = dict(variant=None, patch_size=(4, 4), num_blocks=2, hidden_dim=8,
            tokens_mlp_dim=6, channels_mlp_dim=12)


def _names_and_shapes(d, blocks, tokens, t_mlp, c_mlp, patch, classes,
                      channels=3):
  """big_vision's Mixer param names and shapes, written out by hand."""
  out = {"stem/kernel": (patch, patch, channels, d), "stem/bias": (d,),
         "pre_head_layer_norm/scale": (d,), "pre_head_layer_norm/bias": (d,)}
  for i in range(blocks):
    b = f"MixerBlock_{i}/"
    for ln in ("LayerNorm_0", "LayerNorm_1"):
      out[f"{b}{ln}/scale"] = out[f"{b}{ln}/bias"] = (d,)
    for mlp, width, hidden in (("token_mixing", tokens, t_mlp),
                               ("channel_mixing", d, c_mlp)):
      out[f"{b}{mlp}/Dense_0/kernel"] = (width, hidden)
      out[f"{b}{mlp}/Dense_0/bias"] = (hidden,)
      out[f"{b}{mlp}/Dense_1/kernel"] = (hidden, width)
      out[f"{b}{mlp}/Dense_1/bias"] = (width,)
  if classes:
    out["head/kernel"], out["head/bias"] = (d, classes), (classes,)
  return out


def _shapes(model, res, channels=3):
  img = jax.ShapeDtypeStruct((1, res, res, channels), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.key(0), img)["params"]
  return {n: tuple(p.shape) for n, p in
          zip(tree_util.tree_names(params), jax.tree.leaves(params))}


# ----------------------------------------------------------------------------
# NumPy reference.


def _ln(x, p):
  x = x.astype(np.float64)
  mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-6) * p["scale"] + p["bias"]


def _gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def _mlp(x, p):
  h = _gelu_tanh(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
  return h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]


def _branches(x, p):
  """(token-mixing output, x after it, channel-mixing output) of a block."""
  tok = _mlp(_ln(x, p["LayerNorm_0"]).transpose(0, 2, 1),
             p["token_mixing"]).transpose(0, 2, 1)
  mid = x + tok
  return tok, mid, _mlp(_ln(mid, p["LayerNorm_1"]), p["channel_mixing"])


def _reference(params, images, patch):
  """logits of big_vision's Mixer, in float64."""
  b, h, w, c = images.shape
  ph, pw = patch
  x = images.reshape(b, h // ph, ph, w // pw, pw, c).transpose(0, 1, 3, 2, 4, 5)
  x = x.reshape(b, (h // ph) * (w // pw), ph * pw * c)  # [B, L, p*p*C]
  k = params["stem"]["kernel"]
  x = x @ k.reshape(-1, k.shape[-1]) + params["stem"]["bias"]  # [B, L, D]
  i = 0
  while f"MixerBlock_{i}" in params:
    _, mid, chan = _branches(x, params[f"MixerBlock_{i}"])
    x, i = mid + chan, i + 1
  x = _ln(x, params["pre_head_layer_norm"]).mean(1)
  return x @ params["head"]["kernel"] + params["head"]["bias"]


def _random_tree(shapes, seed=0):
  """A nested dict of random float32 arrays with the given '/' names."""
  rng = np.random.default_rng(seed)
  tree = {}
  for name, shape in shapes.items():
    node = tree
    *path, leaf = name.split("/")
    for k in path:
      node = node.setdefault(k, {})
    scale = 1.0 if leaf == "scale" else 0.5
    node[leaf] = (rng.standard_normal(shape) * scale
                  + (leaf == "scale")).astype(np.float32)
  return tree


def _images(b=4, res=16, seed=0):
  return np.random.default_rng(seed).standard_normal(
      (b, res, res, 3)).astype(np.float32)


@functools.lru_cache
def _apply(model):
  return jax.jit(model.apply, static_argnames="train")


# ----------------------------------------------------------------------------
# Variants, names, shapes, parameter counts.


@pytest.mark.parametrize("variant,published_m", [("B/16", 59.9),
                                                 ("L/16", 208.2)])
def test_variant_names_shapes_and_published_size(variant, published_m):
  """Nothing is materialised: shapes through jax.eval_shape."""
  d, blocks, t_mlp, c_mlp = {"B": (768, 12, 384, 3072),
                             "L": (1024, 24, 512, 4096)}[variant[0]]
  shapes = _shapes(mlp_mixer.Model(1000, variant=variant), 224)
  assert shapes == _names_and_shapes(d, blocks, 196, t_mlp, c_mlp, 16, 1000)
  count = sum(math.prod(s) for s in shapes.values())
  assert abs(count / 1e6 - published_m) < 0.05, count
  assert mlp_mixer.PUBLISHED_PARAMS_M[variant] == published_m


def test_variants_arguments_and_errors():
  m = mlp_mixer.Model(10, variant="S/32")
  assert (m.hidden_dim, m.num_blocks, m.tokens_mlp_dim,
          m.channels_mlp_dim, m.patch_size) == (512, 8, 256, 2048, (32, 32))
  m = mlp_mixer.Model(10, variant="H/14", num_blocks=2, patch_size=(7, 7))
  assert (m.hidden_dim, m.num_blocks, m.patch_size) == (1280, 2, (7, 7))
  assert mlp_mixer.Model(10).hidden_dim == 768  # Default variant B/16.
  assert registry.MODELS.get("mlp_mixer") is mlp_mixer.Model
  with pytest.raises(ValueError, match=r"'X'.*Known: \['S', 'B', 'L', 'H'\]"):
    mlp_mixer.Model(10, variant="X/16")
  with pytest.raises(ValueError, match="Bad patch size 'p'"):
    mlp_mixer.Model(10, variant="B/p")
  with pytest.raises(TypeError):
    mlp_mixer.Model(10, hiden_dim=3)


# ----------------------------------------------------------------------------
# big_vision .npz checkpoints and outputs.


@pytest.mark.parametrize("prefix", ["", "params/"])
def test_big_vision_npz_loads_and_gives_its_outputs(tmp_path, prefix):
  shapes = _names_and_shapes(8, 2, 16, 6, 12, 4, 5)
  tree = _random_tree(shapes)
  path = str(tmp_path / "mixer.npz")
  np.savez(path, **{prefix + n: a for n, a in
                    zip(tree_util.tree_names(tree), jax.tree.leaves(tree))})
  loaded = checkpoint.load_params(path)
  model = mlp_mixer.Model(5, **TINY)
  x = _images()
  init = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
  merged = common.merge_params(loaded, init)  # Same names and shapes.
  logits, aux = _apply(model)({"params": merged}, x)
  ref = _reference(tree, x.astype(np.float64), (4, 4))
  np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-4)
  assert aux["stem"].shape == (4, 4, 4, 8)
  assert aux["input_tokens"].shape == aux["block_1"].shape == (4, 16, 8)
  assert aux["pre_logits"].shape == (4, 8)
  np.testing.assert_array_equal(aux["logits"], logits)


def test_head_options_and_headless_output():
  x = _images(2)
  model = mlp_mixer.Model(5, **TINY, head_bias_init=-6.9)
  (logits, _), variables = jax.jit(model.init_with_output)(
      jax.random.key(0, impl="rbg"), x)
  params = variables["params"]
  np.testing.assert_array_equal(params["head"]["kernel"], 0)  # zero init
  np.testing.assert_allclose(params["head"]["bias"], -6.9)
  np.testing.assert_allclose(logits, -6.9, rtol=1e-6)
  assert not mlp_mixer.Model(5, **TINY, head_zeroinit=False).head_zeroinit
  headless = {k: v for k, v in params.items() if k != "head"}
  rep, aux = jax.eval_shape(mlp_mixer.Model(None, **TINY).apply,
                            {"params": headless}, x)
  assert rep.shape == (2, 8) and "logits" not in aux


# ----------------------------------------------------------------------------
# Stochastic depth.


def _tiny_tree(seed=1):
  return _random_tree(_names_and_shapes(8, 2, 16, 6, 12, 4, 5), seed)


def test_stoch_depth_rates_and_eval_is_deterministic():
  assert mlp_mixer.stoch_depth_rates(5, 0.2) == pytest.approx(
      [0.0, 0.05, 0.1, 0.15, 0.2])
  assert mlp_mixer.stoch_depth_rates(1, 0.3) == [0.0]
  tree, x = _tiny_tree(), _images()
  model = mlp_mixer.Model(5, **TINY, stoch_depth=0.9)
  outs = [_apply(model)({"params": tree}, x, train=False,
                        rngs={"dropout": jax.random.key(s)})[0]
          for s in (0, 1)]
  np.testing.assert_array_equal(outs[0], outs[1])
  np.testing.assert_allclose(outs[0], _reference(tree, x, (4, 4)),
                             rtol=1e-4, atol=1e-4)


def test_stoch_depth_rate_one_drops_the_last_block():
  """2 blocks, stoch_depth=1: block 0 never drops, block 1 always does."""
  tree, x = _tiny_tree(), _images()
  model = mlp_mixer.Model(5, **TINY, stoch_depth=1.0)
  _, aux = _apply(model)({"params": tree}, x, train=True,
                         rngs={"dropout": jax.random.key(3)})
  np.testing.assert_array_equal(aux["block_1"], aux["block_0"])
  one_block = {k: v for k, v in tree.items() if k != "MixerBlock_1"}
  np.testing.assert_allclose(aux["logits"], _reference(one_block, x, (4, 4)),
                             rtol=1e-4, atol=1e-4)


def test_stoch_depth_drops_whole_branches_per_example():
  """Every example's block output is x, x + tok, x + chan' or x + tok + chan
  (no rescaling, as big_vision), each branch dropped independently."""
  p = _tiny_tree()["MixerBlock_0"]
  x = np.random.default_rng(2).standard_normal((64, 16, 8)).astype(np.float32)
  block = mlp_mixer.MixerBlock(6, 12, drop_p=0.5)
  y = np.asarray(jax.jit(functools.partial(block.apply, train=True))(
      {"params": p}, x, rngs={"dropout": jax.random.key(0)}))
  _, mid, chan = _branches(x, p)
  _, _, chan_skip = _branches(x, {**p, "token_mixing": jax.tree.map(
      np.zeros_like, p["token_mixing"])})  # channel MLP on x itself
  candidates = {(0, 0): x, (1, 0): mid, (0, 1): x + chan_skip,
                (1, 1): mid + chan}
  seen = []
  for i in range(len(x)):
    match = [k for k, c in candidates.items()
             if np.allclose(y[i], c[i], rtol=1e-4, atol=1e-4)]
    assert len(match) == 1, (i, match)
    seen.append(match[0])
  kept = np.asarray(seen).mean(0)  # Fraction kept per branch, ~0.5.
  assert np.all((kept > 0.25) & (kept < 0.75)), kept


# ----------------------------------------------------------------------------
# Trainer and two-tower use.


def test_trains_two_steps_through_the_trainer(tmp_path):
  cfg = tiny_config(total_steps=2, evals={}, model_name="mlp_mixer",
                    schedule=dict(decay_type="cosine", warmup_steps=0))
  cfg.model = dict(num_classes=10, **TINY, stoch_depth=0.5)
  state, results = train.train_and_evaluate(cfg, str(tmp_path))
  assert int(state["step"]) == 2 and np.isfinite(results["train/loss"])
  assert state["params"]["stem"]["kernel"].shape == (4, 4, 1, 8)


def test_image_tower_of_two_towers():
  model = two_towers.Model(
      image_model="mlp_mixer", image=TINY,
      text=dict(variant="mu", depth=1, vocab_size=50), out_dim=(6, 6))
  x = jnp.asarray(_images(2))
  text = jnp.array([[5, 9, 1, 1], [7, 3, 8, 1]], jnp.int32)
  (zimg, ztxt, aux), variables = jax.jit(model.init_with_output)(
      jax.random.key(0, impl="rbg"), x, text)
  img = variables["params"]["img"]
  assert img["head"]["kernel"].shape == (8, 6)
  assert "MixerBlock_1" in img
  assert zimg.shape == ztxt.shape == (2, 6)
  np.testing.assert_allclose(np.linalg.norm(zimg, axis=-1), 1, rtol=1e-5)
  assert aux["img/pre_logits"].shape == (2, 8)
