"""Mean of per-example model outputs over a split (masked, each example once).

  config.evals.val_loss = dict(
      type="mean", data=dict(name="bvl_digits", split="test"), pp_fn=...,
      outputs={"loss": lambda out, batch: my_loss(out[0], batch["labels"])})

Each output is a per-example array ([B] or [B, ...], whose trailing axes are
averaged per example), chosen with `common.select_output`: an aux key, a
model output name, or a callable `fn(outputs, batch)`.
"""

from big_vision_like.evaluators import common
from big_vision_like.pp import builder as pp_builder
from big_vision_like.registry import EVALUATORS


def _as_dict(outputs):
  if isinstance(outputs, str) or callable(outputs):
    outputs = (outputs,)
  if isinstance(outputs, dict):
    return dict(outputs)
  if not all(isinstance(o, str) for o in outputs):
    raise ValueError("mean: name callable outputs with a dict "
                     f"{{metric: fn}}, got {outputs!r}.")
  return {o: o for o in outputs}


@EVALUATORS.register("mean")
class Evaluator:
  """Reports the masked mean of each selected per-example output.

  Args:
    predict_fn: the trainer's predict function.
    data: dict(name=..., split=..., [data_dir=...]).
    pp_fn: the pp string of the split.
    batch_size: global batch size.
    mesh: the device mesh.
    outputs: output names (metric = name), or {metric: name or callable}.
    cache: keep the preprocessed split in memory.
  """

  def __init__(self, predict_fn, *, data, pp_fn, batch_size, mesh,
               outputs=("loss",), cache=True):
    self.data = common.EvalData(data, pp_builder.get_preprocess_fn(pp_fn),
                                batch_size, mesh, cache=cache)
    self._means = common.MaskedMeans(
        common.select_fn(predict_fn, _as_dict(outputs)), mesh)

  def check_inputs(self, train_state):
    """Traces the model on abstract batches; raises on a mismatch."""
    self._means.eval_shape(train_state, self.data)

  def run(self, train_state):
    """Yields (metric, mean over the split) for each output."""
    yield from self._means(train_state, self.data).items()
