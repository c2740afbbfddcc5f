"""Small helpers shared by the model modules."""

import math

import jax
import jax.numpy as jnp
import numpy as np


def to_dtype(name):
  """Returns the numpy dtype for a name like "bfloat16" (None: float32)."""
  return jnp.dtype("float32" if name is None else name)


def posemb_sincos_2d(h, w, width, temperature=10_000., dtype=jnp.float32):
  """Fixed 2-D sin-cos position embedding ("Better plain ViT baselines").

  Args:
    h: grid height (patches).
    w: grid width (patches).
    width: embedding size D; must be a multiple of 4.
    temperature: the base of the geometric frequency progression.
    dtype: dtype of the result.

  Returns:
    An array [1, h*w, D]: sin(x), cos(x), sin(y), cos(y) blocks of D/4 each.
  """
  if width % 4:
    raise ValueError(f"sincos2d needs a width divisible by 4, got {width}.")
  quarter = width // 4
  ys, xs = jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij")  # [h, w]
  omega = jnp.arange(quarter) / max(quarter - 1, 1)
  omega = 1.0 / (temperature ** omega)  # [D/4]
  y = ys.reshape(-1)[:, None] * omega[None, :]  # [h*w, D/4]
  x = xs.reshape(-1)[:, None] * omega[None, :]  # [h*w, D/4]
  pe = jnp.concatenate([jnp.sin(x), jnp.cos(x), jnp.sin(y), jnp.cos(y)], 1)
  return jnp.asarray(pe, dtype)[None]  # [1, h*w, D]


def resample_posemb(old, new_hw):
  """Bilinearly resizes a learned position embedding to another grid.

  Used to transfer a ViT to another resolution (or patch size). The old grid
  must be square. If the old embedding has one extra leading entry (a class
  token in the original ViT layout), that entry is kept unchanged.

  Args:
    old: [1, h*w, D] (or [1, 1 + h*w, D]) position embedding.
    new_hw: new grid size, an int or (h2, w2).

  Returns:
    [1, h2*w2, D] (or [1, 1 + h2*w2, D]), same dtype and array type as `old`.
  """
  h2, w2 = (new_hw, new_hw) if isinstance(new_hw, int) else tuple(new_hw)
  n, d = old.shape[1], old.shape[2]
  extra = 0
  side = math.isqrt(n)
  if side * side != n:
    extra, side = 1, math.isqrt(n - 1)
    if side * side != n - 1:
      raise ValueError(f"Position embedding of length {n} is not a square "
                       "grid (with or without one class token).")
  head, grid = old[:, :extra], old[:, extra:]
  grid = jnp.reshape(jnp.asarray(grid, jnp.float32), (side, side, d))
  grid = jax.image.resize(grid, (h2, w2, d), method="bilinear")  # [h2, w2, D]
  grid = jnp.reshape(grid, (1, h2 * w2, d)).astype(old.dtype)
  new = jnp.concatenate([jnp.asarray(head), grid], axis=1)
  return np.asarray(new) if isinstance(old, np.ndarray) else new


def dot_product_attention(query, key, value, bias=None, mask=None, *,
                          dropout_rate=0.0, deterministic=True, dtype=None,
                          precision=None, **unused_kw):
  """Softmax attention computed in the [B, H, L, D] layout.

  A drop-in `attention_fn` for `nn.MultiHeadDotProductAttention` (same
  parameters, same results). XLA:CPU runs the batched matmuls several times
  faster with the batch and head axes leading than flax's default einsums
  over [B, L, H, D], which matters for ViTs with short head dimensions.

  Args:
    query: [B, Q, H, D]; key, value: [B, K, H, D].
    bias: optional, broadcastable to [B, H, Q, K], added to the logits.
    mask: optional bool, broadcastable to [B, H, Q, K]; False is masked out.
    dropout_rate: attention-weight dropout is not supported (must be 0 in
      training).
    deterministic: whether dropout would be off.
    dtype: the computation dtype (default: the query's).
    precision: matmul precision.

  Returns:
    [B, Q, H, D].
  """
  if dropout_rate > 0.0 and not deterministic:
    raise NotImplementedError("Attention-weight dropout is not supported.")
  dtype = dtype or query.dtype
  q, k, v = (jnp.swapaxes(t, 1, 2).astype(dtype) for t in (query, key, value))
  q = q / jnp.sqrt(q.shape[-1]).astype(dtype)
  logits = jnp.einsum("bhqd,bhkd->bhqk", q, k, precision=precision)
  if bias is not None:
    logits = logits + bias.astype(logits.dtype)
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
  weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(dtype)
  out = jnp.einsum("bhqk,bhkd->bhqd", weights, v, precision=precision)
  return jnp.swapaxes(out, 1, 2)  # [B, Q, H, D]
