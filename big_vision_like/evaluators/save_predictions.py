"""Saves per-example outputs of a split to `<workdir>/predictions/`.

  config.evals.preds = dict(
      type="save_predictions", data=dict(name="bvl_digits", split="test"),
      pp_fn=..., outputs=("logits", "pre_logits"), keep=("label",))

Writes `<workdir>/predictions/<name>_<step>.npz` (process 0 only) with one
array per selected output and kept batch key, rows in split order, padding
dropped. `workdir` and `name` (the config key) are passed by
`common.build_evaluators(..., workdir=...)`; a config may set them itself.
"""

import io

import jax
import numpy as np

from big_vision_like import fs
from big_vision_like.evaluators import common
from big_vision_like.pp import builder as pp_builder
from big_vision_like.registry import EVALUATORS


def _as_dict(outputs):
  if isinstance(outputs, dict):
    return dict(outputs)
  if isinstance(outputs, str):
    outputs = (outputs,)
  return {o: o for o in outputs}


@EVALUATORS.register("save_predictions")
class Evaluator:
  """Writes selected per-example outputs to an .npz file at each run.

  Args:
    predict_fn: the trainer's predict function.
    data: the split, dict(name=..., split=...).
    pp_fn: its pp string.
    batch_size: global batch size.
    mesh: the device mesh.
    workdir: the run's directory (given by the trainer).
    name: the file name prefix (the evaluator's config key).
    outputs: output names, or {array name: name or callable}.
    keep: batch keys saved as well (e.g. labels, ids).
    inputs: batch keys fed to the model (None: the whole batch).
    cache: keep the preprocessed split in memory.
  """

  def __init__(self, predict_fn, *, data, pp_fn, batch_size, mesh,
               workdir=None, name="predictions", outputs=("logits",),
               keep=(), inputs=None, cache=True):
    if workdir is None:
      raise ValueError("save_predictions needs `workdir`: pass it to "
                       "build_evaluators(..., workdir=...) or set it in "
                       "the evaluator's config.")
    self.directory = fs.join(workdir, "predictions")
    self.name = name
    self.data = common.EvalData(data, pp_builder.get_preprocess_fn(pp_fn),
                                batch_size, mesh, cache=cache)
    self._gather = common.Gatherer(common.select_fn(
        predict_fn, _as_dict(outputs), inputs=inputs, keep=tuple(keep)), mesh)

  def check_inputs(self, train_state):
    """Traces the model on abstract batches; raises on a mismatch."""
    self._gather.eval_shape(train_state, self.data)

  def path(self, step):
    """The file written at `step`."""
    return fs.join(self.directory, f"{self.name}_{step}.npz")

  def run(self, train_state):
    """Writes the file; yields `num_examples`."""
    arrays = self._gather(train_state, self.data)
    step = int(jax.device_get(train_state.get("step", 0)))
    if jax.process_index() == 0:
      buf = io.BytesIO()
      np.savez(buf, **arrays)
      fs.write_atomic(self.path(step), buf.getvalue())
    yield "num_examples", len(next(iter(arrays.values())))
