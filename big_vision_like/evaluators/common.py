"""The evaluator protocol, the evaluation input pipeline, and their set-up.

An evaluator is a class registered in `registry.EVALUATORS`, built as
`Evaluator(predict_fn, data=..., pp_fn=..., batch_size=..., mesh=..., **kw)`,
with `run(train_state)` yielding `(metric_name, value)` pairs. It is
configured as `config.evals.<name> = dict(type=..., pred=..., data=...,
pp_fn=..., log_steps=..., **kw)`; `pred` names one of the trainer's predict
functions (default "predict").
"""

import dataclasses

import jax

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
    source = datasets_core.get_source(name, **data)
    self.num_examples = source.num_examples(split)
    self.dataset, self.num_batches = input_pipeline.make_eval_dataset(
        source, split, pp=pp_fn, global_batch_size=batch_size,
        process_index=jax.process_index(), process_count=jax.process_count(),
        cache=cache)
    self._sharding = sharding.batch_sharding(mesh)

  def __iter__(self):
    for batch in self.dataset.as_numpy_iterator():
      yield input_pipeline.to_global(batch, self._sharding)


@dataclasses.dataclass
class Scheduled:
  """An evaluator with its name and the steps it runs at."""
  name: str
  evaluator: object
  every: int | None  # Steps between runs; None runs only at the end.

  def due(self, step, total_steps):
    return step == total_steps or bool(self.every and step % self.every == 0)


def build_evaluators(evals, predict_fns, *, mesh, batch_size, total_steps,
                     data_size=None, default_log_steps=None):
  """Builds `config.evals` into a list of `Scheduled` evaluators."""
  out = []
  for name, cfg in (evals or {}).items():
    cfg = dict(cfg)
    where = f"config.evals.{name}"
    if "type" not in cfg:
      raise KeyError(f"{where} needs a `type`; known: {EVALUATORS.names()}.")
    cls = EVALUATORS.get(cfg.pop("type"))
    pred = cfg.pop("pred", "predict")
    if pred not in predict_fns:
      raise KeyError(f"{where}.pred={pred!r} is not a predict function of "
                     f"this trainer; known: {sorted(predict_fns)}.")
    sched = {k: cfg.pop(k) for k in _SCHEDULE_KEYS if k in cfg}
    every = config_lib.to_steps(
        sched, "log", batch_size=batch_size, data_size=data_size,
        total_steps=total_steps, default=default_log_steps)
    cfg.setdefault("batch_size", batch_size)
    config_lib.check_kwargs(cls, cfg, where, skip=("predict_fn", "mesh"))
    out.append(Scheduled(name, cls(predict_fns[pred], mesh=mesh, **cfg),
                         every))
  return out

