"""The ViT options of other papers: DeiT's distillation token, registers,
FLIP's patch dropout, qk LayerNorm, SwiGLU, no-bias encoders (vit.py,
vit_tokens.py). Each is checked against an independent reference: NumPy
formulas on the flax-named params, or the encoder run on hand-built tokens.
"""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_like import optim
from big_vision_like.models import two_towers, vit, vit_tokens

IMG = jnp.linspace(-1, 1, 2 * 16 * 16 * 3).reshape(2, 16, 16, 3)  # [B, H, W, C]
TINY = {"variant": "mu/4", "depth": 1}  # width 32, 2 heads, mlp 128, 16 patches
RNGS = lambda s: {"dropout": jax.random.PRNGKey(s)}


def _flat(params):
  return {"/".join(k): v for k, v in
          flax.traverse_util.flatten_dict(flax.core.unfreeze(params)).items()}


def _init(model, img=IMG):
  return jax.jit(model.init)(jax.random.PRNGKey(0), img)["params"]


_JITTED = {}


def _apply(model, params, img=IMG, train=False, rng=None):
  """`model.apply`, jitted once per model (fewer compiles than eager)."""
  if model not in _JITTED:
    _JITTED[model] = jax.jit(model.apply, static_argnames="train")
  rngs = None if rng is None else RNGS(rng)
  return _JITTED[model]({"params": params}, img, train=train, rngs=rngs)


def _perturbed(params, seed=0):
  """Every param moved by N(0, 0.1): non-trivial biases, scales, tokens."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: np.asarray(
      x + 0.1 * rng.standard_normal(x.shape), np.float32), params)


# ------------------------------------------------------- NumPy reference


def _np_ln(x, p, eps=1e-6):
  x = np.asarray(x, np.float64)
  y = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
  return y * p["scale"] + p.get("bias", 0.0)


def _np_dense(x, p):
  return x @ np.asarray(p["kernel"], np.float64) + p.get("bias", 0.0)


def _np_attention(p, x, heads=2):
  """Self-attention of x [B, L, D] from flax-named params (qk norm if any)."""
  proj = lambda n: (np.einsum("bld,dhe->blhe", x, p[n]["kernel"])
                    + p[n].get("bias", 0.0))
  q, k, v = proj("query"), proj("key"), proj("value")  # [B, L, H, d]
  if "query_ln" in p:  # LayerNorm over the head dim, scale only.
    q, k = _np_ln(q, p["query_ln"]), _np_ln(k, p["key_ln"])
  logits = np.einsum("bthe,bshe->bhts", q, k) / np.sqrt(q.shape[-1])
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  y = np.einsum("bhts,bshe->bthe", w, v)
  return np.einsum("bthe,hed->btd", y, p["out"]["kernel"]) + p["out"].get(
      "bias", 0.0)


def _np_mlp(p, x):
  if "Dense_gate" in p:  # silu(gate) * up -> out.
    g = _np_dense(x, p["Dense_gate"])
    return _np_dense(g / (1 + np.exp(-g)) * _np_dense(x, p["Dense_up"]),
                     p["Dense_out"])
  h = _np_dense(x, p["Dense_0"])
  h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))
  return _np_dense(h, p["Dense_1"])


def _np_encoder(params, x):
  """The pre-LN encoder on tokens x [B, L, D], then encoder_norm."""
  x = np.asarray(x, np.float64)
  t = jax.tree.map(lambda a: np.asarray(a, np.float64), params["Transformer"])
  for i in range(len(t) - 1):
    p = t[f"encoderblock_{i}"]
    x = x + _np_attention(p["MultiHeadDotProductAttention_0"],
                          _np_ln(x, p["LayerNorm_0"]))
    x = x + _np_mlp(p["MlpBlock_0"], _np_ln(x, p["LayerNorm_1"]))
  return _np_ln(x, t["encoder_norm"])


# ------------------------------------------------------- defaults


def test_options_off_by_default():
  # (test_vit.py checks the default model's exact big_vision param names.)
  off = {"dist_token": False, "num_registers": 0, "patch_dropout": 0.0,
         "qk_norm": False, "use_bias": True, "mlp_type": "gelu"}
  kw = dict(num_classes=5, pool_type="tok", head_zeroinit=False, **TINY)
  assert vit.Model(**kw) == vit.Model(**kw, **off)
  model = vit.Model(**kw)
  params = _perturbed(_init(model))
  # Train mode needs no rng (no patch dropout) and adds no outputs.
  out, aux = _apply(model, params, train=True)
  np.testing.assert_array_equal(out, _apply(model, params)[0])
  assert not {"dist_logits", "dist_pre_logits", "registers",
              "kept_patches"} & set(aux)
  assert aux["encoded"].shape == (2, 17, 32)


@pytest.mark.parametrize("kw,match", [
    ({"dist_token": True}, "dist_token=True needs pool_type='tok'"),
    ({"dist_token": True, "pool_type": "map"}, "pool_type='map'"),
    ({"num_registers": -1}, "num_registers=-1"),
    ({"num_registers": True}, "num_registers=True"),
    ({"num_registers": 1.5}, "num_registers=1.5"),
    ({"patch_dropout": 1.0}, r"patch_dropout=1\.0"),
    ({"patch_dropout": -0.1}, r"patch_dropout=-0\.1"),
    ({"mlp_type": "geglu"}, "Unknown mlp_type 'geglu'"),
])
def test_bad_options_name_the_argument(kw, match):
  with pytest.raises(ValueError, match=match):
    vit.Model(5, **{**TINY, **kw})  # At construction, before any init.


# ------------------------------------------------------- encoder options


@pytest.mark.parametrize("opts", [
    {"qk_norm": True}, {"mlp_type": "swiglu", "mlp_dim": 48},
    {"qk_norm": True, "mlp_type": "swiglu", "use_bias": False}])
def test_encoder_options_match_numpy(opts):
  model = vit.Model(5, pool_type="gap", head_zeroinit=False, **TINY, **opts)
  params = _init(model)
  keys = _flat(params)
  att = "Transformer/encoderblock_0/MultiHeadDotProductAttention_0/"
  mlp = "Transformer/encoderblock_0/MlpBlock_0/"
  has_bias = opts.get("use_bias", True)
  assert (att + "query/bias" in keys) == has_bias
  assert (att + "out/bias" in keys) == has_bias
  assert "Transformer/encoderblock_0/LayerNorm_0/bias" in keys  # Kept.
  if opts.get("qk_norm"):  # flax's normalize_qk: per head dim, no bias.
    assert keys[att + "query_ln/scale"].shape == (16,)
    assert keys[att + "key_ln/scale"].shape == (16,)
    assert att + "query_ln/bias" not in keys
  else:
    assert att + "query_ln/scale" not in keys
  if opts.get("mlp_type") == "swiglu":  # Hidden size as given (timm).
    assert {k[len(mlp):] for k in keys if k.startswith(mlp)} == {
        f"Dense_{n}/{w}" for n in ("gate", "up", "out")
        for w in (("kernel", "bias") if has_bias else ("kernel",))}
    hidden = opts.get("mlp_dim", 128)
    assert keys[mlp + "Dense_gate/kernel"].shape == (32, hidden)
    assert keys[mlp + "Dense_up/kernel"].shape == (32, hidden)
    assert keys[mlp + "Dense_out/kernel"].shape == (hidden, 32)
  else:
    assert (mlp + "Dense_0/bias" in keys) == has_bias
  params = _perturbed(params)
  out, aux = _apply(model, params)
  want = _np_encoder(params, aux["with_posemb"])
  np.testing.assert_allclose(aux["encoded"], want, atol=2e-5, rtol=1e-5)
  # The option changes what is computed: the plain block differs.
  plain = {k: v for k, v in opts.items() if k == "mlp_dim"}
  if not opts.get("mlp_type") and has_bias:
    ref, _ = _apply(vit.Model(5, pool_type="gap", **TINY, **plain), {
        **params, "Transformer": _strip_qk_ln(params["Transformer"])})
    assert not np.allclose(ref, out, atol=1e-4)


def _strip_qk_ln(tree):
  """The encoder params without query_ln/key_ln (a plain model's)."""
  if not isinstance(tree, dict):
    return tree
  return {k: _strip_qk_ln(v) for k, v in tree.items()
          if k not in ("query_ln", "key_ln")}


def test_encoder_options_scanned_equal_unscanned():
  kw = dict(num_classes=5, pool_type="tok", head_zeroinit=False, qk_norm=True,
            mlp_type="swiglu", use_bias=False, dist_token=True,
            num_registers=2, **TINY)
  params = _perturbed(_init(vit.Model(**kw)))
  stacked = vit.unscanned_to_scan(params)
  assert jax.tree.map(jnp.shape, stacked) == jax.tree.map(
      jnp.shape, jax.eval_shape(vit.Model(scan=True, **kw).init,
                                jax.random.PRNGKey(0), IMG)["params"])
  out_u, aux_u = _apply(vit.Model(**kw), params)
  out_s, aux_s = _apply(vit.Model(scan=True, **kw), stacked)
  np.testing.assert_allclose(out_s, out_u, atol=1e-5)
  np.testing.assert_allclose(aux_s["dist_logits"], aux_u["dist_logits"],
                             atol=1e-5)


# ------------------------------------------------------- DeiT dist token


def test_dist_token_heads_train_and_eval():
  model = vit.Model(5, pool_type="tok", dist_token=True, head_zeroinit=False,
                    **TINY)
  params = _init(model)
  keys = _flat(params)
  assert keys["dist"].shape == keys["cls"].shape == (1, 1, 32)
  assert keys["head_dist/kernel"].shape == (32, 5)
  assert float(jnp.std(keys["dist"])) > 0.005  # Not a copy of `cls` (0).
  params = _perturbed(params)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  out_tr, aux_tr = _apply(model, params, train=True)
  out_ev, aux_ev = _apply(model, params, train=False)
  # Tokens: [cls, dist, 16 patches]; the encoder as NumPy computes it.
  tokens = np.concatenate([np.tile(p["cls"], (2, 1, 1)),
                           np.tile(p["dist"], (2, 1, 1)),
                           np.asarray(aux_ev["with_posemb"])], axis=1)
  enc = _np_encoder(params, tokens)
  np.testing.assert_allclose(aux_ev["encoded"], enc, atol=2e-5, rtol=1e-5)
  cls_logits = _np_dense(enc[:, 0], p["head"])
  dist_logits = _np_dense(enc[:, 1], p["head_dist"])
  for aux in (aux_tr, aux_ev):
    np.testing.assert_allclose(aux["pre_logits"], enc[:, 0], atol=2e-5)
    np.testing.assert_allclose(aux["dist_pre_logits"], enc[:, 1], atol=2e-5)
    np.testing.assert_allclose(aux["logits"], cls_logits, atol=2e-5)
    np.testing.assert_allclose(aux["dist_logits"], dist_logits, atol=2e-5)
  np.testing.assert_allclose(out_tr, cls_logits, atol=2e-5)  # Training.
  np.testing.assert_allclose(out_ev, (cls_logits + dist_logits) / 2,
                             atol=2e-5)  # DeiT's inference rule.


def test_dist_token_zero_heads_rep_size_and_schedule():
  model = vit.Model(5, pool_type="tok", dist_token=True, rep_size=7, **TINY)
  params = _init(model)
  np.testing.assert_array_equal(params["head_dist"]["kernel"], 0.0)
  out, aux = _apply(model, params, train=True)
  np.testing.assert_array_equal(out, 0.0)
  np.testing.assert_array_equal(aux["dist_logits"], 0.0)
  # One shared pre_logits layer (tanh) on both tokens.
  pre = jax.tree.map(np.asarray, params["pre_logits"])
  for key, i in (("pre_logits", 0), ("dist_pre_logits", 1)):
    want = np.tanh(_np_dense(np.asarray(aux["encoded"][:, i]), pre))
    np.testing.assert_allclose(aux[key], want, atol=1e-5)
  # Without a head: the class token's representation, both modes.
  rep, aux = _apply(vit.Model(pool_type="tok", dist_token=True, **TINY), {
      k: v for k, v in params.items()
      if k not in ("head", "head_dist", "pre_logits")})
  np.testing.assert_array_equal(rep, aux["encoded"][:, 0])
  assert "dist_logits" not in aux
  # attention_only_schedule's head=True trains both heads.
  names = set(_flat(params))
  mask = _flat(optim.frozen_mask(
      {"schedule": vit.attention_only_schedule()}, params))
  assert {"head_dist/kernel", "head/kernel"} <= {n for n in names
                                                 if not mask[n]}


# ------------------------------------------------------- registers


@pytest.mark.parametrize("pool", ["gap", "map", "tok"])
def test_registers_are_attended_and_not_pooled(pool):
  model = vit.Model(5, pool_type=pool, num_registers=3, head_zeroinit=False,
                    **TINY)
  params = _init(model)
  assert params["registers"].shape == (1, 3, 32)
  params = _perturbed(params)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  out, aux = _apply(model, params)
  n_cls = int(pool == "tok")
  assert aux["encoded"].shape == (2, n_cls + 16, 32)
  assert aux["registers"].shape == (2, 3, 32)
  assert aux["encoder_0"].shape == (2, n_cls + 16 + 3, 32)
  # Reference: the encoder on [cls?, patches, registers] built by hand; the
  # register outputs are split off, the rest pooled.
  parts = [np.tile(p["cls"], (2, 1, 1))] if n_cls else []
  parts += [np.asarray(aux["with_posemb"]), np.tile(p["registers"], (2, 1, 1))]
  enc = _np_encoder(params, np.concatenate(parts, axis=1))
  np.testing.assert_allclose(aux["encoded"], enc[:, :-3], atol=2e-5,
                             rtol=1e-5)
  np.testing.assert_allclose(aux["registers"], enc[:, -3:], atol=2e-5,
                             rtol=1e-5)
  if pool == "gap":
    np.testing.assert_allclose(aux["head_input"], enc[:, :-3].mean(1),
                               atol=2e-5)
  elif pool == "tok":
    np.testing.assert_allclose(aux["head_input"], enc[:, 0], atol=2e-5)
  else:  # MAPHead over the non-register tokens only.
    pooled = jax.jit(vit.MAPHead(mlp_dim=128, num_heads=2).apply)(
        {"params": params["MAPHead_0"]}, jnp.asarray(enc[:, :-3], jnp.float32))
    np.testing.assert_allclose(aux["head_input"], pooled, atol=2e-5)
  # The registers are attended to: other register values, other output.
  moved = {**params, "registers": _perturbed(params["registers"], seed=1)}
  assert not np.allclose(_apply(model, moved)[0], out, atol=1e-4)


# ------------------------------------------------------- patch dropout


def test_patch_dropout_eval_is_the_plain_model_and_train_is_shorter():
  kw = dict(num_classes=5, pool_type="tok", head_zeroinit=False, **TINY)
  plain, params = vit.Model(**kw), _perturbed(_init(vit.Model(**kw)))
  model = vit.Model(patch_dropout=0.5, **kw)
  assert jax.tree.map(jnp.shape, _init(model)) == jax.tree.map(
      jnp.shape, params)
  ref, _ = _apply(plain, params)
  out, aux = _apply(model, params, train=False)
  np.testing.assert_array_equal(out, ref)
  assert "kept_patches" not in aux
  out, aux = _apply(model, params, train=True, rng=1)
  assert aux["encoded"].shape == (2, 1 + 8, 32)  # cls + round(0.5 * 16).
  idx = np.asarray(aux["kept_patches"])
  assert idx.shape == (2, 8)
  for row in idx:  # Ascending, distinct, in range.
    assert np.all(np.diff(row) > 0) and row[0] >= 0 and row[-1] < 16
  assert not np.array_equal(idx[0], idx[1])  # Per example.
  _, aux2 = _apply(model, params, train=True, rng=2)
  _, aux1 = _apply(model, params, train=True, rng=1)
  assert not np.array_equal(aux2["kept_patches"], idx)  # From the rng ...
  np.testing.assert_array_equal(aux1["kept_patches"], idx)  # ... only.
  with pytest.raises(flax.errors.InvalidRngError):
    model.apply({"params": params}, IMG, train=True)
  assert vit_tokens.num_kept(16, 0.3) == 11  # round(11.2)
  assert vit_tokens.num_kept(16, 0.99) == 1  # At least one.


def test_patch_dropout_kept_tokens_are_the_unmasked_embeddings():
  # Depth 0: encoded = encoder_norm(tokens), so each kept token shows as is.
  kw = dict(pool_type="tok", dist_token=True, num_registers=2, **TINY,
            patch_dropout=0.25)
  model = vit.Model(**{**kw, "depth": 0})
  params = _perturbed(_init(model))
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  _, ev = _apply(model, params)
  _, tr = _apply(model, params, train=True, rng=3)
  idx = np.asarray(tr["kept_patches"])
  assert idx.shape == (2, 12) and tr["encoded"].shape == (2, 2 + 12, 32)
  full = np.asarray(ev["with_posemb"])  # The unmasked patch embeddings.
  norm = p["Transformer"]["encoder_norm"]
  for b in range(2):
    np.testing.assert_allclose(tr["encoded"][b, 2:],
                               _np_ln(full[b, idx[b]], norm), atol=1e-5)
  # cls, dist and registers are added after the dropping, all of them.
  np.testing.assert_allclose(tr["encoded"][:, 1],
                             _np_ln(np.tile(p["dist"][0], (2, 1)), norm),
                             atol=1e-5)
  np.testing.assert_allclose(tr["registers"],
                             _np_ln(np.tile(p["registers"], (2, 1, 1)), norm),
                             atol=1e-5)
  # Depth 1: the encoder on the kept tokens is the encoder on all tokens
  # with the dropped ones masked out as keys, at the kept positions.
  model = vit.Model(**{**kw, "dist_token": False, "num_registers": 0,
                       "pool_type": "gap"})
  params = _perturbed(_init(model))
  _, ev = _apply(model, params)
  _, tr = _apply(model, params, train=True, rng=3)
  idx = np.asarray(tr["kept_patches"])
  keep = np.zeros((2, 16), bool)
  np.put_along_axis(keep, idx, True, axis=1)
  masked, _ = jax.jit(vit.Encoder(depth=1, mlp_dim=128, num_heads=2).apply)(
      {"params": params["Transformer"]}, ev["with_posemb"],
      mask=jnp.asarray(keep)[:, None, None, :])
  np.testing.assert_allclose(
      tr["encoded"], np.take_along_axis(np.asarray(masked), idx[..., None], 1),
      atol=2e-5, rtol=1e-5)


# ------------------------------------------------------- two towers


def test_two_towers_image_tower_with_patch_dropout_and_registers():
  image = {"variant": "mu/4", "depth": 1, "patch_dropout": 0.5,
           "num_registers": 2}
  kw = {"text": {"variant": "mu", "depth": 1, "vocab_size": 50},
        "out_dim": (8, 8), "temperature_init": 10.0, "bias_init": -10.0}
  text = jnp.array([[5, 9, 13, 1], [7, 3, 1, 1]], jnp.int32)
  model = two_towers.Model(image=image, **kw)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), IMG, text)["params"]
  assert params["img"]["registers"].shape == (1, 2, 32)

  def loss(p):  # SigLIP's sigmoid loss, in training (patches dropped).
    zimg, ztxt, aux = model.apply({"params": p}, IMG, text, train=True,
                                  rngs=RNGS(0))
    logits = zimg @ ztxt.T * aux["t"] + aux["b"]
    labels = 2 * jnp.eye(2) - 1
    return -jnp.mean(jax.nn.log_sigmoid(labels * logits)), (zimg, aux)
  grads, (zimg, aux) = jax.jit(jax.grad(loss, has_aux=True))(params)
  assert aux["img/encoded"].shape == (2, 8, 32)  # 8 of 16 patches.
  assert aux["img/registers"].shape == (2, 2, 32)
  assert aux["img/kept_patches"].shape == (2, 8)
  np.testing.assert_allclose(jnp.linalg.norm(zimg, axis=-1), 1.0, atol=1e-5)
  assert float(jnp.abs(grads["img"]["registers"]).sum()) > 0
