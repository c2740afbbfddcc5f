"""Mixup and CutMix, applied on device inside the jitted train step.

Pure JAX functions of `(rng, batch)` returning a new batch (a dict of
arrays); keys that are not mixed pass through. Each example is mixed with its
neighbour in the batch rolled by one (`jnp.roll(x, 1, axis=0)`), with one
mixing weight (and one CutMix box) per batch, as in big_vision.

Call them on the *global* batch inside `jit`, with the batch sharded over the
mesh as the trainer gives it: rolling then pairs examples across device
boundaries (the compiler inserts the collective permute), so the result does
not depend on the number of devices. Calling them per device (e.g. under
`shard_map`) would change which examples get mixed.

Mixed arrays must be floating point: images after `value_range`, labels
one-hot or multi-hot (`onehot` pp op); the mixed labels then still sum to
what they summed to before.

The trainer configures them with dicts of keyword arguments, e.g.
`config.mixup = dict(p=0.2)`, `config.cutmix = dict(alpha=1.0)`, passed to
`apply_mix`, which checks the names against the signatures below.
"""

import inspect

import jax
import jax.numpy as jnp


def _check_float(key, x):
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"Can only mix floating-point arrays; batch[{key!r}] is "
                    f"{x.dtype} (one-hot encode labels, value_range images).")


def _mix(x, weight):
  """(1 - weight) * x + weight * x rolled by one along the batch."""
  weight = jnp.asarray(weight, x.dtype)
  return (1 - weight) * x + weight * jnp.roll(x, 1, axis=0)


def mixup_weight(rng, p):
  """The weight of the rolled batch: min(a, 1 - a), a ~ Beta(p, p).

  Taking the smaller of the two (big_vision sorts the Dirichlet weights) keeps
  each example the dominant one in its own mix. Like big_vision, this draws
  (a, 1 - a) from Dirichlet(p, p): one Gamma sampler (in log space, exact
  for small p) compiles faster than `jax.random.beta`'s two.

  Args:
    rng: a JAX PRNG key.
    p: the Beta concentration (typically 0.1 or 0.2).

  Returns:
    A float32 scalar in [0, 0.5].
  """
  return jnp.min(_symmetric_dirichlet(rng, p))


def _symmetric_dirichlet(rng, concentration):
  """(a, 1 - a) with a ~ Beta(concentration, concentration), float32 [2]."""
  return jax.random.dirichlet(rng, jnp.full((2,), concentration, jnp.float32))


def mixup(rng, batch, *, p=0.2, keys=("image", "labels")):
  """Mixup (Zhang et al. 2017) of `batch[k]` for `k` in `keys`.

  Every array becomes `(1 - w) * x + w * roll(x, 1)` with one weight
  `w = mixup_weight(rng, p)` for the whole batch and all `keys`.

  Args:
    rng: a JAX PRNG key.
    batch: dict of arrays with a leading batch axis (the global batch).
    p: the Beta(p, p) concentration of the mixing weight.
    keys: the entries to mix (floating point).

  Returns:
    The batch with `keys` mixed.
  """
  for k in keys:
    _check_float(k, batch[k])
  weight = mixup_weight(rng, p)
  out = dict(batch)
  for k in keys:
    out[k] = _mix(batch[k], weight)
  return out


def cutmix_box(rng, height, width, alpha):
  """Draws a CutMix box (Yun et al. 2019) on a `height` x `width` image.

  lam ~ Beta(alpha, alpha); the box has sides int(side * sqrt(1 - lam)) and a
  uniformly drawn centre, and is clipped to the image.

  Args:
    rng: a JAX PRNG key.
    height: image height (static int).
    width: image width (static int).
    alpha: the Beta concentration.

  Returns:
    (mask [height, width] bool, True inside the box; the box's area as a
    fraction of the image, float32).
  """
  rng_lam, rng_y, rng_x = jax.random.split(rng, 3)
  cut = jnp.sqrt(_symmetric_dirichlet(rng_lam, alpha)[0])  # sqrt(1 - lam).
  half_h = (height * cut).astype(jnp.int32) // 2
  half_w = (width * cut).astype(jnp.int32) // 2
  cy = jax.random.randint(rng_y, (), 0, height)
  cx = jax.random.randint(rng_x, (), 0, width)
  y0, y1 = jnp.clip(cy - half_h, 0, height), jnp.clip(cy + half_h, 0, height)
  x0, x1 = jnp.clip(cx - half_w, 0, width), jnp.clip(cx + half_w, 0, width)
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(width)[None, :]
  mask = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
  area = ((y1 - y0) * (x1 - x0)).astype(jnp.float32) / (height * width)
  return mask, area


def cutmix(rng, batch, *, alpha=1.0, keys=("image", "labels")):
  """CutMix: pastes a box of the rolled batch; other keys mix by its area.

  Arrays of rank >= 3 among `keys` are images [B, H, W, ...] (all the same
  H, W) and get the box of `roll(x, 1)` pasted in; the others (labels) become
  `(1 - w) * x + w * roll(x, 1)` with `w` the box's exact area fraction.

  Args:
    rng: a JAX PRNG key.
    batch: dict of arrays with a leading batch axis (the global batch).
    alpha: the Beta(alpha, alpha) concentration of the kept area.
    keys: the entries to mix (floating point).

  Returns:
    The batch with `keys` mixed.
  """
  for k in keys:
    _check_float(k, batch[k])
  spatial = [k for k in keys if batch[k].ndim >= 3]
  sizes = {batch[k].shape[1:3] for k in spatial}
  if len(sizes) != 1:
    shapes = {k: batch[k].shape for k in keys}
    raise ValueError(f"cutmix needs images [B, H, W, ...] of one size among "
                     f"{keys}; got shapes {shapes}.")
  (height, width), = sizes
  mask, area = cutmix_box(rng, height, width, alpha)
  out = dict(batch)
  for k in keys:
    x = batch[k]
    if k in spatial:
      m = mask.reshape((1, height, width) + (1,) * (x.ndim - 3))
      out[k] = jnp.where(m, jnp.roll(x, 1, axis=0), x)
    else:
      out[k] = _mix(x, area)
  return out


_MIXERS = {"mixup": mixup, "cutmix": cutmix}


def check_kwargs(name, kwargs):
  """Raises ValueError unless `kwargs` are valid options of mixer `name`."""
  fn = _MIXERS[name]
  try:
    inspect.signature(fn).bind(None, None, **kwargs)
  except TypeError as e:
    raise ValueError(f"Bad {name} options {dict(kwargs)!r}: {e} "
                     f"(signature {name}{inspect.signature(fn)}).") from None


def apply_mix(rng, batch, *, mixup=None, cutmix=None, switch_prob=0.5):
  """Applies mixup and/or CutMix as configured (the trainer's entry point).

  Args:
    rng: a JAX PRNG key (fold the step into it for a new draw each step).
    batch: dict of arrays with a leading batch axis (the global batch).
    mixup: None (off) or a dict of `mixup` keyword arguments.
    cutmix: None (off) or a dict of `cutmix` keyword arguments.
    switch_prob: with both on, the probability of CutMix at each step (else
      mixup), as timm's `switch_prob`.

  Returns:
    The mixed batch (`batch` unchanged when both are off).
  """
  configs = {"mixup": mixup, "cutmix": cutmix}
  configs = {k: dict(v) for k, v in configs.items() if v is not None}
  for name, kwargs in configs.items():
    check_kwargs(name, kwargs)
  if not configs:
    return batch
  if len(configs) == 1:
    (name, kwargs), = configs.items()
    return _MIXERS[name](rng, batch, **kwargs)
  rng_switch, rng_mix = jax.random.split(rng)
  use_cutmix = jax.random.bernoulli(rng_switch, switch_prob)
  return jax.lax.cond(
      use_cutmix,
      lambda b: _MIXERS["cutmix"](rng_mix, b, **configs["cutmix"]),
      lambda b: _MIXERS["mixup"](rng_mix, b, **configs["mixup"]),
      batch)
