"""MultiHeadAttention: flax's params and values, every implementation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_like.models import attention
from big_vision_like.registry import MODELS

B, T, S, D, H = 2, 7, 5, 32, 4
ON_GPU = jax.default_backend() == "gpu"


@pytest.fixture(autouse=True)
def _exact_float32_matmuls():
  # GPUs multiply float32 in TensorFloat-32 by default; the float32
  # comparisons here are against exact references.
  with jax.default_matmul_precision("highest"):
    yield


def _inputs():
  kq, kkv = jax.random.split(jax.random.key(1))
  return (jax.random.normal(kq, (B, T, D)),
          jax.random.normal(kkv, (B, S, 24)))


def _flax(**kw):
  return nn.MultiHeadDotProductAttention(
      num_heads=H, kernel_init=nn.initializers.xavier_uniform(), **kw)


def _ours(**kw):
  return attention.MultiHeadAttention(num_heads=H, **kw)


def _numpy_attention(p, xq, xkv, mask=None, bias=None):
  """softmax(q k^T / sqrt(d) + bias) v, masked, from the flax-named params."""
  xq, xkv = np.asarray(xq, np.float64), np.asarray(xkv, np.float64)
  proj = lambda x, n: np.einsum("bld,dhe->blhe", x, p[n]["kernel"]) + p[n]["bias"]
  q, k, v = proj(xq, "query"), proj(xkv, "key"), proj(xkv, "value")
  logits = np.einsum("bthe,bshe->bhts", q, k) / np.sqrt(q.shape[-1])
  if bias is not None:
    logits = logits + bias
  if mask is not None:
    logits = np.where(mask, logits, -1e30)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  y = np.einsum("bhts,bshe->bthe", w, v)
  return np.einsum("bthe,hed->btd", y, p["out"]["kernel"]) + p["out"]["bias"]


@pytest.mark.parametrize("cross", [False, True])
def test_params_are_flax_names_shapes_and_init_values(cross):
  xq, xkv = _inputs()
  args = (xq, xkv) if cross else (xq,)
  flax_args = (xq, xkv) if cross else (xq, xq)
  ours = _ours().init(jax.random.key(0), *args)["params"]
  ref = _flax().init(jax.random.key(0), *flax_args)["params"]
  assert jax.tree.structure(ours) == jax.tree.structure(ref)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("impl", ["einsum", "xla", "auto"])
def test_self_attention_values_and_gradients_equal_flax(impl):
  xq, _ = _inputs()
  params = _flax().init(jax.random.key(0), xq, xq)["params"]
  loss = lambda f: lambda p, x: jnp.sum(jnp.sin(f(p, x)))
  ours = lambda p, x: _ours(implementation=impl).apply({"params": p}, x)
  ref = lambda p, x: _flax().apply({"params": p}, x, x)
  np.testing.assert_allclose(ours(params, xq), ref(params, xq),
                             rtol=1e-5, atol=1e-5)
  g_ours = jax.grad(loss(ours), argnums=(0, 1))(params, xq)
  g_ref = jax.grad(loss(ref), argnums=(0, 1))(params, xq)
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("impl", ["einsum", "xla"])
def test_cross_attention_masks_and_bias_against_numpy(impl):
  xq, xkv = _inputs()
  module = _ours(implementation=impl)
  params = module.init(jax.random.key(0), xq, xkv)["params"]
  valid = np.arange(S)[None] < np.array([[3], [5]])  # [B, S]: padding.
  mask = valid[:, None, None, :]  # [B, 1, 1, S]
  bias = np.random.default_rng(0).normal(size=(1, H, T, S)).astype(np.float32)
  got = module.apply({"params": params}, xq, xkv, mask=mask, bias=bias)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  want = _numpy_attention(p, xq, xkv, mask, bias)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_causal_mask_hides_the_future():
  xq, _ = _inputs()
  module = _ours()
  params = module.init(jax.random.key(0), xq)["params"]
  causal = jnp.tril(jnp.ones((T, T), bool))[None, None]
  y = module.apply({"params": params}, xq, mask=causal)
  changed = xq.at[:, -1].add(5.0)  # Only the last token changes ...
  y2 = module.apply({"params": params}, changed, mask=causal)
  np.testing.assert_allclose(y[:, :-1], y2[:, :-1], rtol=1e-6)  # ... not before.
  assert not np.allclose(y[:, -1], y2[:, -1])


def test_qk_norm_equals_flax_normalize_qk():
  xq, _ = _inputs()
  ref = _flax(normalize_qk=True)
  params = ref.init(jax.random.key(0), xq, xq)["params"]
  assert {"query_ln", "key_ln"} <= set(params)
  params = jax.tree.map(  # Non-trivial LayerNorm scales.
      lambda a: a * 1.5 if a.ndim == 1 and a.shape == (D // H,) else a, params)
  got = _ours(qk_norm=True).apply({"params": params}, xq)
  np.testing.assert_allclose(got, ref.apply({"params": params}, xq, xq),
                             rtol=1e-5, atol=1e-5)


def test_attention_dropout_only_in_training_and_only_with_einsum():
  xq, _ = _inputs()
  module = _ours(dropout_rate=0.5, implementation="einsum")
  params = module.init(jax.random.key(0), xq)["params"]
  plain = _ours().apply({"params": params}, xq)
  np.testing.assert_allclose(module.apply({"params": params}, xq), plain,
                             rtol=1e-6)
  dropped = module.apply({"params": params}, xq, deterministic=False,
                         rngs={"dropout": jax.random.key(3)})
  assert not np.allclose(dropped, plain, atol=1e-3)
  with pytest.raises(NotImplementedError, match="'xla' has none"):
    _ours(dropout_rate=0.5, implementation="xla").apply(
        {"params": params}, xq, deterministic=False,
        rngs={"dropout": jax.random.key(3)})


def test_implementations_resolve_and_bad_names_are_named():
  expected = "einsum" if jax.default_backend() == "cpu" else None
  if expected:
    assert attention.resolve_implementation("auto", jnp.float32, False) == (
        expected)
  with pytest.raises(ValueError, match="'flash'.*known"):
    attention.resolve_implementation("flash", jnp.float32, False)


def test_vit_outputs_and_gradients_agree_across_implementations():
  x = jax.random.normal(jax.random.key(2), (2, 16, 16, 3))
  make = lambda impl: MODELS.get("vit")(
      num_classes=3, variant="mu/4", depth=1, pool_type="map",
      head_zeroinit=False, attention_impl=impl)
  params = make("einsum").init(jax.random.key(0), x)["params"]
  def loss(impl):
    return lambda p: jnp.sum(make(impl).apply({"params": p}, x)[0] ** 2)
  (l1, g1), (l2, g2) = (jax.jit(jax.value_and_grad(loss(i)))(params)
                        for i in ("einsum", "xla"))
  np.testing.assert_allclose(l1, l2, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(not ON_GPU, reason="cuDNN attention needs an NVIDIA GPU")
def test_cudnn_matches_einsum_in_bfloat16():
  x = jax.random.normal(jax.random.key(1), (2, 64, 128), jnp.bfloat16)
  module = attention.MultiHeadAttention(num_heads=2, dtype_mm="bfloat16")
  params = module.init(jax.random.key(0), x)["params"]
  ys = [attention.MultiHeadAttention(
      num_heads=2, dtype_mm="bfloat16", implementation=impl).apply(
          {"params": params}, x) for impl in ("einsum", "cudnn")]
  np.testing.assert_allclose(np.asarray(ys[0], np.float32),
                             np.asarray(ys[1], np.float32), atol=3e-2)


def _relative_error(a, b):
  a, b = (np.asarray(t, np.float32) for t in (a, b))
  return np.linalg.norm(a - b) / np.linalg.norm(a)


@pytest.mark.skipif(not ON_GPU, reason="cuDNN attention needs an NVIDIA GPU")
@pytest.mark.parametrize("masked,impl", [(False, "cudnn"), (True, "auto"),
                                          (True, "cudnn")])
def test_cudnn_values_and_gradients_match_einsum_at_vit_b_shapes(masked,
                                                                  impl):
  # ViT-B/16's attention at 224px with a class token: 197 tokens, head dim
  # 64 (two heads here); with a padding mask as the text tower passes,
  # through "auto" (which gives such a mask to "xla") and "cudnn" (the mask
  # broadcast over the queries): agreement to bfloat16 precision.
  x = jax.random.normal(jax.random.key(1), (2, 197, 128), jnp.bfloat16)
  mask = (jnp.arange(197) < jnp.array([[150], [197]]))[:, None, None, :]
  mask = mask if masked else None
  make = lambda i: attention.MultiHeadAttention(
      num_heads=2, dtype_mm="bfloat16", implementation=i)
  params = make("einsum").init(jax.random.key(0), x)["params"]

  def loss(i):
    def f(p, x):
      y = make(i).apply({"params": p}, x, mask=mask).astype(jnp.float32)
      return jnp.sum(jnp.sin(y)), y
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))

  ((_, y1), g1), ((_, y2), g2) = loss("einsum")(params, x), loss(impl)(
      params, x)
  assert _relative_error(y1, y2) < 2e-2
  # The key bias's gradient is zero in exact arithmetic (it shifts each
  # query's logits by a constant): both are rounding noise, not compared.
  g1[0]["key"].pop("bias"), g2[0]["key"].pop("bias")
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    assert _relative_error(a, b) < 3e-2


@pytest.mark.skipif(not ON_GPU, reason="cuDNN attention needs an NVIDIA GPU")
def test_auto_runs_cudnn_fused_attention_at_vit_b_shapes():
  # Forward and backward: jax refuses cuDNN's backward at 197 tokens unless
  # padded to an even length, and "auto" would silently fall back to "xla".
  x = jnp.zeros((2, 197, 128), jnp.bfloat16)
  module = attention.MultiHeadAttention(num_heads=2, dtype_mm="bfloat16")
  params = module.init(jax.random.key(0), x)["params"]
  loss = lambda p: jnp.sum(module.apply({"params": p}, x).astype(jnp.float32))
  for f in (lambda p: module.apply({"params": p}, x), jax.grad(loss)):
    hlo = jax.jit(f).lower(params).compile().as_text().lower()
    assert "cudnn" in hlo, "no cuDNN attention call in the program"


def test_auto_on_gpu_gives_a_single_query_to_xla(monkeypatch):
  # MAP pooling's one probe query: cuDNN would save no logits there.
  used = []
  real = attention._fused_attention
  monkeypatch.setattr(attention, "_fused_attention",
                      lambda *a: used.append(a[5]) or real(*a))
  monkeypatch.setattr(attention.jax, "default_backend", lambda: "gpu")
  module = _ours(dtype_mm="bfloat16")
  xq, xkv = _inputs()
  params = module.init(jax.random.key(0), xq[:, :1], xkv)["params"]
  module.apply({"params": params}, xq[:, :1], xkv)
  assert used[-1] == "xla"
  assert attention.resolve_implementation("auto", jnp.bfloat16,
                                          False) == "cudnn"


@pytest.mark.parametrize("t", [6, 5])
def test_explicit_cudnn_gets_whole_masks_and_even_lengths(monkeypatch, t):
  # The arguments ours gives jax's cuDNN call, run here by "xla": masks
  # broadcast over the queries, lengths even; the result is the einsum's.
  seen = []
  real = jax.nn.dot_product_attention

  def fake(q, k, v, *, implementation, mask=None, **kw):
    assert implementation == "cudnn"
    seen.append((q.shape[1], k.shape[1], mask.shape))
    return real(q, k, v, mask=mask, implementation="xla", **kw)
  monkeypatch.setattr(attention.jax.nn, "dot_product_attention", fake)
  xq, xkv = _inputs()
  xq = jnp.concatenate([xq, xq], axis=1)[:, :t]
  mask = (np.arange(S)[None] < np.array([[3], [S]]))[:, None, None, :]
  params = _ours().init(jax.random.key(0), xq, xkv)["params"]
  want = _ours(implementation="einsum").apply({"params": params}, xq, xkv,
                                              mask=mask)
  got = _ours(implementation="cudnn").apply({"params": params}, xq, xkv,
                                            mask=mask)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  t_even, s_even = t + t % 2, S + S % 2
  assert seen == [(t_even, s_even, (B, 1, t_even, s_even))]


@pytest.mark.parametrize("t,s", [(5, 7), (6, 7), (5, 6)])
@pytest.mark.parametrize("masking", ["none", "key_mask", "mask_and_bias"])
def test_odd_lengths_padded_for_cudnn_keep_values_and_gradients(t, s, masking):
  # The padding cuDNN's backward needs (run here through "xla", which takes
  # the same arguments): softmax(q k^T + bias) v as in NumPy, and the same
  # gradients as the unpadded call.
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(2, n, 3, 8)), jnp.float32)
             for n in (t, s, s))
  mask = bias = None
  if masking == "key_mask":
    mask = (np.arange(s)[None] < np.array([[s - 2], [s]]))[:, None, None, :]
  if masking == "mask_and_bias":
    mask = rng.random((2, 1, t, s)) < 0.7
    mask[..., 0] = True  # Every query sees at least one key.
    bias = jnp.asarray(rng.normal(size=(1, 3, t, s)), jnp.float32)
  padded = lambda q, k, v, b: attention._padded_attention(
      q, k, v, b, mask, "xla")
  plain = lambda q, k, v, b: jax.nn.dot_product_attention(
      q, k, v, bias=b, mask=mask, scale=1.0, implementation="xla")

  logits = np.einsum("bthd,bshd->bhts", q, k) + (0 if bias is None else bias)
  if mask is not None:
    logits = np.where(mask, logits, -np.inf)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  want = np.einsum("bhts,bshd->bthd", w / w.sum(-1, keepdims=True), v)
  np.testing.assert_allclose(padded(q, k, v, bias), want, rtol=1e-5,
                             atol=1e-6)
  grad = lambda f: jax.grad(lambda *a: jnp.sum(jnp.sin(f(*a))),
                            argnums=(0, 1, 2) + ((3,) if bias is not None
                                                 else ()))
  for a, b in zip(grad(padded)(q, k, v, bias), grad(plain)(q, k, v, bias)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
