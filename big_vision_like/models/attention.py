"""Multi-head attention with flax's / big_vision's parameter names, fast on every backend.

`MultiHeadAttention(name="MultiHeadDotProductAttention_0")` has exactly the
params of `flax.linen.MultiHeadDotProductAttention` (and the same values at
init from the same key): `query`, `key`, `value` kernels [D, H, d] with
biases [H, d], `out` kernel [H, d, D] with bias [D]; so big_vision `.npz`
checkpoints load unchanged. What differs is how the step is computed:

- Self-attention projects q, k and v with ONE matmul against the three
  kernels stacked ([D, 3, H, d]), cross-attention k and v with one: one
  wide matmul instead of three narrow ones (one kernel launch on a GPU).
- The 1/sqrt(d) scale of the logits is folded into the query kernel and
  bias (a [D, H d] multiply instead of one over every query activation),
  unless `qk_norm` normalises q first.

`implementation` picks the softmax(q k^T + bias) v kernel:

- "einsum": batched matmuls in the [B, H, L, d] layout (XLA:CPU runs them
  several times faster with the batch and head axes leading), softmax in
  float32, and attention-weight dropout (`dropout_rate`).
- "xla": `jax.nn.dot_product_attention(implementation="xla")`.
- "cudnn": `jax.nn.dot_product_attention(implementation="cudnn")`, cuDNN's
  fused flash attention (NVIDIA GPUs, bfloat16/float16, head dim <= 128);
  odd sequence lengths (ViT's 197 tokens), which jax's cuDNN backward
  refuses, run padded by one position, masked out; a mask or bias without
  a query axis ([B, 1, 1, S]) is broadcast over the queries, as jax's cuDNN
  call requires.
- "auto" (default): "einsum" on CPU; on GPU "cudnn" when the matmul dtype
  is 16-bit and no attention dropout is active (falling back to "xla" when
  cuDNN rejects the shapes, as a [B, 1, 1, S] padding mask, and "xla" for a
  single query, as MAP pooling's probe), else "xla"; "xla" on TPU.

The fused kernels ("xla", "cudnn") have no attention-weight dropout: asking
for it in training is an error naming the implementation.

`return_weights=True` (inspection: attention maps, rollout) computes the
attention with "einsum", whatever `implementation` says, and returns
`(y, weights [B, H, T, S])`, the softmax weights before dropout.
"""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from big_vision_like.models import common

IMPLEMENTATIONS = ("auto", "einsum", "xla", "cudnn")


def check_implementation(name):
  if name not in IMPLEMENTATIONS:
    raise ValueError(f"Unknown attention implementation {name!r}; known: "
                     f"{IMPLEMENTATIONS}.")


def resolve_implementation(name, dtype, dropout_active):
  """The kernel "auto" stands for on this backend (see the module doc)."""
  check_implementation(name)
  if name != "auto":
    return name
  backend = jax.default_backend()
  if backend == "cpu":
    return "einsum"
  if (backend == "gpu" and not dropout_active
      and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)):
    return "cudnn"
  return "xla"


def _flattened_init(init, n_in):
  """`init` applied to the 2-D (inputs, outputs) shape, as flax DenseGeneral."""
  def wrapped(rng, shape, dtype=jnp.float32):
    flat = (int(np.prod(shape[:n_in])), int(np.prod(shape[n_in:])))
    return jnp.reshape(init(rng, flat, dtype), shape)
  return wrapped


class _Projection(nn.Module):
  """The kernel and bias of a flax DenseGeneral; the caller applies them."""
  kernel_shape: tuple[int, ...]
  n_in: int  # leading input axes of the kernel
  kernel_init: Callable
  use_bias: bool = True
  param_dtype: str = "float32"

  @nn.compact
  def __call__(self):
    kernel = self.param("kernel", _flattened_init(self.kernel_init, self.n_in),
                        self.kernel_shape, jnp.dtype(self.param_dtype))
    if not self.use_bias:
      return kernel, None
    bias = self.param("bias", nn.initializers.zeros,
                      self.kernel_shape[self.n_in:], jnp.dtype(self.param_dtype))
    return kernel, bias


def _einsum_attention(q, k, v, bias, mask, dropout, deterministic):
  """q [B, H, T, d], k, v [B, H, S, d] (q pre-scaled) -> ([B, H, T, d],
  softmax weights [B, H, T, S] before dropout, float32)."""
  logits = common.einsum("bhtd,bhsd->bhts", q, k)  # [B, H, T, S]
  if bias is not None:
    logits = logits + bias.astype(logits.dtype)
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
  weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  dropped = dropout(weights.astype(q.dtype), deterministic)
  return common.einsum("bhts,bhsd->bhtd", dropped, v), weights  # [B, H, T, d]


def _as_4d(x):
  return None if x is None else x.reshape((1,) * (4 - x.ndim) + x.shape)


def _pad_to_even_lengths(q, k, v, bias, mask):
  """Pads odd T and S by one position for cuDNN's training kernels.

  jax (0.10, 0.11) checks the sequence lengths of its cuDNN attention's
  backward as if a bias were always present, and refuses odd ones (ViT's
  197 tokens). The padded query rows are cut off by the caller; the padded
  key is masked out: by the key lengths where there is no mask or bias (no
  bias tensor then), else by a False column in the mask.

  Returns (q, k, v, bias, mask, key_value_seq_lengths or None).
  """
  (b, t), s = q.shape[:2], k.shape[1]
  pad_t, pad_s = t % 2, s % 2
  pad_len = lambda x, n: jnp.pad(x, [(0, 0), (0, n)] + [(0, 0)] * (x.ndim - 2))
  q, k, v = pad_len(q, pad_t), pad_len(k, pad_s), pad_len(v, pad_s)
  if bias is None and mask is None:
    lengths = jnp.full((b,), s, jnp.int32) if pad_s else None
    return q, k, v, None, None, lengths
  bias, mask = _as_4d(bias), _as_4d(mask)
  if mask is None and pad_s:
    mask = jnp.ones((1, 1, 1, s), bool)

  def pad_rows_cols(x, value):  # [.., T or 1, S or 1] -> [.., T', S'].
    x = jnp.broadcast_to(x, x.shape[:2] + (
        t if pad_t and x.shape[2] > 1 else x.shape[2], s))
    return jnp.pad(x, [(0, 0), (0, 0), (0, pad_t if x.shape[2] > 1 else 0),
                       (0, pad_s)], constant_values=value)
  bias = None if bias is None else pad_rows_cols(bias, 0)
  mask = None if mask is None else pad_rows_cols(mask, False)
  if mask is not None and pad_t and mask.shape[2] > 1:
    mask = mask.at[:, :, t:, :s].set(True)  # Padded queries attend anywhere.
  return q, k, v, bias, mask, None


def _fused_attention(q, k, v, bias, mask, implementation, xla_fallback):
  """q [B, T, H, d], k, v [B, S, H, d] (q pre-scaled) -> [B, T, H, d].

  With `xla_fallback`, inputs the implementation rejects (checked at trace
  time: shapes, dtypes, GPU) run on "xla" instead.
  """
  if implementation == "cudnn" and not xla_fallback:
    # jax's cuDNN call wants the query axis of a mask or bias whole.
    whole = lambda x: None if x is None else jnp.broadcast_to(
        _as_4d(x), _as_4d(x).shape[:2] + (q.shape[1], k.shape[1]))
    bias, mask = whole(bias), whole(mask)

  def run(impl):
    if impl == "cudnn" and (q.shape[1] % 2 or k.shape[1] % 2):
      return _padded_attention(q, k, v, bias, mask, impl)
    return jax.nn.dot_product_attention(
        q, k, v, bias=bias, mask=mask, scale=1.0, implementation=impl)
  if not xla_fallback:
    return run(implementation)
  try:
    return run(implementation)
  except (ValueError, NotImplementedError, RuntimeError):
    return run("xla")


def _padded_attention(q, k, v, bias, mask, implementation):
  """`jax.nn.dot_product_attention` on even-length inputs (see above)."""
  t = q.shape[1]
  *padded, lengths = _pad_to_even_lengths(q, k, v, bias, mask)
  q, k, v, bias, mask = padded
  y = jax.nn.dot_product_attention(
      q, k, v, bias=bias, mask=mask, scale=1.0, key_value_seq_lengths=lengths,
      implementation=implementation)
  return y[:, :t]


class MultiHeadAttention(nn.Module):
  """softmax(q k^T / sqrt(d) + bias) v over `num_heads` heads.

  Same params as `nn.MultiHeadDotProductAttention` (see the module doc).
  `__call__(inputs_q [B, T, D], inputs_kv [B, S, Dkv] or None for
  self-attention, mask=None, bias=None, deterministic=True) -> [B, T, D]`;
  `mask` is bool and broadcastable to [B, H, T, S] (True: attend), `bias`
  is added to the logits.
  """
  num_heads: int
  dtype_mm: str = "float32"
  param_dtype: str = "float32"
  kernel_init: Callable = nn.initializers.xavier_uniform()
  implementation: str = "auto"  # see IMPLEMENTATIONS
  dropout_rate: float = 0.0  # attention-weight dropout ("einsum" only)
  qk_norm: bool = False  # LayerNorm (scale only) of q, k: query_ln, key_ln
  use_bias: bool = True
  norm_eps: float = 1e-6  # of the qk LayerNorms
  return_weights: bool = False  # (y, weights [B, H, T, S]); "einsum" path

  def _projections(self, d_q, d_kv):
    h = self.num_heads
    if d_q % h:
      raise ValueError(f"Attention width {d_q} is not divisible by "
                       f"num_heads={h}.")
    kw = dict(kernel_init=self.kernel_init, use_bias=self.use_bias,
              param_dtype=self.param_dtype)
    q = _Projection((d_q, h, d_q // h), 1, name="query", **kw)()
    k = _Projection((d_kv, h, d_q // h), 1, name="key", **kw)()
    v = _Projection((d_kv, h, d_q // h), 1, name="value", **kw)()
    o = _Projection((h, d_q // h, d_q), 2, name="out", **kw)()
    return q, k, v, o

  def _project(self, x, projections, dtype):
    """x [B, L, Din] @ n stacked [Din, H, d] kernels -> n x [B, L, H, d]."""
    w = jnp.stack([p[0] for p in projections], axis=1).astype(dtype)
    y = common.einsum("bli,inhd->blnhd", x.astype(dtype), w)  # [B, L, n, H, d]
    if self.use_bias:
      y = y + jnp.stack([p[1] for p in projections]).astype(dtype)
    return [y[:, :, i] for i in range(len(projections))]

  def _norm(self, x, name):  # As flax's `normalize_qk`: a scale, no bias.
    return nn.LayerNorm(epsilon=self.norm_eps, use_bias=False, name=name,
                        param_dtype=jnp.dtype(self.param_dtype))(x)

  @nn.compact
  def __call__(self, inputs_q, inputs_kv=None, *, mask=None, bias=None,
               deterministic=True):
    dtype = jnp.dtype(self.dtype_mm)
    dropout_active = self.dropout_rate > 0.0 and not deterministic
    impl = resolve_implementation(self.implementation, dtype, dropout_active)
    if self.implementation == "auto" and impl == "cudnn" and (
        inputs_q.shape[-2] == 1):
      impl = "xla"  # One query (MAP pooling): no T x S logits to save.
    if self.return_weights:
      impl = "einsum"  # The fused kernels never materialise the weights.
    if dropout_active and impl != "einsum":
      raise NotImplementedError(
          f"Attention-weight dropout (dropout_rate={self.dropout_rate}) needs "
          f"implementation='einsum'; {impl!r} has none.")
    self_attention = inputs_kv is None
    inputs_kv = inputs_q if self_attention else inputs_kv
    (wq, bq), kp, vp, (wo, bo) = self._projections(inputs_q.shape[-1],
                                                   inputs_kv.shape[-1])
    scale = 1.0 / np.sqrt(wq.shape[-1])
    if not self.qk_norm:  # Fold the logits' scale into the query kernel.
      wq, bq = wq * scale, None if bq is None else bq * scale
    if self_attention:
      q, k, v = self._project(inputs_q, [(wq, bq), kp, vp], dtype)
    else:
      (q,) = self._project(inputs_q, [(wq, bq)], dtype)
      k, v = self._project(inputs_kv, [kp, vp], dtype)
    if self.qk_norm:  # [B, L, H, d], over d.
      q = self._norm(q, "query_ln").astype(dtype) * scale
      k = self._norm(k, "key_ln").astype(dtype)

    # common.dot_general returns float32 on CPU; the matmuls take `dtype`.
    q, k, v = (t.astype(dtype) for t in (q, k, v))
    if impl == "einsum":
      dropout = nn.Dropout(rate=self.dropout_rate, broadcast_dims=())
      q, k, v = (jnp.swapaxes(t, 1, 2) for t in (q, k, v))  # [B, H, L, d]
      y, weights = _einsum_attention(q, k, v, bias, mask, dropout,
                                     deterministic)
      y = common.einsum("bhtd,hde->bte", y.astype(dtype), wo.astype(dtype))
    else:
      y = _fused_attention(  # [B, T, H, d]; "auto" may fall back.
          q, k, v, bias, mask, impl, self.implementation == "auto")
      y = common.einsum("bthd,hde->bte", y.astype(dtype), wo.astype(dtype))
    if bo is not None:
      y = y + bo.astype(dtype)
    return (y, weights) if self.return_weights else y
