"""Gradient accumulation: the full batch's gradient from K micro-batches.

`config.grad_accum_steps = K` splits each device's share of the global batch
into K micro-batches that the jitted step processes one after another
(`lax.scan`), so that activation memory is that of one micro-batch, and the
optimizer takes one update with exactly the gradient of the whole batch.
Micro-batch k holds the k-th slice of every device's share, so it is sharded
like the batch and splitting moves no data between devices.

Two exact ways, chosen by the loss:

- `mean_grads`, for objectives that are means over examples (the
  classification losses; they set `example_mean = True`): the gradient of
  the batch is the average of the micro-batches' gradients. One forward and
  one backward pass per example.
- `cached_grads`, for every other objective, e.g. the contrastive losses,
  whose value couples each image with every text of the global batch
  ("gradient caching", Gao et al. 2021, "Scaling Deep Contrastive Learning
  Batch Size under Memory Limited Setup"; open_clip's `--accum-freq`):
    1. embed every micro-batch, keeping no activations (outputs only);
    2. evaluate the objective on the whole batch's outputs and take its
       gradient with respect to the outputs (any implementation of the loss,
       e.g. the chunked ring, runs here on the global batch);
    3. recompute each micro-batch's forward pass and back-propagate its
       slice of that output gradient into the params, summing over
       micro-batches.
  Costs one extra forward pass per example. Outputs that do not depend on
  the batch (the temperature `t` and bias `b` of a two-tower model) are
  taken once; their gradient is shared out over the micro-batches.

Micro-batch k runs with dropout RNG `fold_in(rng, k)`, in both passes of
`cached_grads` (so the recomputed forward pass is the one step 1 saw).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_like import config as config_lib

P = jax.sharding.PartitionSpec


def is_example_mean(loss_fn):
  """Whether `loss_fn` (or the function it partially applies) declares
  itself a mean over examples (`example_mean = True`)."""
  while isinstance(loss_fn, functools.partial):
    if getattr(loss_fn, "example_mean", False):
      return True
    loss_fn = loss_fn.func
  return bool(getattr(loss_fn, "example_mean", False))


def num_batch_shards(batch_sharding):
  """How many devices the batch's leading axis is split over."""
  if batch_sharding is None:
    return 1
  mesh, spec = batch_sharding.mesh, batch_sharding.spec
  axes = spec[0] if len(spec) else None
  if axes is None:
    return 1
  axes = (axes,) if isinstance(axes, str) else tuple(axes)
  return int(np.prod([mesh.shape[a] for a in axes]))


def check_steps(grad_accum_steps, per_device_batch=None):
  """Raises naming `config.grad_accum_steps` unless it is an integer >= 1
  that divides `per_device_batch` (when given)."""
  k = grad_accum_steps
  if not config_lib.is_integer(k) or k < 1:
    raise ValueError(f"config.grad_accum_steps={k!r}: must be an integer "
                     ">= 1.")
  if per_device_batch is not None and per_device_batch % k:
    divisors = [d for d in range(1, per_device_batch + 1)
                if per_device_batch % d == 0]
    raise ValueError(
        f"config.grad_accum_steps={k} does not divide the per-device batch "
        f"of {per_device_batch}: use one of {divisors}, or change "
        "config.input.batch_size.")


class _Splitter:
  """Splits a global batch into K sharded micro-batches and back."""

  def __init__(self, k, batch_sharding):
    self.k, self.n = k, num_batch_shards(batch_sharding)
    self._sharding = batch_sharding

  def _constrain(self, x, spec):
    if self._sharding is None:
      return x
    sharding = jax.sharding.NamedSharding(self._sharding.mesh, spec)
    return jax.lax.with_sharding_constraint(x, sharding)

  def _batch_axes(self):
    return self._sharding.spec[0] if self._sharding is not None else None

  def split(self, x):
    """[B, ...] -> [K, B/K, ...]; row k is slice k of every device share."""
    k, n = self.k, self.n
    if x.shape[0] % (k * n):
      raise ValueError(f"config.grad_accum_steps={k}: the batch of "
                       f"{x.shape[0]} does not split into {k} micro-batches "
                       f"on each of {n} devices.")
    m = x.shape[0] // (k * n)
    x = x.reshape(n, k, m, *x.shape[1:]).swapaxes(0, 1)  # [K, n, m, ...]
    x = x.reshape(k, n * m, *x.shape[3:])
    return self._constrain(x, P(None, self._batch_axes()))

  def merge(self, x):
    """The inverse of `split`: [K, B/K, ...] -> [B, ...] in batch order."""
    k, n = self.k, self.n
    m = x.shape[1] // n
    x = x.reshape(k, n, m, *x.shape[2:]).swapaxes(0, 1)  # [n, K, m, ...]
    x = x.reshape(n * k * m, *x.shape[3:])
    return self._constrain(x, P(self._batch_axes()))


def _split_batch(splitter, batch):
  return jax.tree.map(splitter.split, batch)


def _zeros_like(tree):
  return jax.tree.map(jnp.zeros_like, tree)


def mean_grads(objective, params, batch, rng, k, batch_sharding=None):
  """((loss, metrics), grads) of an example-mean `objective`, K micro-batches.

  Args:
    objective: `fn(params, batch, rng) -> (loss, metrics)`, a mean over the
      batch's examples.
    params: the params to differentiate.
    batch: the global batch (dict of [B, ...] arrays).
    rng: the step's dropout key; micro-batch i gets `fold_in(rng, i)`.
    k: the number of micro-batches.
    batch_sharding: how the batch is sharded (None: unsharded).

  Returns:
    The mean loss and metrics over micro-batches, and the mean gradient:
    those of the whole batch.
  """
  micro = _split_batch(_Splitter(k, batch_sharding), batch)
  grad_fn = jax.value_and_grad(objective, has_aux=True)

  def body(acc, xs):
    i, mb = xs
    (loss, metrics), grads = grad_fn(params, mb, jax.random.fold_in(rng, i))
    acc = jax.tree.map(jnp.add, acc, (loss, metrics, grads))
    return acc, None

  (loss, metrics), grads = jax.eval_shape(
      lambda: grad_fn(params, jax.tree.map(lambda x: x[0], micro), rng))
  init = _zeros_like((loss, metrics, grads))
  total, _ = jax.lax.scan(body, init, (jnp.arange(k), micro))
  loss, metrics, grads = jax.tree.map(lambda x: x / k, total)
  return (loss, metrics), grads


def _batch_leaves(forward, params, batch, micro, rng):
  """Per output leaf: True if it has the batch axis, False if shared."""
  full = jax.eval_shape(forward, params, batch, rng)
  one = jax.eval_shape(forward, params,
                       jax.tree.map(lambda x: x[0], micro), rng)

  def kind(f, o):
    if f.shape == o.shape:
      return False
    if f.shape[1:] == o.shape[1:]:
      return True
    raise ValueError(f"Model output of shape {f.shape} for the batch but "
                     f"{o.shape} for a micro-batch: neither per-example nor "
                     "shared; config.grad_accum_steps cannot split it.")

  return jax.tree.map(kind, full, one)


def cached_grads(forward, loss_fn, params, batch, rng, k, batch_sharding=None):
  """((loss, metrics), grads) of any objective by gradient caching.

  Args:
    forward: `fn(params, batch, rng) -> outputs` (the model applied).
    loss_fn: `fn(outputs, batch) -> (loss, metrics)` on the whole batch.
    params: the params to differentiate.
    batch: the global batch (dict of [B, ...] arrays).
    rng: the step's dropout key; micro-batch i gets `fold_in(rng, i)`.
    k: the number of micro-batches.
    batch_sharding: how the batch is sharded (None: unsharded).

  Returns:
    The loss and metrics of the whole batch and their exact gradient.
  """
  splitter = _Splitter(k, batch_sharding)
  micro = _split_batch(splitter, batch)
  per_example = _batch_leaves(forward, params, batch, micro, rng)
  keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(k))

  # 1. Every micro-batch's outputs; the scan keeps no activations.
  def embed(_, xs):
    mb, key = xs
    return None, jax.lax.stop_gradient(forward(params, mb, key))

  _, stacked = jax.lax.scan(embed, None, (micro, keys))  # [K, B/K, ...]
  outputs = jax.tree.map(lambda x, b: splitter.merge(x) if b else x[0],
                         stacked, per_example)

  # 2. The objective on the whole batch and its gradient w.r.t. the outputs.
  (loss, metrics), d_outputs = jax.value_and_grad(
      lambda o: loss_fn(o, batch), has_aux=True)(outputs)

  # 3. Each micro-batch's slice of that gradient, back through its forward.
  d_micro = jax.tree.map(
      lambda d, b: splitter.split(d) if b else jnp.broadcast_to(
          d / k, (k, *d.shape)), d_outputs, per_example)

  def backprop(acc, xs):
    mb, key, d = xs
    _, vjp = jax.vjp(lambda p: forward(p, mb, key), params)
    return jax.tree.map(jnp.add, acc, vjp(d)[0]), None

  grads, _ = jax.lax.scan(backprop, _zeros_like(params), (micro, keys, d_micro))
  return (loss, metrics), grads
