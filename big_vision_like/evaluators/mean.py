"""Mean of per-example model outputs over a split (masked, each example once).

  config.evals.val_loss = dict(
      type="mean", data=dict(name="bvl_digits", split="test"), pp_fn=...,
      outputs={"loss": lambda out, batch: my_loss(out[0], batch["labels"])})

Each output is a per-example array ([B] or [B, ...], whose trailing axes are
averaged per example), chosen with `common.select_output`: an aux key, a
model output name, or a callable `fn(outputs, batch)`.
"""

import jax
import jax.numpy as jnp

from big_vision_like import sharding
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
    select = _as_dict(outputs)
    per_example = common.select_fn(predict_fn, select)

    def sums(train_state, batch):
      out = per_example(train_state, batch)
      mask = batch["_mask"].astype(jnp.float32)
      out = {k: jnp.mean(jnp.reshape(v, (v.shape[0], -1)).astype(jnp.float32),
                         axis=1) * mask for k, v in out.items()}
      out["_count"] = mask
      return jax.tree.map(jnp.sum, out)

    self._sums = jax.jit(sums, out_shardings=sharding.replicated(mesh))

  def run(self, train_state):
    """Yields (metric, mean over the split) for each output."""
    total = None
    for batch in self.data:
      s = self._sums(train_state, common.numeric(batch))
      total = s if total is None else jax.tree.map(jnp.add, total, s)
    total = jax.device_get(total)
    count = max(float(total.pop("_count")), 1.0)
    for name, value in total.items():
      yield name, float(value) / count
