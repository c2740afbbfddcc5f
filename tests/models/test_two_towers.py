"""Tests for big_vision_like.models.two_towers."""

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from big_vision_like import registry
from big_vision_like.models import two_towers

IMG = jnp.linspace(-1, 1, 2 * 16 * 16 * 3).reshape(2, 16, 16, 3)  # [B, H, W, C]
TEXT = jnp.array([[5, 9, 13, 1, 1, 1], [7, 3, 1, 1, 1, 1]], jnp.int32)  # [B, L]
TINY = dict(image=dict(variant="mu/4", depth=1),
            text=dict(variant="mu", depth=1, vocab_size=50),
            out_dim=(8, 8), temperature_init=10.0, bias_init=-10.0)


def _flat(params):
  return {"/".join(k): v for k, v in
          flax.traverse_util.flatten_dict(flax.core.unfreeze(params)).items()}


def _init(model, *inputs):
  rng = jax.random.PRNGKey(0)
  return model.init({"params": rng, "dropout": rng}, *inputs,
                    train=False)["params"]


def test_registered():
  assert registry.MODELS.get("two_towers") is two_towers.Model


def test_siglip_b16_names_and_shapes():
  model = two_towers.Model(
      image=dict(variant="B/16", pool_type="map"),
      text=dict(variant="B", vocab_size=32_000), out_dim=(None, 768),
      temperature_init=10.0, bias_init=-10.0)
  img = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  txt = jax.ShapeDtypeStruct((1, 64), jnp.int32)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), img, txt)
  shapes = {k: v.shape for k, v in _flat(params["params"]).items()}
  assert shapes["img/embedding/kernel"] == (16, 16, 3, 768)
  assert shapes["img/pos_embedding"] == (1, 196, 768)
  assert shapes["img/MAPHead_0/probe"] == (1, 1, 768)
  mlp = "img/Transformer/encoderblock_11/MlpBlock_0/"
  assert shapes[mlp + "Dense_0/kernel"] == (768, 3072)
  assert not any(k.startswith("img/head") for k in shapes)
  assert shapes["txt/Embed_0/embedding"] == (32_000, 768)
  assert shapes["txt/pos_embedding"] == (1, 64, 768)
  att = "txt/Encoder_0/encoderblock_11/MultiHeadDotProductAttention_0/"
  assert shapes[att + "out/kernel"] == (12, 64, 768)
  assert "txt/Encoder_0/encoderblock_12/LayerNorm_0/scale" not in shapes
  assert shapes["txt/Encoder_0/encoder_norm/bias"] == (768,)
  assert shapes["txt/head/kernel"] == (768, 768)
  assert shapes["t"] == shapes["b"] == (1,)
  assert {k.split("/")[0] for k in shapes} == {"img", "txt", "t", "b"}


def test_embeddings_temperature_bias_and_aux():
  model = two_towers.Model(**TINY)
  params = _init(model, IMG, TEXT)
  np.testing.assert_allclose(params["t"], [np.log(10.0)], rtol=1e-6)
  np.testing.assert_allclose(params["b"], [-10.0])
  zimg, ztxt, aux = model.apply({"params": params}, IMG, TEXT)
  assert zimg.shape == ztxt.shape == (2, 8)
  np.testing.assert_allclose(jnp.linalg.norm(zimg, axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(jnp.linalg.norm(ztxt, axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(aux["t"], jnp.exp(params["t"]), rtol=1e-6)
  np.testing.assert_allclose(aux["t/parameterized"], params["t"])
  np.testing.assert_allclose(aux["b"], params["b"])
  # The towers' aux dicts, prefixed; embeddings = normalised tower outputs.
  assert aux["img/pre_logits"].shape == (2, 32)
  assert aux["txt/transformed"].shape == (2, 6, 32)
  logits = aux["img/logits"]
  np.testing.assert_allclose(
      zimg, logits / jnp.linalg.norm(logits, axis=-1, keepdims=True),
      rtol=1e-5)
  np.testing.assert_allclose(aux["txt/norm"],
                             jnp.linalg.norm(aux["txt/logits"], axis=-1),
                             rtol=1e-5)


def test_towers_optional():
  model = two_towers.Model(**TINY)
  params = _init(model, IMG, TEXT)
  zimg, ztxt, aux = model.apply({"params": params}, IMG, TEXT)
  zi, zt, aux_i = model.apply({"params": params}, IMG)
  assert zt is None and not any(k.startswith("txt/") for k in aux_i)
  np.testing.assert_allclose(zi, zimg, rtol=1e-6)
  zi, zt, aux_t = model.apply({"params": params}, None, TEXT)
  assert zi is None and not any(k.startswith("img/") for k in aux_t)
  np.testing.assert_allclose(zt, ztxt, rtol=1e-6)
  # A text-only init has no image tower params; no bias without bias_init.
  no_bias = two_towers.Model(**{**TINY, "bias_init": None})
  p = _init(no_bias, None, TEXT)
  assert set(p) == {"txt", "t"}
  assert no_bias.apply({"params": p}, None, TEXT)[2]["b"] is None


def test_trainer_style_calls_and_config_dicts():
  # Config dicts as ConfigDicts; dropout in both towers; no image head.
  image = ml_collections.ConfigDict(dict(variant="mu/4", depth=1,
                                         pool_type="map", dropout=0.5))
  text = ml_collections.ConfigDict(dict(variant="mu", depth=1,
                                        vocab_size=50, dropout=0.5))
  model = two_towers.Model(image=image, text=text, out_dim=(None, 32))
  params = _init(model, IMG, TEXT)
  assert "head" not in params["img"] and "b" not in params
  ev = model.apply({"params": params}, IMG, TEXT, train=False)
  tr = model.apply({"params": params}, IMG, TEXT, train=True,
                   rngs={"dropout": jax.random.PRNGKey(3)})
  assert not np.allclose(ev[0], tr[0]) and not np.allclose(ev[1], tr[1])
  np.testing.assert_allclose(jnp.linalg.norm(tr[0], axis=-1), 1.0, rtol=1e-5)


def test_no_image_head_embeds_a_classifiers_pre_logits():
  """out_dim=(None, D) (LiT from a classifier): zimg = its pre-logits."""
  image = dict(variant="mu/4", depth=1)
  classifier = registry.MODELS.get("vit")(num_classes=10, **image)
  vit_params = _init(classifier, IMG)
  _, vit_aux = classifier.apply({"params": vit_params}, IMG)
  pre_logits = vit_aux["pre_logits"]  # [B, 32]
  model = two_towers.Model(image=image, text=TINY["text"], out_dim=(None, 32))
  params = _init(model, IMG, TEXT)
  assert set(params["img"]) == set(vit_params) - {"head"}
  params["img"] = {k: v for k, v in vit_params.items() if k != "head"}
  zimg, ztxt, _ = model.apply({"params": params}, IMG, TEXT)
  np.testing.assert_allclose(
      zimg, pre_logits / np.linalg.norm(pre_logits, axis=-1, keepdims=True),
      rtol=1e-5, atol=1e-6)
  assert ztxt.shape == (2, 32)


def test_image_head_not_zero_initialised():
  model = two_towers.Model(**TINY)
  params = _init(model, IMG, None)
  assert float(jnp.abs(params["img"]["head"]["kernel"]).sum()) > 0
  explicit = two_towers.Model(**{**TINY, "image": dict(
      TINY["image"], head_zeroinit=True)})
  assert float(jnp.abs(_init(explicit, IMG, None)["img"]["head"][
      "kernel"]).sum()) == 0


def test_bad_config():
  with pytest.raises(ValueError, match="out_dim"):
    two_towers.Model(image=dict(num_classes=3))
  with pytest.raises(ValueError, match="out_dim"):
    two_towers.Model(out_dim=(1, 2, 3))
  with pytest.raises(TypeError, match=r"text tower \('text_transformer'\)"):
    two_towers.Model(text=dict(widht=3))
  with pytest.raises(KeyError, match="Unknown model 'vitt'"):
    two_towers.Model(image_model="vitt")
  model = two_towers.Model(out_dim=16)
  assert model.out_dim == (16, 16)


def test_nfnet_image_tower():
  """Any registered image model can be the image tower (NFNet here)."""
  model = two_towers.Model(
      image_model="nfnet",
      image=dict(variant="F0", width_mult=0.0625, depths=(1, 1, 1, 1)),
      text=TINY["text"], out_dim=(8, 8), temperature_init=10.0,
      bias_init=-10.0)
  rng = jax.random.key(0, impl="rbg")  # Fast to compile on XLA:CPU.
  # Jitted: op-by-op, a NFNet init and apply take ~20 s on XLA:CPU.
  params = jax.jit(model.init)({"params": rng, "dropout": rng}, IMG,
                               TEXT)["params"]
  names = _flat(params)
  assert "img/stem/conv0/kernel" in names and "img/head/kernel" in names
  assert names["img/head/kernel"].shape[-1] == 8
  zimg, ztxt, aux = jax.jit(model.apply)({"params": params}, IMG, TEXT)
  assert zimg.shape == ztxt.shape == (2, 8)
  np.testing.assert_allclose(jnp.linalg.norm(zimg, axis=-1), 1.0, rtol=1e-5)
  assert aux["img/pre_logits"].shape[0] == 2
