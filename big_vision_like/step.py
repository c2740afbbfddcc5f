"""The pure train step and the model/loss/predict builders the trainer uses.

Kept apart from `train.py` so the step, the models and the losses import
without TensorFlow (benchmarks, notebooks, machines without tf.data).
"""

import dataclasses
import functools
import inspect
import typing

import jax
import jax.numpy as jnp
import optax

from big_vision_like import accumulation
from big_vision_like import config as config_lib
from big_vision_like.registry import LOSSES
from big_vision_like.registry import MODELS


def make_train_step(model, loss_fn, tx, sched_fn, *, model_inputs, seed,
                    mixup=None, cutmix=None, frozen=None, grad_accum_steps=1,
                    batch_sharding=None, ema=None, distill=None):
  """The pure train step: (state, batch) -> (new state, metrics).

  Args:
    model: a flax module; `model.apply` returns the outputs `loss_fn` takes.
    loss_fn: `fn(outputs, batch) -> (scalar loss, metrics dict)`.
    tx: the optax transformation.
    sched_fn: step -> learning rate, logged as `lr`.
    model_inputs: batch keys fed to the model, in order.
    seed: the run's seed; the step's RNG is derived from it and the step.
    mixup: None or `device_ops.mixup` kwargs, applied to the global batch.
    cutmix: None or `device_ops.cutmix` kwargs.
    frozen: None or a tree of bools like the params: no gradient is computed
      for the True ones (locked towers).
    grad_accum_steps: K > 1 computes the gradient of the global batch from
      K micro-batches in turn (see `accumulation`).
    batch_sharding: the batch's sharding (how micro-batches are cut).
    ema: None or `check_ema` output: the state's "ema" params follow
      `ema <- decay * ema + (1 - decay) * params` every `every` steps.
    distill: None or a `distill.Distill`: the frozen teacher (the state's
      "teacher" params) runs on each (micro-)batch the student sees, and its
      loss joins `loss_fn` (see `distill.py`).
  """
  mixing = mixup is not None or cutmix is not None
  if mixing:  # Imported here: the pp package needs TensorFlow.
    from big_vision_like.pp import device_ops
  for name, kwargs in (("mixup", mixup), ("cutmix", cutmix)):
    if kwargs is not None:
      try:
        device_ops.check_kwargs(name, kwargs)
      except ValueError as e:
        raise ValueError(f"config.{name}: {e}") from None
  k = grad_accum_steps
  accumulation.check_steps(k)
  example_mean = accumulation.is_example_mean(loss_fn) and (
      distill is None or distill.example_mean)

  def forward(params, batch, rng):
    if frozen is not None:
      params = jax.tree.map(
          lambda p, f: jax.lax.stop_gradient(p) if f else p, params, frozen)
    inputs = [batch[key] for key in model_inputs]
    return model.apply({"params": params}, *inputs, train=True,
                       rngs={"dropout": rng})

  def gradients(params, batch, rng, teacher):
    fwd, loss = forward, loss_fn
    if distill is not None:  # The teacher's params: a constant of the grad.
      fwd, loss = distill.wrap(forward, loss_fn, teacher)

    def objective(p, b, r):
      return loss(fwd(p, b, r), b)

    if k == 1:
      return jax.value_and_grad(objective, has_aux=True)(params, batch, rng)
    if example_mean:
      return accumulation.mean_grads(objective, params, batch, rng, k,
                                     batch_sharding)
    return accumulation.cached_grads(fwd, loss, params, batch, rng, k,
                                     batch_sharding)

  def train_step(state, batch):
    step = state["step"]
    rng, rng_mix = jax.random.split(
        jax.random.fold_in(jax.random.key(seed), step))
    if mixing:
      batch = device_ops.apply_mix(rng_mix, batch, mixup=mixup, cutmix=cutmix)
    teacher = state[distill.KEY] if distill is not None else None
    (loss, aux), grads = gradients(state["params"], batch, rng, teacher)
    updates, opt = tx.update(grads, state["opt"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics = {"loss": loss, "lr": sched_fn(step),
               "l2_grads": optax.global_norm(grads),
               "l2_params": optax.global_norm(params), **aux}
    new_state = {**state, "params": params, "opt": opt, "step": step + 1}
    if ema is not None:
      new_state["ema"] = ema_update(state["ema"], params, step + 1, **ema)
    return new_state, metrics

  return train_step


EMA_DEFAULTS = {"decay": None, "every": 1, "warmup": False}


def check_ema(ema):
  """`config.ema` with defaults filled, or None when off; checks values."""
  if ema is None:
    return None
  ema = dict(ema)
  config_lib.check_kwargs(ema_update, ema, "config.ema",
                          skip=("ema", "params", "step"))
  ema = {**EMA_DEFAULTS, **ema}
  decay = ema["decay"]
  if not config_lib.is_finite_number(decay) or not 0 <= decay < 1:
    raise ValueError(f"config.ema.decay={decay!r}: must be a number in "
                     "[0, 1), e.g. 0.9999.")
  if not config_lib.is_integer(ema["every"]) or ema["every"] < 1:
    raise ValueError(f"config.ema.every={ema['every']!r}: must be an "
                     "integer >= 1.")
  if not isinstance(ema["warmup"], bool):
    raise ValueError(f"config.ema.warmup={ema['warmup']!r}: must be a bool.")
  return ema


def ema_update(ema, params, step, *, decay, every, warmup):
  """The EMA after step `step` (1-based): updated when `step % every == 0`.

  With `warmup`, the decay of the update at step s is
  `min(decay, (1 + s) / (10 + s))` (as the NFNet reference and timm's
  `ModelEmaV2(warmup)`), so that early averages forget the random init.
  """
  d = jnp.asarray(decay, jnp.float32)
  if warmup:
    s = step.astype(jnp.float32)
    d = jnp.minimum(d, (1.0 + s) / (10.0 + s))
  due = step % every == 0
  return jax.tree.map(
      lambda e, p: jnp.where(due, d * e + (1.0 - d) * p.astype(e.dtype), e),
      ema, params)


def make_predict_fns(model, model_inputs, distill=None):
  """The functions evaluators choose from by name (`config.evals.x.pred`).

  `predict(train_state, batch)` applies the model to the batch's
  `model_inputs`; a key missing from the batch is passed as None, so an
  evaluator embeds images alone with `{"image": ...}` (a two-tower model then
  returns `(zimg, None, aux)`) or texts alone. With `distill`, `teacher`
  applies the teacher (the state's "teacher" params), and `distill` returns
  `(student outputs, teacher outputs)` (`distill_agreement` uses it).
  """

  def predict(train_state, batch):
    inputs = [batch.get(k) for k in model_inputs]
    return model.apply({"params": train_state["params"]}, *inputs,
                       train=False)

  fns = {"predict": predict}
  if distill is not None:
    fns["teacher"] = lambda state, batch: distill.apply(state[distill.KEY],
                                                        batch)
    fns["distill"] = lambda state, batch: (predict(state, batch),
                                           fns["teacher"](state, batch))
  return fns


def build_model(name, kwargs, where="config.model"):
  """The registered model `name` built from the kwargs at `where`."""
  factory = MODELS.get(name)
  config_lib.check_kwargs(factory, kwargs, where)
  try:
    model = factory(**kwargs)
  except TypeError as e:  # Factories passing **kw on to a module.
    raise KeyError(f"{where} (model_name={name!r}): {e}") from None
  _check_field_types(model, where)
  return model


def _check_field_types(model, where):
  """Raises naming `where.<field>` if a field annotated int/float/str/bool
  holds a value of another type (e.g. `width='16'` from a CLI override)."""
  try:
    hints = typing.get_type_hints(type(model))
  except Exception:  # pylint: disable=broad-except
    return  # Unresolvable annotations: nothing to check against.
  numbers = {int: (int,), float: (int, float)}
  for field in dataclasses.fields(model):
    want, value = hints.get(field.name), getattr(model, field.name, None)
    if want in numbers:
      ok = isinstance(value, numbers[want]) and not isinstance(value, bool)
    elif want in (str, bool):
      ok = isinstance(value, want)
    else:
      continue
    if not ok:
      raise TypeError(f"{where}.{field.name}={value!r}: must be a "
                      f"{want.__name__}.")


def build_loss(name, kwargs, mesh):
  """The objective `fn(outputs, batch) -> (loss, metrics)`; gets the mesh."""
  loss = LOSSES.get(name)
  config_lib.check_kwargs(loss, kwargs, "config.loss_kw",
                          skip=("outputs", "batch", "mesh"))
  if "mesh" in kwargs:
    raise KeyError("config.loss_kw.mesh is set by the trainer.")
  if "mesh" in inspect.signature(loss).parameters:
    kwargs = {**kwargs, "mesh": mesh}  # E.g. contrastive losses.
  return functools.partial(loss, **kwargs)
