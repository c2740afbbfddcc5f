"""Top-k accuracy and loss over a whole split (masked, each example once)."""

import jax
import jax.numpy as jnp

from big_vision_like.pp import builder as pp_builder
from big_vision_like import sharding
from big_vision_like.evaluators import common
from big_vision_like.losses import classification as cls_losses
from big_vision_like.registry import EVALUATORS


def topk_correct(logits, labels, k):
  """1.0 where one of the top-k classes is a positive label, per example."""
  num_classes = logits.shape[-1]
  if labels.ndim == 1:
    labels = jax.nn.one_hot(labels, num_classes)
  topk = jax.lax.top_k(logits, min(k, num_classes))[1]  # [B, k]
  hits = jnp.take_along_axis(labels, topk, axis=-1) > 0
  return jnp.any(hits, axis=-1).astype(jnp.float32)


@EVALUATORS.register("classification")
class Evaluator:
  """prec@k (k in `top_k`) and mean softmax cross-entropy over a split."""

  def __init__(self, predict_fn, *, data, pp_fn, batch_size, mesh,
               label_key="labels", top_k=(1, 5), cache=True):
    self.data = common.EvalData(data, pp_builder.get_preprocess_fn(pp_fn), batch_size,
                                mesh, cache=cache)
    self.top_k = tuple(top_k)

    def sums(train_state, batch):
      logits, _ = predict_fn(train_state, batch)
      labels, mask = batch[label_key], batch["_mask"].astype(jnp.float32)
      out = {"loss": cls_losses.softmax_xent(logits, labels) * mask,
             "count": mask}
      for k in self.top_k:
        out[f"prec@{k}"] = topk_correct(logits, labels, k) * mask
      return jax.tree.map(jnp.sum, out)

    self._sums = jax.jit(sums, out_shardings=sharding.replicated(mesh))

  def run(self, train_state):
    total = None
    for batch in self.data:
      s = self._sums(train_state, batch)
      total = s if total is None else jax.tree.map(jnp.add, total, s)
    total = jax.device_get(total)
    count = max(float(total.pop("count")), 1.0)
    for name, value in total.items():
      yield name, float(value) / count
