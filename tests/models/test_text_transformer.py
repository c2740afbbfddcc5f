"""Tests for big_vision_like.models.text_transformer."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_like import registry
from big_vision_like.models import text_transformer, vit

TINY = {"variant": "mu", "depth": 2, "vocab_size": 50}  # width 32, 2 heads
# Two texts of length 6, "sticky" EOS padding with id 1.
TEXT = jnp.array([[5, 9, 13, 1, 1, 1], [7, 3, 1, 1, 1, 1]], jnp.int32)


def _flat(params):
  return {"/".join(k): v for k, v in
          flax.traverse_util.flatten_dict(flax.core.unfreeze(params)).items()}


def _init(model, text=TEXT):
  return model.init(jax.random.PRNGKey(0), text)["params"]


def test_registered():
  assert registry.MODELS.get("text_transformer") is text_transformer.Model


def test_param_names_and_shapes_b():
  model = text_transformer.Model(768, variant="B")
  text = jax.ShapeDtypeStruct((1, 64), jnp.int32)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), text)["params"]
  shapes = {k: v.shape for k, v in _flat(params).items()}
  assert shapes["Embed_0/embedding"] == (32_000, 768)
  assert shapes["pos_embedding"] == (1, 64, 768)
  blk = "Encoder_0/encoderblock_11/"
  assert shapes[blk + "MultiHeadDotProductAttention_0/query/kernel"] == (
      768, 12, 64)
  assert shapes[blk + "MlpBlock_0/Dense_0/kernel"] == (768, 3072)
  assert shapes["Encoder_0/encoder_norm/scale"] == (768,)
  assert shapes["head/kernel"] == (768, 768)
  assert "Encoder_0/encoderblock_12/LayerNorm_0/scale" not in shapes
  assert not any(k.startswith("Transformer") for k in shapes)


def test_outputs_and_aux():
  model = text_transformer.Model(7, **TINY)
  params = _init(model)
  keys = _flat(params)
  assert keys["Embed_0/embedding"].shape == (50, 32)
  assert abs(float(jnp.std(keys["pos_embedding"])) * np.sqrt(32) - 1) < 0.3
  out, aux = model.apply({"params": params}, TEXT)
  assert out.shape == (2, 7) and float(jnp.abs(out).sum()) > 0
  np.testing.assert_array_equal(out, aux["logits"])
  assert aux["embedded"].shape == aux["transformed"].shape == (2, 6, 32)
  assert aux["encoder_1"].shape == (2, 6, 32)
  assert aux["pre_logits"].shape == (2, 32)
  np.testing.assert_allclose(aux["embedded"][0, 0],
                             keys["Embed_0/embedding"][5])
  headless = text_transformer.Model(**TINY)
  assert "head" not in _init(headless)
  out, aux = headless.apply({"params": _init(headless)}, TEXT)
  assert out.shape == (2, 32) and "logits" not in aux


def test_no_causal_mask():
  # Changing the last token changes the first position's output.
  model = text_transformer.Model(pool_type="first", **TINY)
  params = _init(model)
  a, _ = model.apply({"params": params}, TEXT)
  b, _ = model.apply({"params": params}, TEXT.at[:, -1].set(4))
  assert not np.allclose(a, b)


def test_causal_mask():
  model = text_transformer.Model(causal=True, **TINY)
  params = _init(model)
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(
      jnp.shape, _init(text_transformer.Model(**TINY)))
  _, a = model.apply({"params": params}, TEXT)
  _, b = model.apply({"params": params}, TEXT.at[:, -1].set(4))
  # Changing the last token changes only the last position.
  np.testing.assert_allclose(a["transformed"][:, :-1],
                             b["transformed"][:, :-1], atol=1e-6)
  assert not np.allclose(a["transformed"][:, -1], b["transformed"][:, -1])
  # Scanned and unscanned agree.
  scanned = text_transformer.Model(causal=True, scan=True, **TINY)
  stacked = {**params, "Encoder_0": vit.unscanned_to_scan(params["Encoder_0"])}
  out_s, _ = scanned.apply({"params": stacked}, TEXT)
  np.testing.assert_allclose(out_s, a["pre_logits"], atol=1e-5)


def test_causal_mask_with_padding_mask():
  # Trailing padding is invisible to a causal model anyway: "last" with
  # pad_id pools the last real token, as CLIP's EOT pooling does.
  text = jnp.array([[5, 9, 13, 2, 0, 0, 0]], jnp.int32)
  causal = text_transformer.Model(causal=True, **TINY)
  both = text_transformer.Model(causal=True, pad_id=0, **TINY)
  params = _init(causal, text)
  _, ref = causal.apply({"params": params}, text)
  out, _ = both.apply({"params": params}, text)
  np.testing.assert_allclose(out, ref["transformed"][:, 3], atol=1e-6)
  # Both masks apply: a pad id inside the text is not attended to.
  inner = text.at[0, 1].set(0)
  out, _ = both.apply({"params": params}, inner)
  _, ref = causal.apply({"params": params}, inner)
  assert not np.allclose(out, ref["transformed"][:, 3], atol=1e-4)


def test_gelu_and_norm_eps_options():
  base = text_transformer.Model(**TINY)
  params = _init(base)
  ref, _ = base.apply({"params": params}, TEXT)
  same, _ = text_transformer.Model(gelu="tanh", norm_eps=1e-6, **TINY).apply(
      {"params": params}, TEXT)
  np.testing.assert_array_equal(same, ref)  # The defaults.
  for opt in ({"gelu": "erf"}, {"gelu": "quick"}, {"norm_eps": 0.1}):
    out, _ = text_transformer.Model(**opt, **TINY).apply(
        {"params": params}, TEXT)
    assert not np.allclose(out, ref, atol=1e-6), opt


@pytest.mark.parametrize("pool", ["last", "first", "mean", "max", "map"])
def test_pool_types(pool):
  model = text_transformer.Model(pool_type=pool, **TINY)
  params = _init(model)
  out, aux = model.apply({"params": params}, TEXT)
  assert out.shape == (2, 32)
  x = aux["transformed"]  # [B, L, D]
  want = {"last": x[:, -1], "first": x[:, 0], "mean": x.mean(1),
          "max": x.max(1)}.get(pool)
  if want is not None:
    np.testing.assert_allclose(out, want, rtol=1e-6)
  has_map = any(k.startswith("MAPHead_0/") for k in _flat(params))
  assert has_map == (pool == "map")
  if pool == "map":
    assert _flat(params)["MAPHead_0/probe"].shape == (1, 1, 32)


def test_unknown_pool_and_variant():
  with pytest.raises(ValueError, match="Unknown pool_type 'tok'"):
    _init(text_transformer.Model(pool_type="tok", **TINY))
  with pytest.raises(ValueError, match="patch size"):
    text_transformer.Model(variant="B/16")
  model = text_transformer.Model(variant="So400m", depth=1)
  width, _, mlp, heads = vit.VARIANTS["So400m"]
  assert (model.width, model.mlp_dim, model.num_heads) == (width, mlp, heads)


@pytest.mark.parametrize("pool", ["last", "mean", "max", "map"])
def test_pad_mask_ignores_padding(pool):
  # With pad_id=0, what the padding embeds to does not change the output.
  text = jnp.array([[5, 9, 13, 2, 0, 0, 0]], jnp.int32)
  model = text_transformer.Model(pool_type=pool, pad_id=0, **TINY)
  params = _init(model, text)
  emb = params["Embed_0"]["embedding"]
  other_pad = {**params, "Embed_0": {"embedding": emb.at[0].set(100.0)}}
  out, aux = model.apply({"params": params}, text)
  out2, _ = model.apply({"params": other_pad}, text)
  np.testing.assert_allclose(out, out2, atol=1e-5)
  if pool == "last":  # the last real token, position 3
    np.testing.assert_allclose(out, aux["transformed"][:, 3], rtol=1e-6)
  if pool == "mean":
    np.testing.assert_allclose(out, aux["transformed"][:, :4].mean(1),
                               rtol=1e-5, atol=1e-6)
  if pool == "max":
    np.testing.assert_allclose(out, aux["transformed"][:, :4].max(1))
  # Without pad_id, padding is attended to.
  unmasked = text_transformer.Model(pool_type=pool, **TINY)
  a, _ = unmasked.apply({"params": params}, text)
  b, _ = unmasked.apply({"params": other_pad}, text)
  assert not np.allclose(a, b, atol=1e-3)


def test_scan_matches_unscanned_and_dropout():
  kw = dict(num_classes=5, pad_id=3, **TINY)  # masks TEXT[1, 1]
  unscanned = text_transformer.Model(**kw)
  scanned = text_transformer.Model(scan=True, **kw)
  params = _init(unscanned)
  stacked = {**params, "Encoder_0": vit.unscanned_to_scan(params["Encoder_0"])}
  assert jax.tree.map(jnp.shape, stacked) == jax.tree.map(
      jnp.shape, _init(scanned))
  out_u, _ = unscanned.apply({"params": params}, TEXT)
  out_s, _ = scanned.apply({"params": stacked}, TEXT)
  np.testing.assert_allclose(out_s, out_u, atol=1e-5)
  noisy = text_transformer.Model(dropout=0.5, **kw)
  ev, _ = noisy.apply({"params": params}, TEXT)
  np.testing.assert_allclose(ev, out_u, atol=1e-6)
  tr, _ = noisy.apply({"params": params}, TEXT, train=True,
                      rngs={"dropout": jax.random.PRNGKey(1)})
  assert not np.allclose(tr, out_u)
