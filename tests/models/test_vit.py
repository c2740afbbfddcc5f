"""Tests for big_vision_like.models.vit and models.common."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_like import optim, registry
from big_vision_like.models import common, vit

IMG = jnp.linspace(-1, 1, 2 * 16 * 16 * 3).reshape(2, 16, 16, 3)  # [B, H, W, C]
TINY = {"variant": "mu/4", "depth": 2}  # width 32, 2 heads, mlp 128


def _flat(params):
  return {"/".join(k): v for k, v in
          flax.traverse_util.flatten_dict(flax.core.unfreeze(params)).items()}


def _init(model, img=IMG):
  return model.init(jax.random.PRNGKey(0), img)["params"]


def _abstract(model, img=IMG):
  """The params' ShapeDtypeStructs, without running the init."""
  return jax.eval_shape(model.init, jax.random.PRNGKey(0), img)["params"]


def _shapes(model, res=224):
  img = jax.ShapeDtypeStruct((1, res, res, 3), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), img)["params"]
  return {k: v.shape for k, v in _flat(params).items()}


@pytest.mark.parametrize("variant", [
    "Ti/16", "S/16", "B/16", "L/16", "So400m/14", "H/14", "g/14", "G/14"])
def test_variant_param_shapes(variant):
  width, depth, mlp, heads = vit.VARIANTS[variant.split("/")[0]]
  p = int(variant.split("/")[1])
  shapes = _shapes(vit.Model(1000, variant=variant))
  blk = "Transformer/encoderblock_0/"
  att = blk + "MultiHeadDotProductAttention_0/"
  assert shapes["embedding/kernel"] == (p, p, 3, width)
  assert shapes["pos_embedding"] == (1, (224 // p) ** 2, width)
  assert shapes[att + "query/kernel"] == (width, heads, width // heads)
  assert shapes[att + "value/bias"] == (heads, width // heads)
  assert shapes[att + "out/kernel"] == (heads, width // heads, width)
  assert shapes[blk + "MlpBlock_0/Dense_0/kernel"] == (width, mlp)
  assert shapes[blk + "MlpBlock_0/Dense_1/kernel"] == (mlp, width)
  assert shapes["Transformer/encoder_norm/scale"] == (width,)
  assert shapes["head/kernel"] == (width, 1000)
  blocks = {k.split("/")[1] for k in shapes if k.startswith("Transformer/enc")}
  assert blocks == {f"encoderblock_{i}" for i in range(depth)} | {
      "encoder_norm"}


def test_tiny_exact_keys():
  keys = set(_flat(_init(vit.Model(5, **TINY))))
  blk = {"LayerNorm_0/scale", "LayerNorm_0/bias", "LayerNorm_1/scale",
         "LayerNorm_1/bias", "MlpBlock_0/Dense_0/kernel",
         "MlpBlock_0/Dense_0/bias", "MlpBlock_0/Dense_1/kernel",
         "MlpBlock_0/Dense_1/bias"}
  blk |= {f"MultiHeadDotProductAttention_0/{n}/{w}"
          for n in ("query", "key", "value", "out") for w in ("kernel", "bias")}
  want = {"embedding/kernel", "embedding/bias", "pos_embedding",
          "Transformer/encoder_norm/scale", "Transformer/encoder_norm/bias",
          "head/kernel", "head/bias"}
  want |= {f"Transformer/encoderblock_{i}/{k}" for i in range(2) for k in blk}
  assert keys == want


@pytest.mark.parametrize("pool,tokens", [
    ("gap", None), ("tok", None), ("map", None), ("0", 16), ("none", 16)])
def test_pool_types(pool, tokens):
  model = vit.Model(5, pool_type=pool, **TINY)
  params = _init(model)
  keys = _flat(params)
  out, aux = model.apply({"params": params}, IMG)
  lead = (2,) if tokens is None else (2, tokens)
  assert out.shape == lead + (5,)
  assert aux["logits"].shape == lead + (5,)
  assert aux["pre_logits"].shape == lead + (32,)
  assert aux["stem"].shape == (2, 4, 4, 32)
  assert aux["with_posemb"].shape == (2, 16, 32)
  assert aux["encoded"].shape == (2, 17 if pool == "tok" else 16, 32)
  assert aux["encoder_1"].shape == aux["encoded"].shape
  assert ("cls" in keys) == (pool == "tok")
  if pool == "tok":
    assert keys["cls"].shape == (1, 1, 32)
  assert any(k.startswith("MAPHead_0/") for k in keys) == (pool == "map")
  if pool == "map":
    assert keys["MAPHead_0/probe"].shape == (1, 1, 32)
    for sub in ("MultiHeadDotProductAttention_0/query/kernel",
                "LayerNorm_0/scale", "MlpBlock_0/Dense_1/kernel"):
      assert "MAPHead_0/" + sub in keys


def test_unknown_pool_type():
  with pytest.raises(ValueError, match="Unknown pool_type 'max'"):
    _init(vit.Model(pool_type="max", **TINY))


def test_sincos2d_no_pos_embedding():
  model = vit.Model(posemb="sincos2d", **TINY)
  params = _init(model)
  assert "pos_embedding" not in _flat(params)
  out, aux = model.apply({"params": params}, IMG)
  assert out.shape == (2, 32)
  pe = common.posemb_sincos_2d(4, 4, 32)  # [1, 16, 32]
  stem = aux["stem"].reshape(2, 16, 32)
  np.testing.assert_allclose(aux["with_posemb"], stem + pe, atol=1e-6)
  # Position (0, 0): sin blocks are 0, cos blocks are 1.
  np.testing.assert_allclose(pe[0, 0], np.repeat([0., 1., 0., 1.], 8))


def test_pos_embedding_init_std():
  model = vit.Model(variant="S/16", depth=1)
  params = _init(model, jnp.zeros((1, 224, 224, 3)))
  assert abs(float(jnp.std(params["pos_embedding"])) * np.sqrt(384) - 1) < 0.05


def test_rep_size_and_layerscale():
  model = vit.Model(5, rep_size=True, layerscale=0.1, **TINY)
  keys = _flat(_init(model))
  assert keys["pre_logits/kernel"].shape == (32, 32)
  assert float(keys["Transformer/encoderblock_0/LayerScale_1/scale"][0]) == (
      pytest.approx(0.1))
  keys = _flat(_init(vit.Model(5, rep_size=7, **TINY)))
  assert keys["pre_logits/kernel"].shape == (32, 7)
  assert keys["head/kernel"].shape == (7, 5)


def test_head_zeroinit():
  model = vit.Model(5, **TINY)
  out, aux = model.apply({"params": _init(model)}, IMG)
  np.testing.assert_array_equal(out, 0.0)
  assert float(jnp.abs(aux["pre_logits"]).sum()) > 0
  model = vit.Model(5, head_zeroinit=False, **TINY)
  out, _ = model.apply({"params": _init(model)}, IMG)
  assert float(jnp.abs(out).sum()) > 0


@pytest.mark.parametrize("scan", [False, True])
def test_dropout_and_drop_path_need_rng_in_train(scan):
  base = vit.Model(**TINY, scan=scan)
  params = _init(base)
  ref, _ = base.apply({"params": params}, IMG)
  noisy = vit.Model(**TINY, scan=scan, dropout=0.1, drop_path=0.2)
  ev, _ = noisy.apply({"params": params}, IMG, train=False)
  np.testing.assert_allclose(ev, ref, atol=1e-6)
  rngs = lambda s: {"dropout": jax.random.PRNGKey(s)}
  tr1, _ = noisy.apply({"params": params}, IMG, train=True, rngs=rngs(1))
  tr2, _ = noisy.apply({"params": params}, IMG, train=True, rngs=rngs(2))
  assert not np.allclose(tr1, ref) and not np.allclose(tr1, tr2)
  with pytest.raises(flax.errors.InvalidRngError):
    noisy.apply({"params": params}, IMG, train=True)
  # Without dropout or drop_path, train mode needs no rng.
  tr, _ = base.apply({"params": params}, IMG, train=True)
  np.testing.assert_allclose(tr, ref, atol=1e-6)


def test_scan_matches_unscanned():
  kw = dict(num_classes=5, head_zeroinit=False, pool_type="map", **TINY)
  unscanned, scanned = vit.Model(**kw), vit.Model(scan=True, **kw)
  params = _init(unscanned)
  stacked = vit.unscanned_to_scan(params)
  assert stacked["Transformer"]["encoderblock"]["MlpBlock_0"]["Dense_0"][
      "kernel"].shape == (2, 32, 128)
  want = jax.tree.map(jnp.shape, _init(scanned))
  assert jax.tree.map(jnp.shape, stacked) == want
  out_u, _ = unscanned.apply({"params": params}, IMG)
  out_s, aux_s = scanned.apply({"params": stacked}, IMG)
  np.testing.assert_allclose(out_s, out_u, atol=1e-5)
  assert aux_s["encoded"].shape == (2, 16, 32)
  back = vit.scan_to_unscanned(stacked)
  jax.tree.map(np.testing.assert_array_equal, back, params)
  with pytest.raises(ValueError, match="remat_policy"):
    _init(vit.Model(scan=True, remat_policy="bogus", **TINY))


def test_norm_pre():
  # Off by default (see test_tiny_exact_keys). On: `norm_pre/{scale,bias}`
  # normalises the tokens before the encoder, so scaling the patch and
  # position embeddings (and class token) together changes nothing.
  kw = dict(num_classes=5, head_zeroinit=False, pool_type="tok", **TINY)
  model, plain = vit.Model(norm_pre=True, **kw), vit.Model(**kw)
  params = _init(model)
  assert set(_flat(params)) - set(_flat(_init(plain))) == {
      "norm_pre/scale", "norm_pre/bias"}
  params = {**params, "cls": params["cls"] + 0.5}
  scaled = {**params, **jax.tree.map(lambda a: 3 * a, {
      k: params[k] for k in ("embedding", "pos_embedding", "cls")})}
  out, _ = model.apply({"params": params}, IMG)
  out3, _ = model.apply({"params": scaled}, IMG)
  np.testing.assert_allclose(out3, out, atol=1e-4)
  # Without it, the same scaling changes the output.
  drop = lambda tree: {k: v for k, v in tree.items() if k != "norm_pre"}
  a, _ = plain.apply({"params": drop(params)}, IMG)
  b, _ = plain.apply({"params": drop(scaled)}, IMG)
  assert not np.allclose(a, b, atol=1e-3)


def test_gelu_flavours_and_norm_eps():
  x = jnp.linspace(-4.0, 4.0, 81)
  erf = x * 0.5 * (1 + jax.scipy.special.erf(x / np.sqrt(2)))
  tanh = 0.5 * x * (1 + jnp.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
  np.testing.assert_allclose(vit.gelu_fn("erf")(x), erf, atol=1e-6)
  np.testing.assert_allclose(vit.gelu_fn("tanh")(x), tanh, atol=1e-6)
  np.testing.assert_allclose(vit.gelu_fn("quick")(x),
                             x * jax.nn.sigmoid(1.702 * x), atol=1e-6)
  with pytest.raises(ValueError, match="Unknown gelu 'relu'"):
    vit.gelu_fn("relu")
  # Depth 0 and "map" pooling: only MAPHead's MLP and LayerNorm see them.
  for depth in (2, 0):
    kw = dict(num_classes=5, head_zeroinit=False, pool_type="map",
              **{**TINY, "depth": depth})
    params = _init(vit.Model(**kw))
    ref, _ = vit.Model(**kw).apply({"params": params}, IMG)
    same, _ = vit.Model(gelu="tanh", norm_eps=1e-6, **kw).apply(
        {"params": params}, IMG)
    np.testing.assert_array_equal(same, ref)  # The defaults.
    for opt in ({"gelu": "erf"}, {"gelu": "quick"}, {"norm_eps": 0.1}):
      model = vit.Model(**kw, **opt)
      assert jax.tree.map(jnp.shape, _init(model)) == jax.tree.map(
          jnp.shape, params)
      out, _ = model.apply({"params": params}, IMG)
      assert not np.allclose(out, ref, atol=1e-6), opt


def test_bfloat16_matmuls_close_to_float32():
  kw = dict(num_classes=5, head_zeroinit=False, **TINY)
  params = _init(vit.Model(**kw))
  out32, _ = vit.Model(**kw).apply({"params": params}, IMG)
  model16 = vit.Model(dtype_mm="bfloat16", **kw)
  assert all(v.dtype == jnp.float32 for v in _flat(_init(model16)).values())
  out16, aux16 = model16.apply({"params": params}, IMG)
  assert aux16["stem"].dtype == jnp.bfloat16
  np.testing.assert_allclose(out16.astype(np.float32), out32, atol=0.05,
                             rtol=0.05)


def test_resample_posemb():
  const = np.full((1, 16, 8), 0.5, np.float32)
  new = common.resample_posemb(const, 7)
  assert isinstance(new, np.ndarray) and new.shape == (1, 49, 8)
  np.testing.assert_allclose(new, 0.5, atol=1e-6)
  with_cls = jnp.concatenate([jnp.ones((1, 1, 8)), const], axis=1)
  new = common.resample_posemb(with_cls, (3, 3))
  assert new.shape == (1, 10, 8)
  np.testing.assert_allclose(new[0, 0], 1.0)
  # Transfer a model to a higher resolution.
  model = vit.Model(**TINY)
  params = dict(_init(model))
  params["pos_embedding"] = common.resample_posemb(params["pos_embedding"], 6)
  out, _ = model.apply({"params": params}, jnp.zeros((1, 24, 24, 3)))
  assert out.shape == (1, 32)
  with pytest.raises(ValueError, match="square"):
    common.resample_posemb(np.zeros((1, 15, 8)), 4)


def test_decode_variant():
  for name, (w, d, m, h) in vit.VARIANTS.items():
    assert vit.decode_variant(name + "/8") == {
        "width": w, "depth": d, "mlp_dim": m, "num_heads": h,
        "patch_size": (8, 8)}
  assert vit.decode_variant("mu/16x8")["patch_size"] == (16, 8)
  assert "patch_size" not in vit.decode_variant("B")
  assert vit.Model(variant="B/16", depth=3).depth == 3
  with pytest.raises(ValueError, match=r"Unknown ViT variant 'X'.*So400m"):
    vit.decode_variant("X/16")
  with pytest.raises(ValueError, match="Bad patch size"):
    vit.decode_variant("B/p16")


def test_registered():
  assert registry.MODELS.get("vit") is vit.Model


# ----------------------------------------------------------------------------
# "Three things everyone should know about Vision Transformers".

PARALLEL = {**TINY, "parallel": 2, "layerscale": 0.5}


def _block_keys(parallel, layerscale):
  """Param names in one `encoderblock` with `parallel` branches."""
  att = {f"MultiHeadDotProductAttention_{k}/{n}/{w}" for k in range(parallel)
         for n in ("query", "key", "value", "out") for w in ("kernel", "bias")}
  mlp = {f"MlpBlock_{k}/Dense_{j}/{w}" for k in range(parallel)
         for j in range(2) for w in ("kernel", "bias")}
  norms = {f"LayerNorm_{k}/{w}" for k in range(2 * parallel)
           for w in ("scale", "bias")}
  scales = ({f"LayerScale_{k}/scale" for k in range(2 * parallel)}
            if layerscale else set())
  return att | mlp | norms | scales


def test_parallel_param_names_and_shapes():
  keys = _flat(_init(vit.Model(5, **PARALLEL)))
  blocks = {k.split("/", 2)[1] for k in keys if "encoderblock" in k}
  assert blocks == {"encoderblock_0", "encoderblock_1"}
  blk = "Transformer/encoderblock_1/"
  assert {k[len(blk):] for k in keys if k.startswith(blk)} == _block_keys(
      2, True)
  for k in range(2):
    att = f"{blk}MultiHeadDotProductAttention_{k}/"
    assert keys[att + "query/kernel"].shape == (32, 2, 16)
    assert keys[att + "out/kernel"].shape == (2, 16, 32)
    assert keys[f"{blk}MlpBlock_{k}/Dense_0/kernel"].shape == (32, 128)
    assert keys[f"{blk}MlpBlock_{k}/Dense_1/kernel"].shape == (128, 32)
  for k in range(4):
    assert keys[f"{blk}LayerNorm_{k}/scale"].shape == (32,)
    np.testing.assert_array_equal(keys[f"{blk}LayerScale_{k}/scale"], 0.5)
  # Explicit parallel=1 is the default block.
  assert set(_flat(_abstract(vit.Model(5, parallel=1, **TINY)))) == set(
      _flat(_abstract(vit.Model(5, **TINY))))
  for bad in (0, 2.0):
    with pytest.raises(ValueError, match="parallel="):
      _abstract(vit.Model(parallel=bad, **TINY))


def test_parallel_output_is_sum_of_branches():
  model = vit.Model(**PARALLEL)
  params = flax.core.unfreeze(_init(model))
  # Distinct LayerScales, so a branch paired with the wrong one shows.
  rng = np.random.default_rng(0)
  for blk in ("encoderblock_0", "encoderblock_1"):
    for k in range(4):
      params["Transformer"][blk][f"LayerScale_{k}"]["scale"] = jnp.asarray(
          rng.uniform(0.2, 2.0, 32), jnp.float32)
  _, aux = model.apply({"params": params}, IMG)

  def sub(module, p, *args):
    return module.apply({"params": p}, *args)

  ln = flax.linen.LayerNorm(epsilon=1e-6)
  attn = flax.linen.MultiHeadDotProductAttention(num_heads=2)
  mlp = vit.MlpBlock(mlp_dim=128)
  x = aux["with_posemb"]  # [B, L, D]
  for i in range(2):
    p = params["Transformer"][f"encoderblock_{i}"]
    scale = lambda j, p=p: p[f"LayerScale_{j}"]["scale"]
    ys = [scale(k) * sub(attn, p[f"MultiHeadDotProductAttention_{k}"],
                         *[sub(ln, p[f"LayerNorm_{k}"], x)] * 2)
          for k in range(2)]
    x = x + ys[0] + ys[1]
    ys = [scale(2 + k) * sub(mlp, p[f"MlpBlock_{k}"],
                             sub(ln, p[f"LayerNorm_{2 + k}"], x))
          for k in range(2)]
    x = x + ys[0] + ys[1]
    np.testing.assert_allclose(aux[f"encoder_{i}"], x, atol=2e-5, rtol=1e-5)

  # Branch 1 silenced (zero out-projections): a parallel=1 model holding
  # branch 0's params under big_vision's names gives the same output.
  seq = {**params, "Transformer": {"encoder_norm": params["Transformer"][
      "encoder_norm"]}}
  for i in range(2):
    p = params["Transformer"][f"encoderblock_{i}"]
    zero = lambda t: jax.tree.map(jnp.zeros_like, t)
    p["MultiHeadDotProductAttention_1"]["out"] = zero(
        p["MultiHeadDotProductAttention_1"]["out"])
    p["MlpBlock_1"]["Dense_1"] = zero(p["MlpBlock_1"]["Dense_1"])
    seq["Transformer"][f"encoderblock_{i}"] = {
        "LayerNorm_0": p["LayerNorm_0"], "LayerScale_0": p["LayerScale_0"],
        "MultiHeadDotProductAttention_0": p["MultiHeadDotProductAttention_0"],
        "LayerNorm_1": p["LayerNorm_2"], "LayerScale_1": p["LayerScale_2"],
        "MlpBlock_0": p["MlpBlock_0"]}
  out2, _ = model.apply({"params": params}, IMG)
  out1, _ = vit.Model(**{**PARALLEL, "parallel": 1}).apply(
      {"params": seq}, IMG)
  np.testing.assert_allclose(out2, out1, atol=1e-6)


def test_parallel_scan_matches_unscanned():
  kw = dict(num_classes=5, head_zeroinit=False, dropout=0.1, drop_path=0.2,
            **PARALLEL)
  unscanned, scanned = vit.Model(**kw), vit.Model(scan=True, **kw)
  params = _init(unscanned)
  stacked = vit.unscanned_to_scan(params)
  assert jax.tree.map(jnp.shape, stacked) == jax.tree.map(
      jnp.shape, _abstract(scanned))
  keys = _flat(stacked)
  blk = "Transformer/encoderblock/"
  assert {k[len(blk):] for k in keys if k.startswith(blk)} == _block_keys(
      2, True)
  assert keys[blk + "MlpBlock_1/Dense_0/kernel"].shape == (2, 32, 128)
  out_u, _ = unscanned.apply({"params": params}, IMG)
  out_s, _ = scanned.apply({"params": stacked}, IMG)
  np.testing.assert_allclose(out_s, out_u, atol=1e-5)
  # Train mode: dropout and per-branch drop-path need and use the rng.
  rngs = {"dropout": jax.random.PRNGKey(1)}
  tr, _ = scanned.apply({"params": stacked}, IMG, train=True, rngs=rngs)
  assert np.all(np.isfinite(tr)) and not np.allclose(tr, out_s, atol=1e-4)
  with pytest.raises(flax.errors.InvalidRngError):
    scanned.apply({"params": stacked}, IMG, train=True)


def _trained(schedule, params):
  config = {"schedule": schedule}
  mask = optim.frozen_mask(config, params)
  return {k for k, frozen in _flat(mask).items() if not frozen}


def test_attention_only_schedule_selects_params():
  for scan in (False, True):
    model = vit.Model(5, pool_type="map", rep_size=True, scan=scan, **PARALLEL)
    params = _abstract(model)
    names = set(_flat(params))
    att = {n for n in names if n.startswith("Transformer/encoderblock")
           and "/MultiHeadDotProductAttention_" in n}
    assert len(att) == (1 if scan else 2) * 2 * 8
    heads = {n for n in names if n.split("/")[0] in (
        "head", "pre_logits", "MAPHead_0")}
    assert "MAPHead_0/MultiHeadDotProductAttention_0/query/kernel" in heads
    sched = vit.attention_only_schedule()
    assert sched[1] == (".*", None) and sched[0][1] == {"decay_type": "cosine"}
    assert _trained(sched, params) == att | heads
    assert _trained(vit.attention_only_schedule(head=False), params) == att
    got = _trained(vit.attention_only_schedule(
        {"decay_type": "linear", "warmup_steps": 3}, head=False,
        pos_embedding=True, embedding=True), params)
    assert got == att | {"pos_embedding", "embedding/kernel", "embedding/bias"}
    norm = {"Transformer/encoder_norm/scale", "Transformer/encoder_norm/bias"}
    tower = _trained(vit.attention_only_schedule(
        prefix="img/", extra=(r"Transformer/encoder_norm/.*",)),
        {"img": params, "txt": params})
    assert tower == {"img/" + n for n in att | heads | norm}


def _np_layer_norm(x, p, eps=1e-6):
  mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _np_softmax(z):
  z = np.exp(z - z.max(-1, keepdims=True))
  return z / z.sum(-1, keepdims=True)


def _np_weights(p, q_in, kv_in):
  """softmax(q k^T / sqrt(d)) of one attention's params, [B, H, T, S]."""
  q = np.einsum("btd,dhk->bhtk", q_in, p["query"]["kernel"])
  q += p["query"]["bias"][:, None]
  k = np.einsum("bsd,dhk->bhsk", kv_in, p["key"]["kernel"])
  k += p["key"]["bias"][:, None]
  return _np_softmax(np.einsum("bhtk,bhsk->bhts", q, k) / np.sqrt(q.shape[-1]))


@pytest.mark.parametrize("scan", [False, True])
def test_return_attention_exposes_the_softmax_weights(scan):
  kw = dict(num_classes=5, head_zeroinit=False, pool_type="map", **TINY)
  model = vit.Model(**kw)
  params = _init(model)
  out, aux = model.apply({"params": params}, IMG)
  inspect = vit.Model(return_attention=True, scan=scan, **kw)
  p = vit.unscanned_to_scan(params) if scan else params
  out_w, aux_w = inspect.apply({"params": p}, IMG)
  np.testing.assert_allclose(out_w, out, atol=1e-5)  # Same function.
  weights = np.asarray(aux_w["attention"])
  assert weights.shape == (2, 2, 2, 16, 16)  # [depth, B, H, L, L]
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
  # Block 0 from the params, in NumPy: its input is the patches + posemb.
  params = jax.device_get(params)
  block = params["Transformer"]["encoderblock_0"]
  x0 = _np_layer_norm(np.asarray(aux["with_posemb"]), block["LayerNorm_0"])
  want = _np_weights(block["MultiHeadDotProductAttention_0"], x0, x0)
  np.testing.assert_allclose(weights[0], want, atol=2e-5)
  # The MAP probe over the encoded tokens.
  head = params["MAPHead_0"]
  probe = np.broadcast_to(head["probe"], (2, 1, 32))
  want = _np_weights(head["MultiHeadDotProductAttention_0"], probe,
                     np.asarray(aux["encoded"]))
  np.testing.assert_allclose(aux_w["map_attention"], want, atol=2e-5)
  assert "attention" not in aux and "map_attention" not in aux
  with pytest.raises(NotImplementedError, match="parallel=2"):
    _init(vit.Model(return_attention=True, parallel=2, **TINY))


def test_attention_rollout_is_the_product_of_mixed_layers():
  rng = np.random.default_rng(0)
  att = rng.random((3, 2, 4, 5, 5))
  att /= att.sum(-1, keepdims=True)  # [depth, B, H, L, L]
  want = np.broadcast_to(np.eye(5), (2, 5, 5))
  for layer in att:  # Hand-rolled: mean heads, + identity, renormalise.
    mixed = 0.5 * np.eye(5) + 0.5 * layer.mean(1)
    want = (mixed / mixed.sum(-1, keepdims=True)) @ want
  got = vit.attention_rollout(att)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  np.testing.assert_allclose(np.sum(got, -1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("pool", ["tok", "gap"])
def test_vision_transformer_layout_loads_as_the_same_function(pool, tmp_path):
  """AugReg-style files: posembed_input (class position first), blocks
  LayerNorm_0 / MultiHeadDotProductAttention_1 / LayerNorm_2 / MlpBlock_3."""
  model = vit.Model(num_classes=5, head_zeroinit=False, pool_type=pool, **TINY)
  params = jax.device_get(_init(model))
  legacy = {k: v for k, v in params.items() if k != "pos_embedding"}
  posemb = params["pos_embedding"]
  if pool == "tok":  # Old: concat(cls, patches) + [p_cls, posemb].
    p_cls = np.linspace(-1, 1, 32, dtype=np.float32).reshape(1, 1, 32)
    legacy["cls"] = params["cls"] - p_cls
    posemb = np.concatenate([p_cls, posemb], axis=1)
  renames = {"MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
             "LayerNorm_1": "LayerNorm_2", "MlpBlock_0": "MlpBlock_3"}
  transformer = {name: {renames.get(k, k): v for k, v in block.items()}
                 if name.startswith("encoderblock") else block
                 for name, block in params["Transformer"].items()}
  transformer["posembed_input"] = {"pos_embedding": posemb}
  legacy["Transformer"] = transformer
  path = str(tmp_path / "augreg_like.npz")
  np.savez(path, **_flat(legacy))
  assert vit.is_legacy_layout(legacy)
  loaded = common.load_into(_abstract(model), path, model="vit")
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               loaded, params)
  np.testing.assert_allclose(model.apply({"params": loaded}, IMG)[0],
                             model.apply({"params": params}, IMG)[0],
                             atol=1e-5)
  assert vit.from_legacy_layout(params) is params  # Already big_vision's.
