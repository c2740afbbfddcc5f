"""Contrastive image-text losses: sigmoid (SigLIP) and softmax (CLIP).

Both take L2-normalised embeddings `zimg`, `ztxt` [N, D] (row i of each is a
positive pair), the temperature `t` (already exponentiated) and, for the
sigmoid loss, the bias `b`:

  sigmoid: -(1/N) sum_ij log sigmoid(label_ij * (t * zimg_i . ztxt_j + b)),
           label_ij = +1 if i == j else -1.
  softmax: mean of the image->text and text->image cross-entropies of the
           logits t * zimg @ ztxt.T over the global batch.

`implementation` says how the batch, sharded over the mesh's batch axes, is
scored:

- "global": the formula on the global arrays; the compiler partitions it.
- "all_gather": each device gathers every text (and, for softmax, every
  image) and scores its own images (texts) against them: N x N/devices logits
  per device.
- "chunked" (sigmoid only): a ring under `shard_map`: each device scores its
  own images against one block of texts at a time, then passes the block to
  its neighbour (collective permute). No device ever holds more than its own
  text block plus the one in flight (and, in the backward pass, that block's
  gradient), or more than a local-batch-squared block of logits. The backward
  pass is a second trip around the ring (custom VJP), so the blocks are not
  kept for it.

All implementations give the unsharded formula's value and gradients.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_like.registry import LOSSES

P = jax.sharding.PartitionSpec
_IMPLEMENTATIONS = ("global", "all_gather", "chunked")


# Unsharded formulas.


def _sigmoid_block(zimg, ztxt, t, b, positive):
  """Sum over a block of -log sigmoid(label * logit); [n, D] x [m, D]."""
  logits = t * (zimg @ ztxt.T) + b  # [n, m]
  eye = jnp.eye(*logits.shape, dtype=logits.dtype)
  labels = jnp.where(positive, 2.0 * eye - 1.0, -1.0)
  return -jnp.sum(jax.nn.log_sigmoid(labels * logits))


def _softmax_xent_rows(logits, offset, label_smoothing):
  """Cross-entropies of rows whose target is column `offset + row`."""
  n, m = logits.shape
  targets = jax.nn.one_hot(offset + jnp.arange(n), m, dtype=logits.dtype)
  if label_smoothing:
    targets = targets * (1.0 - label_smoothing) + label_smoothing / m
  return -jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1))


def _sigmoid_global(zimg, ztxt, t, b):
  return _sigmoid_block(zimg, ztxt, t, b, True) / zimg.shape[0]


def _softmax_global(zimg, ztxt, t, label_smoothing):
  logits = t * (zimg @ ztxt.T)  # [N, N]
  i2t = _softmax_xent_rows(logits, 0, label_smoothing)
  t2i = _softmax_xent_rows(logits.T, 0, label_smoothing)
  return (i2t + t2i) / (2 * zimg.shape[0])


# Sharded implementations (bodies run per device under shard_map).


def _shard_offset(axes, n_local):
  return jax.lax.axis_index(axes) * n_local


def _sigmoid_all_gather(zimg, ztxt, t, b, *, axes):
  txt = jax.lax.all_gather(ztxt, axes, tiled=True)  # [N, D]
  logits = t * (zimg @ txt.T) + b  # [n, N]
  pos = jax.nn.one_hot(_shard_offset(axes, zimg.shape[0]) +
                       jnp.arange(zimg.shape[0]), txt.shape[0],
                       dtype=logits.dtype)
  loss = -jnp.sum(jax.nn.log_sigmoid((2.0 * pos - 1.0) * logits))
  return jax.lax.psum(loss, axes) / txt.shape[0]


def _softmax_all_gather(zimg, ztxt, t, *, axes, label_smoothing):
  img = jax.lax.all_gather(zimg, axes, tiled=True)  # [N, D]
  txt = jax.lax.all_gather(ztxt, axes, tiled=True)  # [N, D]
  offset = _shard_offset(axes, zimg.shape[0])
  i2t = _softmax_xent_rows(t * (zimg @ txt.T), offset, label_smoothing)
  t2i = _softmax_xent_rows(t * (ztxt @ img.T), offset, label_smoothing)
  return jax.lax.psum(i2t + t2i, axes) / (2 * img.shape[0])


def _ring_perm(n):
  """Device i sends to i - 1: after k steps, i holds block i + k."""
  return [(i, (i - 1) % n) for i in range(n)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _ring_sigmoid_sum(zimg, ztxt, t, b, axes, n):
  """This device's images against every text block, passed around a ring."""
  own = _sigmoid_block(zimg, ztxt, t, b, True)

  def step(carry, _):
    block, total = carry
    block = jax.lax.ppermute(block, axes, _ring_perm(n))
    return (block, total + _sigmoid_block(zimg, block, t, b, False)), None

  (_, total), _ = jax.lax.scan(step, (ztxt, own), None, length=n - 1)
  return total


def _ring_fwd(zimg, ztxt, t, b, axes, n):
  return _ring_sigmoid_sum(zimg, ztxt, t, b, axes, n), (zimg, ztxt, t, b)


def _ring_bwd(axes, n, residuals, g):
  """Second trip: each text block travels with its gradient accumulator."""
  zimg, ztxt, t, b = residuals

  def step(carry, k):
    block, dblock, dimg, dt, db = carry
    _, vjp = jax.vjp(
        lambda zi, zt, t_, b_: _sigmoid_block(zi, zt, t_, b_, k == 0),
        zimg, block, t, b)
    gi, gt, gtt, gb = vjp(g)
    block, dblock = jax.lax.ppermute((block, dblock + gt), axes, _ring_perm(n))
    return (block, dblock, dimg + gi, dt + gtt, db + gb), None

  init = (ztxt, jnp.zeros_like(ztxt), jnp.zeros_like(zimg), jnp.zeros_like(t),
          jnp.zeros_like(b))
  (_, dtxt, dimg, dt, db), _ = jax.lax.scan(step, init, jnp.arange(n))
  return dimg, dtxt, dt, db


_ring_sigmoid_sum.defvjp(_ring_fwd, _ring_bwd)


def _sigmoid_chunked(zimg, ztxt, t, b, *, axes, n):
  total = _ring_sigmoid_sum(zimg, ztxt, t, b, axes, n)
  return jax.lax.psum(total, axes) / (zimg.shape[0] * n)


def _sharded(body, mesh, batch_axes, arrays, scalars):
  """Runs `body(*arrays, *scalars)` per device; arrays split over the batch."""
  axes = tuple(batch_axes or mesh.axis_names)
  specs = (P(axes),) * len(arrays) + (P(),) * len(scalars)
  fn = jax.shard_map(functools.partial(body, axes=axes), mesh=mesh,
                     in_specs=specs, out_specs=P())
  return fn(*arrays, *scalars)


def _check(implementation, allowed, zimg, ztxt, mesh, batch_axes):
  if implementation not in allowed:
    raise ValueError(f"Unknown contrastive loss implementation "
                     f"{implementation!r}; this loss offers {allowed}.")
  if zimg.shape != ztxt.shape:
    raise ValueError(f"zimg {zimg.shape} and ztxt {ztxt.shape} must have the "
                     "same shape [N, D].")
  if implementation != "global" and mesh is None:
    raise ValueError(f"implementation={implementation!r} needs the mesh.")
  if mesh is not None:
    axes = tuple(batch_axes or mesh.axis_names)
    n = int(np.prod([mesh.shape[a] for a in axes]))
    if zimg.shape[0] % n:
      raise ValueError(f"The batch of {zimg.shape[0]} is not divisible by "
                       f"the {n} devices of the batch axes {axes}.")
    return n
  return 1


def sigmoid_loss(zimg, ztxt, t, b, *, implementation="global", mesh=None,
                 batch_axes=None):
  """The SigLIP loss (a scalar); see the module docstring.

  Args:
    zimg: [N, D] normalised image embeddings (global batch).
    ztxt: [N, D] normalised text embeddings; row i pairs with zimg row i.
    t: the temperature (scalar or shape [1]), already exponentiated.
    b: the bias (scalar or shape [1]).
    implementation: "global", "all_gather" or "chunked".
    mesh: the device mesh (needed unless implementation is "global").
    batch_axes: the mesh axes the batch is split over (default: all).
  """
  n = _check(implementation, _IMPLEMENTATIONS, zimg, ztxt, mesh, batch_axes)
  t, b = jnp.reshape(t, ()), jnp.reshape(b, ())
  if implementation == "global":
    return _sigmoid_global(zimg, ztxt, t, b)
  if implementation == "all_gather":
    return _sharded(_sigmoid_all_gather, mesh, batch_axes, (zimg, ztxt),
                    (t, b))
  return _sharded(functools.partial(_sigmoid_chunked, n=n), mesh, batch_axes,
                  (zimg, ztxt), (t, b))


def softmax_loss(zimg, ztxt, t, *, label_smoothing=0.0,
                 implementation="global", mesh=None, batch_axes=None):
  """The CLIP loss (a scalar); see the module docstring.

  Args:
    zimg: [N, D] normalised image embeddings (global batch).
    ztxt: [N, D] normalised text embeddings; row i pairs with zimg row i.
    t: the temperature (scalar or shape [1]), already exponentiated.
    label_smoothing: mixes the targets with the uniform distribution.
    implementation: "global" or "all_gather".
    mesh: the device mesh (needed for "all_gather").
    batch_axes: the mesh axes the batch is split over (default: all).
  """
  _check(implementation, ("global", "all_gather"), zimg, ztxt, mesh,
         batch_axes)
  t = jnp.reshape(t, ())
  if implementation == "global":
    return _softmax_global(zimg, ztxt, t, label_smoothing)
  body = functools.partial(_softmax_all_gather,
                           label_smoothing=label_smoothing)
  return _sharded(body, mesh, batch_axes, (zimg, ztxt), (t,))


# Trainer objectives: `(outputs, batch, **kw) -> (loss, metrics)`.


def _temperature_metrics(aux):
  out = {"t": jnp.reshape(aux["t"], ())}
  if aux.get("b") is not None:
    out["b"] = jnp.reshape(aux["b"], ())
  return out


@LOSSES.register("sigmoid_loss")
def sigmoid_objective(outputs, batch, *, implementation="chunked", mesh=None,
                      batch_axes=None):
  """SigLIP objective over the two-tower outputs `(zimg, ztxt, aux)`."""
  del batch
  zimg, ztxt, aux = outputs
  if aux.get("b") is None:
    raise ValueError("sigmoid_loss needs a bias: set the two-tower model's "
                     "bias_init (SigLIP uses -10).")
  loss = sigmoid_loss(zimg, ztxt, aux["t"], aux["b"], mesh=mesh,
                      batch_axes=batch_axes,
                      implementation=implementation if mesh else "global")
  return loss, _temperature_metrics(aux)


@LOSSES.register("softmax_loss")
def softmax_objective(outputs, batch, *, implementation="all_gather",
                      label_smoothing=0.0, mesh=None, batch_axes=None):
  """CLIP objective over the two-tower outputs `(zimg, ztxt, aux)`."""
  del batch
  zimg, ztxt, aux = outputs
  loss = softmax_loss(zimg, ztxt, aux["t"], label_smoothing=label_smoothing,
                      mesh=mesh, batch_axes=batch_axes,
                      implementation=implementation if mesh else "global")
  return loss, _temperature_metrics(aux)
