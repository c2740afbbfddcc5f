"""The evaluator protocol, the evaluation input pipeline, and their set-up.

An evaluator is a class registered in `registry.EVALUATORS`, built as
`Evaluator(predict_fn, data=..., pp_fn=..., batch_size=..., mesh=..., **kw)`,
with `run(train_state)` yielding `(metric_name, value)` pairs. It is
configured as `config.evals.<name> = dict(type=..., pred=..., data=...,
pp_fn=..., log_steps=..., **kw)`; `pred` names one of the trainer's predict
functions (default: the class's `default_pred`, else "predict"), and
`pred_params` the train state's params it evaluates: "params" (default) or
"ema" (the weight EMA, with `config.ema`). `build_evaluators(...,
workdir=...)` also passes `workdir` (the run's directory) and `name` (the
config key) to the evaluators whose signature has them, unless the config
sets them.

Evaluators that need per-example outputs on the host (features for few-shot,
kNN, linear probes, retrieval; saved predictions) build a `Gatherer`: it runs
a jitted function over global sharded batches (`EvalData` for a dataset
split, `ArrayData` for in-memory arrays such as prompts) and returns numpy
arrays of the whole split, in split order, padding dropped, on every process.
Outputs are chosen by name with `select_output`. Evaluators that report
means of per-example values (classification, mean, zero-shot) build a
`MaskedMeans`: a jitted sum over each batch's real examples.

Both leave string features of the batch (e.g. a `file_name` kept by the pp)
out of the jitted function, and both can be traced on abstract batches
(`eval_shape`). Built-in evaluators use this in their `check_inputs(
train_state)` method, which the trainer calls for all of them through
`check_inputs(evaluators, abstract_train_state)` before the first step: an
evaluator whose pp gives the model inputs it cannot take (e.g. another
image resolution than the one it was initialised at) is then an error naming
`config.evals.<name>` and its pp, not a crash at the first evaluation.
"""

import dataclasses
import inspect
import math

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

from big_vision_like import config as config_lib
from big_vision_like import input_pipeline
from big_vision_like import sharding
from big_vision_like.datasets import core as datasets_core
from big_vision_like.registry import EVALUATORS

_SCHEDULE_KEYS = tuple(f"log_{u}" for u in ("steps", "epochs", "examples",
                                            "percent"))


class EvalData:
  """Iterates over a whole split once per call, as global sharded batches.

  Each batch carries `_mask` (False on padding), so every example of the
  split is counted exactly once, on any number of processes and devices.
  """

  def __init__(self, data, pp_fn, batch_size, mesh, cache=True):
    data = dict(data)
    name, split = data.pop("name"), data.pop("split")
    source = self.source = datasets_core.get_source(name, **data)
    self.num_examples = source.num_examples(split)
    self.dataset, self.num_batches = input_pipeline.make_eval_dataset(
        source, split, pp=pp_fn, global_batch_size=batch_size,
        process_index=jax.process_index(), process_count=jax.process_count(),
        cache=cache)
    self.batch_size = batch_size
    self._sharding = sharding.batch_sharding(mesh)

  def __iter__(self):
    for batch in self.dataset.as_numpy_iterator():
      yield input_pipeline.to_global(batch, self._sharding)

  def batch_spec(self):
    """The numeric features of a global batch, as `jax.ShapeDtypeStruct`s.

    From the dataset's static shapes; only where some are known only at run
    time (e.g. `decode` without `resize`) is one batch preprocessed.
    """
    spec = {k: s for k, s in self.dataset.element_spec.items()
            if s.dtype != tf.string}
    if all(s.shape.is_fully_defined() for s in spec.values()):
      local = {k: (tuple(s.shape), s.dtype.as_numpy_dtype)
               for k, s in spec.items()}
    else:
      batch = next(self.dataset.take(1).as_numpy_iterator())
      local = {k: (batch[k].shape, batch[k].dtype) for k in spec}
    return _abstract_batch(local, self.batch_size)


def _abstract_batch(local, batch_size):
  """{key: (per-process shape, dtype)} -> numeric global ShapeDtypeStructs.

  String features are left out, as `numeric` leaves them out of batches.
  """
  return {k: jax.ShapeDtypeStruct((batch_size, *shape[1:]), dtype)
          for k, (shape, dtype) in local.items()
          if np.dtype(dtype).kind not in "OSU"}


@dataclasses.dataclass
class Scheduled:
  """An evaluator with its name and the steps it runs at."""
  name: str
  evaluator: object
  every: int | None  # Steps between runs; None runs only at the end.
  pp: object = None  # The config's `pp_fn` (named in errors).
  params: str = "params"  # The train state's key of the params evaluated.

  def due(self, step, total_steps):
    return step == total_steps or bool(self.every and step % self.every == 0)


def _inject(cls, cfg, **values):
  """Sets `values` the config leaves unset, where `cls` takes them."""
  params = inspect.signature(cls).parameters
  for key, value in values.items():
    if value is not None and key in params:
      cfg.setdefault(key, value)


def build_evaluators(evals, predict_fns, *, mesh, batch_size, total_steps,
                     data_size=None, default_log_steps=None, workdir=None):
  """Builds `config.evals` into a list of `Scheduled` evaluators.

  Args:
    evals: `config.evals`: {name: dict(type=..., pred=..., log_*=..., **kw)}.
    predict_fns: {name: predict_fn} of the trainer (`pred` chooses one).
    mesh: the device mesh, passed to every evaluator.
    batch_size: the default `batch_size` of evaluators.
    total_steps: training length (for `log_percent`).
    data_size: training examples (for `log_epochs`).
    default_log_steps: schedule of evaluators without a `log_*` key.
    workdir: the run's directory; passed as `workdir` (and the config key as
      `name`) to evaluators whose signature has them, unless the config sets
      them (e.g. `save_predictions` writes under it).

  Returns:
    A list of `Scheduled`.
  """
  out = []
  for name, cfg in (evals or {}).items():
    cfg = dict(cfg)
    where = f"config.evals.{name}"
    if "type" not in cfg:
      raise KeyError(f"{where} needs a `type`; known: {EVALUATORS.names()}.")
    cls = EVALUATORS.get(cfg.pop("type"))
    pred = cfg.pop("pred", getattr(cls, "default_pred", "predict"))
    if pred not in predict_fns:
      raise KeyError(f"{where}.pred={pred!r} is not a predict function of "
                     f"this trainer; known: {sorted(predict_fns)}.")
    params_key = cfg.pop("pred_params", "params")
    predict_fn = _with_params(predict_fns[pred], params_key)
    sched = {k: cfg.pop(k) for k in _SCHEDULE_KEYS if k in cfg}
    every = config_lib.to_steps(
        sched, "log", batch_size=batch_size, data_size=data_size,
        total_steps=total_steps, default=default_log_steps)
    cfg.setdefault("batch_size", batch_size)
    _inject(cls, cfg, workdir=workdir, name=name)
    config_lib.check_kwargs(cls, cfg, where, skip=("predict_fn", "mesh"),
                            also=("type", "pred", "pred_params",
                                  *_SCHEDULE_KEYS))
    out.append(Scheduled(name, cls(predict_fn, mesh=mesh, **cfg),
                         every, pp=cfg.get("pp_fn"), params=params_key))
  return out


def _with_params(predict_fn, key):
  """`predict_fn` evaluating `train_state[key]` as the params."""
  if key == "params":
    return predict_fn
  return lambda state, batch: predict_fn({**state, "params": state[key]},
                                         batch)


def check_inputs(evaluators, train_state):
  """Checks that the model takes every evaluator's batches, before training.

  Each evaluator with a `check_inputs(train_state)` method traces its model
  calls with `jax.eval_shape` on abstract batches of its data (reading no
  data where the pp gives static shapes); evaluators without one are
  skipped.

  Args:
    evaluators: the `Scheduled` evaluators of `build_evaluators`.
    train_state: the train state, or its abstract version (a pytree of
      `jax.ShapeDtypeStruct`, e.g. the trainer's `abstract` state).

  Raises:
    ValueError: naming the first evaluator (`config.evals.<name>`) whose
      batches the model cannot take, its pp, the batch shapes and the error
      (e.g. a flax ScopeParamShapeError when the pp gives another image
      resolution than the model was initialised at).
  """
  for ev in evaluators:
    if isinstance(train_state, dict) and ev.params not in train_state:
      hint = " (set config.ema)" if ev.params == "ema" else ""
      raise KeyError(f"config.evals.{ev.name}.pred_params={ev.params!r} is "
                     f"not in the train state{hint}; it has "
                     f"{sorted(train_state)}.")
    check = getattr(ev.evaluator, "check_inputs", None)
    if check is None:
      continue
    try:
      check(train_state)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"config.evals.{ev.name} (pp_fn={ev.pp!r}): the model "
                       f"cannot take its batches: {e}") from e


def eval_shape(fn, train_state, data, *args):
  """`jax.eval_shape` of `fn(train_state, batch, *args)` on `data`'s batches.

  Args:
    fn: a function of the train state and a numeric batch (and `args`).
    train_state: the train state or its abstract version.
    data: `EvalData` or `ArrayData` (its `batch_spec()` is traced).
    *args: further arguments of `fn` (arrays or ShapeDtypeStructs).

  Returns:
    The abstract output of `fn`.

  Raises:
    ValueError: describing the batch and the error of the trace.
  """
  spec = data.batch_spec()
  try:
    return jax.eval_shape(fn, train_state, spec, *args)
  except Exception as e:  # pylint: disable=broad-except
    shapes = ", ".join(f"{k}: {v.dtype}{list(v.shape)}"
                       for k, v in sorted(spec.items()))
    raise ValueError(f"on batches {{{shapes}}}: {type(e).__name__}: "
                     f"{e}") from e


class ArrayData:
  """In-memory arrays (e.g. tokenised prompts) as masked global batches.

  Every process holds all of `features` and feeds its contiguous share, as
  `EvalData` does with a split, so a `Gatherer` returns them in order.
  """

  def __init__(self, features, batch_size, mesh):
    self.features = {k: np.asarray(v) for k, v in features.items()}
    sizes = {len(v) for v in self.features.values()}
    if len(sizes) != 1:
      raise ValueError(f"ArrayData: features of different lengths {sizes}.")
    self.num_examples = sizes.pop()
    count = jax.process_count()
    self._local_batch = batch_size // count
    if self._local_batch * count != batch_size:
      raise ValueError(f"batch_size={batch_size} is not divisible by the "
                       f"{count} processes.")
    share = math.ceil(self.num_examples / count)
    self.num_batches = max(1, math.ceil(share / self._local_batch))
    start = min(jax.process_index() * share, self.num_examples)
    self._rows = slice(start, min(start + share, self.num_examples))
    self.batch_size = batch_size
    self._sharding = sharding.batch_sharding(mesh)

  def batch_spec(self):
    """The features of a global batch, as `jax.ShapeDtypeStruct`s."""
    local = {k: (v.shape, v.dtype) for k, v in self.features.items()}
    local["_mask"] = ((), np.bool_)
    return _abstract_batch(local, self.batch_size)

  def _local(self):
    """This process's share, padded with `_mask=False` rows."""
    total = self.num_batches * self._local_batch
    out = {}
    for k, v in self.features.items():
      v = v[self._rows]
      out[k] = np.concatenate([v, np.zeros((total - len(v), *v.shape[1:]),
                                           v.dtype)])
    n = self._rows.stop - self._rows.start
    out["_mask"] = np.arange(total) < n
    return out

  def __iter__(self):
    local, b = self._local(), self._local_batch
    for i in range(self.num_batches):
      batch = {k: v[i * b:(i + 1) * b] for k, v in local.items()}
      yield input_pipeline.to_global(batch, self._sharding)


def _get_path(tree, name):
  node = tree
  for key in name.split("/"):
    if not isinstance(node, dict) or key not in node:
      return None
    node = node[key]
  return node


def select_output(outputs, name, batch=None):
  """Picks one output of a model by name.

  Args:
    outputs: what `predict_fn` returns: `(logits, aux)` for a classifier,
      `(zimg, ztxt, aux)` for a two-tower model.
    name: "logits" (a classifier's first output), "zimg" / "ztxt" (a
      two-tower model's embeddings), a key of `aux` ("pre_logits", or a
      `/`-joined path into nested dicts), or a callable
      `fn(outputs, batch) -> array`.
    batch: the batch the outputs come from (for callables).

  Returns:
    The selected array.
  """
  if callable(name):
    return name(outputs, batch)
  *heads, aux = outputs
  named = {"logits": 0} if len(heads) == 1 else {"zimg": 0, "ztxt": 1}
  if name in named:
    value = heads[named[name]]
    if value is None:
      raise ValueError(f"Output {name!r} is None: the batch fed to the model "
                       "lacks that tower's input.")
    return value
  value = aux.get(name) if isinstance(aux, dict) else None
  value = _get_path(aux, name) if value is None else value
  if value is None:
    raise KeyError(f"Output {name!r} is not one of {sorted(named)} or of the "
                   f"model's aux keys {sorted(aux or {})}.")
  return value


def select_fn(predict_fn, select, *, inputs=None, keep=()):
  """A function `(train_state, batch) -> {name: per-example array}`.

  Args:
    predict_fn: the trainer's `predict(train_state, batch)`.
    select: {output name: `select_output` name or callable}.
    inputs: batch keys given to `predict_fn` (None: the whole batch), e.g.
      ("image",) embeds only the images of a two-tower model.
    keep: batch keys copied to the result (e.g. labels).
  """

  def fn(train_state, batch):
    fed = batch if inputs is None else {k: batch[k] for k in inputs}
    outputs = predict_fn(train_state, fed)
    out = {n: select_output(outputs, s, batch) for n, s in select.items()}
    out.update({k: batch[k] for k in keep})
    return out

  return fn


def numeric(batch):
  """Drops string leaves, which cannot enter a jitted function."""
  return {k: v for k, v in batch.items()
          if not (isinstance(v, np.ndarray) and v.dtype.kind in "OSU")}


class Gatherer:
  """Per-example outputs of a whole split, to host numpy on every process.

  `fn(train_state, batch)` returns a dict of arrays with the batch as
  leading axis; it is jitted once, with outputs sharded like the batch. The
  result of `__call__` keeps only real examples, in split order (each
  process's share is contiguous, and shares are gathered in process order).
  """

  def __init__(self, fn, mesh):
    self._mesh = mesh
    self._spec = sharding.batch_sharding(mesh).spec

    def with_mask(train_state, batch):
      return {**fn(train_state, batch), "_mask": batch["_mask"]}

    self._fn = jax.jit(with_mask,
                       out_shardings=sharding.batch_sharding(mesh))

  def _to_local(self, tree):
    if jax.process_count() == 1:
      return jax.tree.map(np.asarray, tree)
    return jax.tree.map(np.asarray,
                        multihost_utils.global_array_to_host_local_array(
                            tree, self._mesh, self._spec))

  def __call__(self, train_state, data):
    """Runs over `data` (`EvalData` or `ArrayData`); returns {name: array}."""
    parts, pending = [], None
    for batch in data:  # Fetches batch i while batch i + 1 runs.
      out = self._fn(train_state, numeric(batch))
      if pending is not None:
        parts.append(self._to_local(pending))
      pending = out
    parts.append(self._to_local(pending))
    local = jax.tree.map(lambda *x: np.concatenate(x), *parts)
    if jax.process_count() > 1:
      local = jax.tree.map(
          lambda x: np.asarray(multihost_utils.process_allgather(x)).reshape(
              -1, *x.shape[1:]), local)
    mask = local.pop("_mask").astype(bool)
    return {k: v[mask] for k, v in local.items()}

  def eval_shape(self, train_state, data):
    """The abstract per-batch outputs on `data` (see `eval_shape`)."""
    return eval_shape(self._fn, train_state, data)


class MaskedMeans:
  """Means over a split of per-example values; padding is never counted.

  `fn(train_state, batch, *args)` returns {metric: [B] or [B, ...] array}
  (trailing axes are averaged per example), and optionally `_mask` [B]: the
  examples to count (e.g. those with a label), on top of the batch's real
  examples. It is jitted once; each batch's sums over the counted examples
  come back replicated, and are added on the host in float64; a split with
  none counted gives 0.0. String features of the batch are dropped before
  `fn` sees it.
  """

  def __init__(self, fn, mesh):
    def sums(train_state, batch, *args):
      values = dict(fn(train_state, batch, *args))
      mask = batch["_mask"].astype(bool)
      if "_mask" in values:
        mask = mask & values.pop("_mask").astype(bool)
      values = {k: _per_example_mean(v) for k, v in values.items()}
      return ({k: jnp.sum(jnp.where(mask, v, 0.0))
               for k, v in values.items()},
              jnp.sum(mask.astype(jnp.float32)))

    self._sums = jax.jit(sums, out_shardings=sharding.replicated(mesh))

  def __call__(self, train_state, data, *args):
    """{metric: mean over the real examples of `data`} (Python floats)."""
    parts = [self._sums(train_state, numeric(batch), *args) for batch in data]
    parts = jax.device_get(parts)
    count = max(sum(float(c) for _, c in parts), 1.0)
    return {k: math.fsum(float(s[k]) for s, _ in parts) / count
            for k in parts[0][0]}

  def eval_shape(self, train_state, data, *args):
    """The abstract per-batch sums on `data` (see `eval_shape`)."""
    return eval_shape(self._sums, train_state, data, *args)


def _per_example_mean(value):
  """[B] float32 means of a [B, ...] array over its trailing axes."""
  value = jnp.asarray(value, jnp.float32)
  return jnp.mean(value.reshape(value.shape[0], -1), axis=1)


class LabelledFeatures:
  """Frozen features (float32 [N, D]) and integer labels [N] of a split.

  What the few-shot, kNN and linear-probe evaluators classify.
  """

  def __init__(self, predict_fn, mesh, *, representation, label_key, inputs):
    self._label_key = label_key
    self._gather = Gatherer(select_fn(
        predict_fn, {"x": representation}, inputs=inputs,
        keep=(label_key,)), mesh)

  def __call__(self, train_state, data):
    out = self._gather(train_state, data)
    return (out["x"].astype(np.float32),
            int_labels(out[self._label_key]))

  def eval_shape(self, train_state, data):
    """The abstract per-batch features and labels on `data`."""
    return self._gather.eval_shape(train_state, data)


def int_labels(labels):
  """Integer class ids from ids [N] or one-hot / multi-hot rows [N, C]."""
  labels = np.asarray(labels)
  return labels.argmax(-1) if labels.ndim == 2 else labels.astype(np.int32)


def class_names(source, key="label"):
  """Class names of a data source: its `class_names`, or TFDS ClassLabel's."""
  names = getattr(source, "class_names", None)
  if names is not None:
    return list(names)
  builder = getattr(source, "builder", None)
  features = builder.info.features if builder is not None else {}
  feature = features[key] if key in features else None
  if not hasattr(feature, "names"):
    raise ValueError(f"{source!r} has no class names (no `class_names`, no "
                     f"ClassLabel feature {key!r}); give them in the config.")
  return list(feature.names)
