"""Optimizer from config: optax direction, schedules, per-parameter regex rules.

The update of a parameter `p` at step `t` is

  -lr_mult(p) * lr_fn_g(t) * (direction(grad) + wd * wd_mult(p) / lr * p)

where `g` is the schedule group of `p` and `lr_fn_g(t) = lr * sched_g(t)`.
Weight decay is decoupled and, as in big_vision, not multiplied by the base
`lr` (it still follows the schedule's shape). Per-parameter rules are regexes
matched (`re.fullmatch`) against '/'-joined parameter names, first match wins.

Config keys (see `DEFAULTS`):
  optax_name: "adamw"/"adam", "sgd", "adafactor", "lion", "rmsprop",
    "adabelief", or any optax `scale_by_*`-style transformation name.
  optax: kwargs for that transformation (e.g. b2, momentum, nesterov).
  lr, wd: base learning rate and decoupled weight decay.
  schedule: a dict (one schedule for all) or a list of (regex, dict or None);
    None freezes the matched parameters (no optimizer state, zero update).
    Empty means `dict(decay_type="cosine", warmup_steps=0)`.
  grad_clip_norm: global-norm clipping of the (non-frozen) gradients.
  agc: adaptive gradient clipping ("High-Performance Large-Scale Image
    Recognition Without Normalization"), e.g. `dict(clip=0.01)`: each unit's
    gradient norm is clipped to `clip * max(its param norm, eps)`; params
    whose name matches (`re.search`) `exclude` (default the head) are left
    alone. None, or `clip` None/0, is off. Applied to the raw gradients,
    before global-norm clipping and the direction.
  lr_mults, wd_mults: lists of (regex, mult); wd_mults defaults to
    [(".*/kernel$", 1.0)], parameters matched by none get no weight decay.
"""

import collections.abc
import inspect
import logging
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from big_vision_like import config as config_lib
from big_vision_like.tree_util import tree_map_with_names
from big_vision_like.tree_util import tree_names

DEFAULTS = dict(
    optax_name="adamw",
    optax=config_lib.OPEN,
    lr=1e-3,
    wd=0.0,
    schedule=config_lib.OPEN,
    grad_clip_norm=None,
    agc={"clip": None, "eps": 1e-3, "exclude": r"^head/"},
    lr_mults=None,
    wd_mults=None,
)
DEFAULT_SCHEDULE = dict(decay_type="cosine", warmup_steps=0)
DEFAULT_WD_MULTS = ((".*/kernel$", 1.0),)
_DURATIONS = ("warmup", "cooldown")
_UNITS = ("steps", "epochs", "examples", "percent")
# Keys each decay type reads, besides decay_type, mult and the durations.
_DECAY_KEYS = {
    "cosine": ("min_lr",),
    "linear": ("linear_end",),
    "polynomial": ("power", "end"),
    "rsqrt": ("timescale",),
    "constant": (),
    "stair": ("steps", "mults"),
}


# ----------------------------------------------------------------------------
# Config normalisation.


def _to_dict(x):
  if hasattr(x, "to_dict"):
    return x.to_dict()
  return dict(x)


def _is_mapping(x):
  return hasattr(x, "to_dict") or isinstance(x, collections.abc.Mapping)


def _pairs(value, key):
  """Normalises a list of (regex, value) pairs; checks each regex compiles."""
  out = []
  for item in value:
    if len(item) != 2:
      raise ValueError(f"config.{key} entries must be (regex, value) pairs, "
                       f"got {item!r}.")
    pattern, v = item
    try:
      re.compile(pattern)
    except re.error as e:
      raise ValueError(f"Bad regex {pattern!r} in config.{key}: {e}") from None
    out.append((pattern, v))
  return out


def _first_match(name, pairs):
  """Index of the first (regex, _) pair that fully matches `name`, or None."""
  for i, (pattern, _) in enumerate(pairs):
    if re.fullmatch(pattern, name):
      return i
  return None


def _warn_unused(names, pairs, key):
  for pattern, _ in pairs:
    if not any(re.fullmatch(pattern, n) for n in names):
      logging.warning("config.%s regex %r matches no parameter.", key, pattern)


# ----------------------------------------------------------------------------
# Schedules.


def _check_schedule_keys(kw, path):
  decay_type = kw.get("decay_type", DEFAULT_SCHEDULE["decay_type"])
  if decay_type not in _DECAY_KEYS:
    raise ValueError(f"Unknown {path}.decay_type={decay_type!r}; known: "
                     f"{sorted(_DECAY_KEYS)}.")
  known = {"decay_type", "mult", *_DECAY_KEYS[decay_type]}
  known |= {f"{d}_{u}" for d in _DURATIONS for u in _UNITS}
  for key in kw:
    if key not in known:
      raise ValueError(f"Unknown schedule key {path}.{key} for decay_type="
                       f"{decay_type!r}; known: {sorted(known)}.")
  return decay_type


def _decay(decay_type, kw, base, step, warmup, total_steps):
  """The schedule's value after warmup, before warmup/cooldown ramps."""
  progress = (step - warmup) / max(total_steps - warmup, 1)
  progress = jnp.clip(progress, 0.0, 1.0)
  if decay_type == "cosine":
    low = kw.get("min_lr", 0.0)
    return low + (base - low) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
  if decay_type in ("linear", "polynomial"):
    end = kw.get("end", kw.get("linear_end", 0.0))
    return end + (base - end) * (1.0 - progress) ** kw.get("power", 1.0)
  if decay_type == "rsqrt":
    timescale = kw.get("timescale", 10_000)
    # Shifted so that the value is `base` when warmup ends.
    steps_after = jnp.maximum(step - warmup, 0)
    return base / jnp.sqrt((steps_after + timescale) / timescale)
  if decay_type == "stair":
    bounds = jnp.asarray(kw.get("steps", []), jnp.float32)
    mults = jnp.asarray([1.0, *kw.get("mults", [])], jnp.float32)
    if len(mults) != len(bounds) + 1:
      raise ValueError("A stair schedule needs as many `mults` as `steps`.")
    return base * mults[jnp.searchsorted(bounds, step, side="right")]
  return jnp.asarray(base, jnp.float32)  # constant


def make_schedule(kw, *, lr, total_steps, batch_size, data_size=None,
                  path="config.schedule"):
  """Returns `fn(step) -> learning rate` for one schedule dict.

  Args:
    kw: schedule dict: `decay_type` (cosine, linear, polynomial, rsqrt,
      constant, stair; default cosine), `warmup_{steps,epochs,examples,
      percent}` (linear from 0), `cooldown_*` (linear to 0 at the end), `mult`
      (multiplies `lr` for this schedule), and per type: cosine `min_lr`;
      linear `linear_end`; polynomial `power`, `end`; rsqrt `timescale`
      (10_000); stair `steps`, `mults`. `min_lr`/`linear_end`/`end` are
      absolute learning rates.
    lr: the base learning rate.
    total_steps: training length in steps.
    batch_size: global batch size (for durations in epochs/examples).
    data_size: number of training examples (for durations in epochs).
    path: the name used in error messages.

  Returns:
    A jittable function of the step (the count of updates done so far).
  """
  kw = _to_dict(kw)
  decay_type = _check_schedule_keys(kw, path)
  durations = dict(batch_size=batch_size, data_size=data_size,
                   total_steps=total_steps, default=0)
  try:
    warmup = config_lib.to_steps(kw, "warmup", **durations)
    cooldown = config_lib.to_steps(kw, "cooldown", **durations)
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from None
  if warmup + cooldown > total_steps:
    logging.warning(
        "%s: warmup (%d steps) + cooldown (%d steps) is longer than the run "
        "(%d steps): the learning rate never reaches lr=%g.", path, warmup,
        cooldown, total_steps, lr)
  base = lr * kw.get("mult", 1.0)

  def fn(step):
    step = jnp.asarray(step, jnp.float32)
    value = _decay(decay_type, kw, base, step, warmup, total_steps)
    if warmup:
      value = value * jnp.minimum(1.0, step / warmup)
    if cooldown:
      value = value * jnp.clip((total_steps - step) / cooldown, 0.0, 1.0)
    return value

  return fn


# ----------------------------------------------------------------------------
# Update directions.


def scale_by_adafactor(min_dim_size_to_factor=32, decay_rate=0.8,
                       decay_offset=0, beta2_cap=0.999,
                       clipping_threshold=None, momentum=None,
                       dtype_momentum="bfloat16", eps=1e-30):
  """Adafactor direction, big_vision's variant (no lr, no weight decay).

  Args:
    min_dim_size_to_factor: factor the second moment of dims at least this big.
    decay_rate: second-moment decay is `min(1 - (t+1)^-decay_rate, beta2_cap)`.
    decay_offset: step offset of that decay.
    beta2_cap: cap of the second-moment decay.
    clipping_threshold: optional update clipping by block RMS.
    momentum: optional first-moment decay (e.g. 0.9); None for none.
    dtype_momentum: dtype of the first moment (bf16 halves its memory).
    eps: regulariser of the second moment.

  Returns:
    An optax GradientTransformation.
  """

  def capped_decay(step, exponent):
    t = jnp.asarray(step, jnp.float32) + 1.0
    return jnp.minimum(1.0 - t ** (-exponent), beta2_cap)

  parts = [optax.scale_by_factored_rms(
      factored=True, decay_rate=decay_rate, step_offset=decay_offset,
      min_dim_size_to_factor=min_dim_size_to_factor, epsilon=eps,
      decay_rate_fn=capped_decay)]
  if clipping_threshold is not None:
    parts.append(optax.clip_by_block_rms(clipping_threshold))
  if momentum:
    parts.append(optax.ema(momentum, debias=False,
                           accumulator_dtype=jnp.dtype(dtype_momentum)))
  return optax.chain(*parts)


def scale_by_sgd(momentum=None, nesterov=False, accumulator_dtype=None):
  """SGD direction: the gradient, or its momentum trace when momentum > 0."""
  if not momentum:
    if nesterov:
      raise ValueError("config.optax.nesterov=True needs a momentum.")
    return optax.identity()
  return optax.trace(decay=momentum, nesterov=nesterov,
                     accumulator_dtype=accumulator_dtype)


_DIRECTIONS = {
    "adam": optax.scale_by_adam,
    "adamw": optax.scale_by_adam,
    "sgd": scale_by_sgd,
    "momentum": scale_by_sgd,
    "adafactor": scale_by_adafactor,
    "big_vision.scale_by_adafactor": scale_by_adafactor,
    "lion": optax.scale_by_lion,
    "rmsprop": optax.scale_by_rms,
    "adabelief": optax.scale_by_belief,
}


def _direction_fn(name):
  if name in _DIRECTIONS:
    return _DIRECTIONS[name]
  attr = name.removeprefix("optax.")
  fn = getattr(optax, attr, None)
  if fn is None or not callable(fn):
    raise ValueError(f"Unknown config.optax_name={name!r}; use one of "
                     f"{sorted(_DIRECTIONS)} or an optax transformation name "
                     "such as 'scale_by_adam'.")
  params = inspect.signature(fn).parameters
  if "learning_rate" in params:
    raise ValueError(f"config.optax_name={name!r} is a full optimizer with its "
                     "own learning rate; name its direction instead (e.g. "
                     "'scale_by_adam'): lr and schedules come from config.lr "
                     "and config.schedule.")
  return fn


def make_direction(name, kw):
  """Returns the optax transformation `name` built with kwargs `kw`.

  Args:
    name: `config.optax_name` (see the module docstring).
    kw: `config.optax`, kwargs for that transformation.

  Returns:
    An optax GradientTransformation giving the update direction (no lr).
  """
  fn = _direction_fn(name)
  kw = _to_dict(kw or {})
  if "weight_decay" in kw:
    raise ValueError("config.optax.weight_decay is not supported: weight decay"
                     " is config.wd (decoupled, masked by config.wd_mults).")
  params = inspect.signature(fn).parameters
  takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
  for key in kw:
    if not takes_any and key not in params:
      raise ValueError(f"Unknown key config.optax.{key} for optax_name="
                       f"{name!r}; accepted: {sorted(params)}.")
  try:
    return fn(**kw)
  except TypeError as e:
    raise ValueError(f"Bad config.optax {kw} for optax_name={name!r}: {e}"
                     ) from None


# ----------------------------------------------------------------------------
# Adaptive gradient clipping.


def unitwise_norm(x):
  """L2 norm of each output unit of `x`, broadcastable against `x`.

  A unit is a slice along the last (output) axis of a Dense [in, out] or
  conv [h, w, in, out] kernel (the norm is over all the other axes); a
  scalar, a vector (bias, gain) or anything with one non-trivial axis is
  one unit. (For 3-D kernels DeepMind's reference reduces axis 0 only; here
  every kernel reduces all axes but the last.)
  """
  x = x.astype(jnp.float32)
  if sum(d > 1 for d in x.shape) <= 1:
    return jnp.sqrt(jnp.sum(jnp.square(x)))
  axes = tuple(range(x.ndim - 1))
  return jnp.sqrt(jnp.sum(jnp.square(x), axis=axes, keepdims=True))


def _agc_leaf(g, p, clip, eps):
  """Scales `g`'s units whose norm exceeds clip * max(|p unit|, eps)."""
  g_norm, p_norm = unitwise_norm(g), unitwise_norm(p)
  max_norm = clip * jnp.maximum(p_norm, eps)
  # The 1e-6 only guards the division; it cannot engage when clipping.
  scale = jnp.where(g_norm < max_norm, 1.0,
                    max_norm / jnp.maximum(g_norm, 1e-6))
  return (g * scale).astype(g.dtype)


def adaptive_grad_clip(clip, eps=1e-3, exclude=r"^head/"):
  """Unit-wise adaptive gradient clipping (Brock et al. 2021) as optax.

  Args:
    clip: maximum ratio of a unit's gradient norm to its parameter norm.
    eps: floor of the parameter norm, so zero-initialised params (e.g.
      SkipInit gains, biases) can still move.
    exclude: regex searched in '/'-joined param names (None: none); the
      matched params are not clipped (the paper leaves the classifier out).

  Returns:
    An optax GradientTransformation whose `update` needs `params`.
  """
  pattern = None if exclude is None else re.compile(exclude)

  def init(params):
    del params
    return optax.EmptyState()

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("Adaptive gradient clipping needs the params: call "
                       "tx.update(grads, state, params).")

    def leaf(name, g, p):
      if g is None or (pattern is not None and pattern.search(name)):
        return g
      return _agc_leaf(g, p, clip, eps)

    return tree_map_with_names(leaf, updates, params), state

  return optax.GradientTransformation(init, update)


def _make_agc(value):
  """`adaptive_grad_clip` from config.agc, or None when it is off."""
  if value is None:
    return None
  kw = _to_dict(value)
  known = DEFAULTS["agc"]
  unknown = sorted(set(kw) - set(known))
  if unknown:
    raise ValueError(f"Unknown key config.agc.{unknown[0]}; known: "
                     f"{sorted(known)}.")
  kw = {**known, **kw}
  if not kw["clip"]:
    return None
  if kw["exclude"] is not None:
    try:
      re.compile(kw["exclude"])
    except re.error as e:
      raise ValueError(f"Bad regex config.agc.exclude={kw['exclude']!r}: "
                       f"{e}") from None
  return adaptive_grad_clip(float(kw["clip"]), float(kw["eps"]),
                            kw["exclude"])


# ----------------------------------------------------------------------------
# Per-parameter scaling: lr schedule, lr_mults and decoupled weight decay.


class ScaleByLrState(NamedTuple):
  """State of `_scale_by_lr`: the number of updates done."""
  count: Any


def _scale_by_lr(leaf_info_fn, lr_fns):
  """Maps direction `u` to `-mult * lr_fn(count) * (u + wd_factor * p)`.

  Args:
    leaf_info_fn: tree -> list (flattening order) of (group or None, lr mult,
      wd factor); None marks a frozen leaf, whose update is zero.
    lr_fns: per-group learning-rate functions of the step.

  Returns:
    An optax GradientTransformation.
  """

  def init(params):
    del params
    return ScaleByLrState(count=jnp.zeros([], jnp.int32))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("This optimizer's update needs the params (for weight "
                       "decay): call tx.update(grads, state, params).")
    lrs = [fn(state.count) for fn in lr_fns]
    leaves, treedef = jax.tree.flatten(updates)
    p_leaves = treedef.flatten_up_to(params)
    out = []
    for u, p, (group, mult, wd) in zip(leaves, p_leaves,
                                       leaf_info_fn(updates)):
      if group is None:
        out.append(jnp.zeros_like(u))
        continue
      if wd:
        u = u + wd * p.astype(u.dtype)
      out.append((-mult * lrs[group] * u).astype(u.dtype))
    count = optax.safe_increment(state.count)
    return jax.tree.unflatten(treedef, out), ScaleByLrState(count=count)

  return optax.GradientTransformation(init, update)


# ----------------------------------------------------------------------------
# Putting it together.


def _schedule_groups(schedule):
  """Returns [(regex, dict or None)] from config.schedule."""
  if schedule is None or (_is_mapping(schedule) and not _to_dict(schedule)):
    return [(".*", dict(DEFAULT_SCHEDULE))]
  if _is_mapping(schedule):
    return [(".*", _to_dict(schedule))]
  groups = _pairs(schedule, "schedule")
  return [(p, None if s is None else _to_dict(s)) for p, s in groups]


def _get(config, key):
  value = config[key] if key in config else DEFAULTS[key]
  return {} if value is config_lib.OPEN else value


class _Rules:
  """Per-parameter rules from config: schedule group, lr and wd mults."""

  def __init__(self, config, groups):
    self.groups = groups
    self.lr_mults = _pairs(_get(config, "lr_mults") or [], "lr_mults")
    wd_mults = _get(config, "wd_mults")
    self.wd_mults = _pairs(DEFAULT_WD_MULTS if wd_mults is None else wd_mults,
                           "wd_mults")
    lr, wd = float(_get(config, "lr")), float(_get(config, "wd") or 0.0)
    self.wd_over_lr = wd / lr if lr else 0.0
    # Non-frozen groups are renumbered 0..n-1 in config order.
    self.live = [i for i, (_, s) in enumerate(groups) if s is not None]

  def group(self, name):
    i = _first_match(name, self.groups)
    if i is None:
      raise ValueError(f"Parameter {name!r} is matched by no config.schedule "
                       f"regex {[p for p, _ in self.groups]}.")
    return self.live.index(i) if i in self.live else None

  def leaf_info(self, name):
    group = self.group(name)
    i = _first_match(name, self.lr_mults)
    lr_mult = 1.0 if i is None else float(self.lr_mults[i][1])
    i = _first_match(name, self.wd_mults)
    wd_mult = 0.0 if i is None else float(self.wd_mults[i][1])
    return group, lr_mult, self.wd_over_lr * wd_mult

  def tree_info(self, tree):
    return [self.leaf_info(n) for n in tree_names(tree)]

  def labels(self, tree):
    return tree_map_with_names(
        lambda n, _: "train" if self.group(n) is not None else "frozen", tree)


def frozen_mask(config, params):
  """A tree of bools: True for params frozen by a None schedule (locked).

  The trainer stops their gradients, so none is computed for them (e.g. the
  locked image tower of LiT), on top of their zero update and absent
  optimizer state.
  """
  rules = _Rules(config, _schedule_groups(_get(config, "schedule")))
  return tree_map_with_names(lambda n, _: rules.group(n) is None, params)


def check_locked_are_loaded(config, frozen):
  """Raises if `config.schedule` locks a param that `model_init` skips.

  Within each subtree that `config.model_init` loads, the params matching
  `config.model_load.dont_load` keep their random init; locking one of them
  (a None schedule) would freeze noise, e.g. a LiT image head when the
  checkpoint is a classifier whose head is not loaded. Params outside the
  loaded subtrees may be locked at init on purpose and are not checked.
  """
  inits = config.model_init
  if not inits:
    return
  roots = [""] if isinstance(inits, str) else [f"{k}/" for k in dict(inits)]
  dont_load = config.model_load.get("dont_load", ())
  dont_load = [dont_load] if isinstance(dont_load, str) else list(dont_load)
  patterns = [re.compile(p) for p in dont_load]
  bad = [name for name, locked in zip(tree_names(frozen),
                                      jax.tree.leaves(frozen))
         if locked and any(name.startswith(r) and any(
             p.fullmatch(name[len(r):]) for p in patterns) for r in roots)]
  if bad:
    raise ValueError(
        f"config.schedule locks {bad}, but config.model_load.dont_load="
        f"{dont_load} leaves them at their random init. Load them, train "
        "them (a schedule rule before the locking one), or leave them out "
        "of the model (e.g. two_towers out_dim=(None, ...): no image head).")


def _check_clip(value):
  """`config.grad_clip_norm`: None or 0 (off), or a finite number > 0."""
  if value is None:
    return None
  if not config_lib.is_finite_number(value) or value < 0:
    raise ValueError(f"config.grad_clip_norm={value!r} must be None or 0 (no "
                     "clipping), or a finite number > 0.")
  return value


def make_optimizer(config, params, *, total_steps, batch_size,
                   data_size=None):
  """Builds the optax transformation described by `config`.

  Args:
    config: a ConfigDict or dict with (some of) the keys of `DEFAULTS`; other
      keys are ignored (the trainer checks them).
    params: the parameter pytree (arrays or ShapeDtypeStructs); used to check
      that every parameter has a schedule.
    total_steps: training length in steps.
    batch_size: global batch size.
    data_size: number of training examples (for durations in epochs).

  Returns:
    `(tx, sched_fns)`: the GradientTransformation (its updates are to be added
    to the params), and a list of `(regex, fn)` for the non-frozen schedule
    groups in config order, `fn(step)` being that group's learning rate
    (lr * schedule, before lr_mults).
  """
  groups = _schedule_groups(_get(config, "schedule"))
  rules = _Rules(config, groups)
  names = tree_names(params)
  for name in names:
    rules.group(name)  # Fails early on unmatched parameters.
  for key, pairs in (("schedule", groups), ("lr_mults", rules.lr_mults),
                     ("wd_mults", rules.wd_mults)):
    _warn_unused(names, pairs, key)

  lr = float(_get(config, "lr"))
  sched_fns = [
      (pattern, make_schedule(kw, lr=lr, total_steps=total_steps,
                              batch_size=batch_size, data_size=data_size,
                              path=f"config.schedule[{i}]" if len(groups) > 1
                              else "config.schedule"))
      for i, (pattern, kw) in enumerate(groups) if kw is not None]

  direction = make_direction(_get(config, "optax_name"), _get(config, "optax"))
  clip = _check_clip(_get(config, "grad_clip_norm"))
  train = optax.chain(
      *([optax.clip_by_global_norm(clip)] if clip else []), direction)
  agc = _make_agc(_get(config, "agc"))
  tx = optax.chain(
      *([agc] if agc else []),
      optax.multi_transform({"train": train, "frozen": optax.set_to_zero()},
                            rules.labels),
      _scale_by_lr(rules.tree_info, [fn for _, fn in sched_fns]))
  return tx, sched_fns
