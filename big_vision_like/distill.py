"""Distillation from a frozen teacher: an option of the one trainer.

  config.distill = dict(
      teacher=dict(
          model_name="vit",            # any registered model
          model=dict(variant="B/16", num_classes=1000),
          init="workdirs/teacher",     # .npz, or an orbax workdir / ckpt
                                       # dir / step dir; `:subtree` suffix ok
          item="params",               # or "ema" (a run with config.ema)
          inputs=None),                # batch keys fed to the teacher, in
                                       # order; None: config.model_inputs
      loss="kl",                       # a DISTILL_LOSSES name, see
      loss_kw=dict(temperature=1.0),   #   losses/distillation.py
      weight=1.0,                      # of the distillation loss
      task_weight=1.0)                 # of config.loss (0: none)

The objective is `task_weight * task_loss + weight * distill_loss`; both
terms are logged (`train/task_loss`, `train/distill_loss`, next to the total
`train/loss`). DeiT: `loss="deit_hard", weight=0.5, task_weight=0.5`;
function matching: `loss="kl", task_weight=0.0`.

The teacher:
- is built like `config.model` (keys checked, close matches suggested) and
  its params are loaded with `models.common.load_into` from `init`;
- runs in inference mode (`train=False`) inside the jitted train step, on
  exactly the batch the student sees (after mixup / cutmix), one
  micro-batch at a time with `config.grad_accum_steps`;
- is frozen: its params are in the train state as `state["teacher"]`, a
  constant of the gradient (never an argument of `jax.grad`, and behind
  `stop_gradient`), so no gradient of it is computed, and the optimizer
  never sees it (no optimizer state, no weight decay);
- is sharded by `config.sharding_rules` like any params, its leaves named
  `teacher/<name>` (e.g. `(".*", "fsdp")` shards a large teacher too);
- reaches evaluators through the train state: `distill_agreement` reports
  how often the student's top-1 class is the teacher's.

It is not checkpointed: it never changes, and it may be larger than the
student, so each start loads it again from `init`. A checkpoint records the
teacher's fingerprint (SHA-256 of the per-array checksums of
`checksums.fingerprints`) in its meta, and resuming checks that the teacher
loaded now is bitwise the one the run started with, so resumed runs stay
exact; a changed `init` file is an error, not a silent change of objective.
"""

import dataclasses
import functools
import hashlib
import json

import jax
import numpy as np

from big_vision_like import checksums
from big_vision_like import config as config_lib
from big_vision_like.losses.distillation import DISTILL_LOSSES
from big_vision_like.models import common as models_common

TEACHER = "teacher"  # The train state's key of the teacher's params.
META_KEY = "distill_teacher"  # The checkpoint meta's record of the teacher.
WHERE = "config.distill"


@dataclasses.dataclass(frozen=True)
class _Keys:
  """The keys of `config.distill` (checked with `config_lib.check_kwargs`)."""
  teacher: dict
  loss: str
  loss_kw: dict = dataclasses.field(default_factory=dict)
  weight: float = 1.0
  task_weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class _TeacherKeys:
  """The keys of `config.distill.teacher`."""
  model_name: str
  init: str
  model: dict = dataclasses.field(default_factory=dict)
  item: str = "params"
  inputs: tuple | None = None


def _to_dict(x, where):
  x = x.to_dict() if hasattr(x, "to_dict") else x
  if not isinstance(x, dict):
    raise TypeError(f"{where} must be a dict, got {x!r}.")
  return dict(x)


def _check_keys(cls, cfg, where):
  config_lib.check_kwargs(cls, cfg, where)
  missing = [f.name for f in dataclasses.fields(cls)
             if f.name not in cfg and f.default is dataclasses.MISSING
             and f.default_factory is dataclasses.MISSING]
  if missing:
    raise KeyError(f"{where} needs {missing}.")
  return cls(**cfg)


class Distill:
  """The teacher model, its loading, and the combined objective."""

  KEY = TEACHER

  def __init__(self, distill, *, model_inputs):
    """Checks `config.distill`; builds the teacher model and the loss.

    Args:
      distill: the `config.distill` dict.
      model_inputs: `config.model_inputs` (the student's batch keys).
    """
    # Imported here: step imports nothing of this module, but uses it.
    from big_vision_like import step as step_lib  # pylint: disable=C0415
    cfg = _check_keys(_Keys, _to_dict(distill, WHERE), WHERE)
    where = f"{WHERE}.teacher"
    teacher = _check_keys(_TeacherKeys, _to_dict(cfg.teacher, where), where)
    for key in ("weight", "task_weight"):
      value = getattr(cfg, key)
      if not config_lib.is_finite_number(value) or value < 0:
        raise ValueError(f"{WHERE}.{key}={value!r}: must be a number >= 0.")
    if teacher.item not in ("params", "ema"):
      raise ValueError(f"{WHERE}.teacher.item={teacher.item!r}: must be "
                       "'params' or 'ema'.")
    self.inputs = tuple(teacher.inputs or model_inputs)
    extra = [k for k in self.inputs if k not in model_inputs]
    if extra:
      raise KeyError(f"{WHERE}.teacher.inputs {extra} are not in "
                     f"config.model_inputs {list(model_inputs)}: the teacher "
                     "sees what the student sees.")
    self.cfg, self.teacher_cfg = cfg, teacher
    self.model = step_lib.build_model(teacher.model_name,
                                      _to_dict(teacher.model, "model"),
                                      where=f"{WHERE}.teacher.model")
    loss = DISTILL_LOSSES.get(cfg.loss)
    loss_kw = _to_dict(cfg.loss_kw, f"{WHERE}.loss_kw")
    config_lib.check_kwargs(loss, loss_kw, f"{WHERE}.loss_kw",
                            skip=("student", "teacher"))
    self.loss_fn = functools.partial(loss, **loss_kw)
    self.example_mean = bool(getattr(loss, "example_mean", False))
    self.fingerprint = None  # Set by `load`.

  # In the train step.

  def apply(self, teacher_params, batch):
    """The teacher's outputs on `batch` (inference mode; no gradient)."""
    params = jax.lax.stop_gradient(teacher_params)
    inputs = [batch.get(k) for k in self.inputs]
    return jax.lax.stop_gradient(
        self.model.apply({"params": params}, *inputs, train=False))

  def wrap(self, forward, loss_fn, teacher_params):
    """`(forward, loss_fn)` of the trainer, with the teacher added.

    Args:
      forward: `fn(params, batch, rng) -> student outputs`.
      loss_fn: the task objective `fn(outputs, batch) -> (loss, metrics)`.
      teacher_params: the state's teacher params (a constant here).

    Returns:
      `forward'(params, batch, rng) -> (student, teacher outputs)` and
      `loss'(outputs', batch) -> (combined loss, metrics)`, to use as the
      trainer uses `forward` and `loss_fn` (also per micro-batch).
    """

    def both(params, batch, rng):
      return forward(params, batch, rng), self.apply(teacher_params, batch)

    def objective(outputs, batch):
      student, teacher = outputs
      task, metrics = loss_fn(student, batch)
      dist, dist_metrics = self.loss_fn(student, teacher)
      total = self.cfg.task_weight * task + self.cfg.weight * dist
      return total, {**metrics, **dist_metrics, "task_loss": task,
                     "distill_loss": dist}

    return both, objective

  # Loading, before the first step.

  def abstract_params(self, example_inputs):
    """The teacher's params as ShapeDtypeStructs.

    Args:
      example_inputs: {batch key: array of one example} for `self.inputs`.
    """
    inputs = [example_inputs[k] for k in self.inputs]

    def init(rng):
      return self.model.init({"params": rng, "dropout": rng}, *inputs,
                             train=False)["params"]

    return jax.eval_shape(init, jax.random.key(0))

  def load(self, abstract, shardings, log=print):
    """The teacher's params from `init`, on devices with `shardings`.

    Each array is put on the devices shard by shard (as `model_init`), and
    the loaded tree's fingerprint is kept for the checkpoint meta.
    """
    path = self.teacher_cfg.init
    host = models_common.load_into(abstract, path,
                                   model=self.teacher_cfg.model_name,
                                   item=self.teacher_cfg.item)
    self.fingerprint = fingerprint(host)
    log(f"Loaded the distillation teacher ({self.teacher_cfg.model_name}, "
        f"{sum(np.size(x) for x in jax.tree.leaves(host)):,} params) from "
        f"{path}.")
    return jax.tree.map(
        lambda x, s: jax.make_array_from_callback(
            np.shape(x), s, lambda idx: np.asarray(x)[idx]), host, shardings)

  def meta(self):
    """What a checkpoint's meta records of the teacher."""
    return {META_KEY: {"init": self.teacher_cfg.init,
                       "sha256": self.fingerprint}}


def fingerprint(params):
  """SHA-256 over the names, shapes, dtypes and checksums of `params`."""
  record = {name: [list(np.shape(x)), str(x.dtype), fp]
            for (name, fp), x in zip(checksums.fingerprints(params).items(),
                                     jax.tree.leaves(params))}
  return hashlib.sha256(json.dumps(record, sort_keys=True).encode()
                        ).hexdigest()


def from_config(distill, model_inputs):
  """A `Distill` for `config.distill`, or None when it is None/empty."""
  if not distill:
    return None
  return Distill(distill, model_inputs=tuple(model_inputs))


def without_teacher(tree):
  """The train state (or its shapes / shardings) as checkpointed."""
  return {k: v for k, v in tree.items() if k != TEACHER}


def load_teacher(distill, abstract, shardings, log=print):
  """{"teacher": params on devices}, or {} without distillation."""
  if distill is None:
    return {}
  return {TEACHER: distill.load(abstract[TEACHER], shardings[TEACHER], log)}


def add_abstract(distill, abstract, example_inputs):
  """`abstract` (the train state's shapes) with the teacher's, if any."""
  if distill is None:
    return abstract
  return {**abstract, TEACHER: distill.abstract_params(example_inputs)}


def checkpoint_meta(distill):
  """The checkpoint meta entries of the teacher ({} without one)."""
  return {} if distill is None else distill.meta()


def check_resume(distill, meta, where):
  """Raises unless the checkpoint at `where` was trained with this teacher.

  Args:
    distill: the run's `Distill` (loaded), or None.
    meta: the restored checkpoint's meta.
    where: the checkpoint's path, for messages.
  """
  saved = (meta or {}).get(META_KEY)
  if distill is None:
    if saved is not None:
      raise ValueError(f"Checkpoint {where} was trained with a distillation "
                       f"teacher ({saved['init']}), but config.distill is "
                       "not set: set it as before, or use another workdir.")
    return
  if saved is None:
    raise ValueError(f"Checkpoint {where} was trained without config.distill;"
                     " distilling from its step on would change the run's "
                     "objective: use another workdir.")
  if saved["sha256"] != distill.fingerprint:
    raise ValueError(
        f"{WHERE}.teacher.init={distill.teacher_cfg.init!r}: the teacher "
        f"loaded now is not bitwise the one checkpoint {where} was trained "
        f"with (loaded from {saved['init']!r}); resuming would not be exact. "
        "Restore that teacher, or use another workdir.")
