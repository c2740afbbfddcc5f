"""Top-k accuracy and loss over a whole split (masked, each example once).

  config.evals.val = dict(
      type="classification", data=dict(name="imagefolder:/data/pets",
                                       split="val"),
      pp_fn="decode|resize(224)|value_range(-1, 1)|"
            "onehot(37, key='label', key_result='labels')|"
            "keep('image', 'labels', 'filename')")

String features the pp keeps (here `filename`) are not fed to the model.
"""

import jax
import jax.numpy as jnp

from big_vision_like.evaluators import common
from big_vision_like.losses import classification as cls_losses
from big_vision_like.pp import builder as pp_builder
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
  """prec@k (k in `top_k`) and mean softmax cross-entropy over a split.

  Args:
    predict_fn: the trainer's predict function of a classifier.
    data: the split, dict(name=..., split=...).
    pp_fn: its pp string.
    batch_size: global batch size.
    mesh: the device mesh.
    label_key: the integer, one-hot or multi-hot labels in the batch.
    top_k: the k of the reported prec@k.
    cache: keep the preprocessed split in memory.
  """

  def __init__(self, predict_fn, *, data, pp_fn, batch_size, mesh,
               label_key="labels", top_k=(1, 5), cache=True):
    self.data = common.EvalData(data, pp_builder.get_preprocess_fn(pp_fn),
                                batch_size, mesh, cache=cache)
    self.top_k = tuple(top_k)

    def per_example(train_state, batch):
      logits, _ = predict_fn(train_state, batch)
      labels = batch[label_key]
      out = {"loss": cls_losses.softmax_xent(logits, labels)}
      for k in self.top_k:
        out[f"prec@{k}"] = topk_correct(logits, labels, k)
      return out

    self._means = common.MaskedMeans(per_example, mesh)

  def check_inputs(self, train_state):
    """Traces the model on abstract batches; raises on a mismatch."""
    self._means.eval_shape(train_state, self.data)

  def run(self, train_state):
    """Yields `loss` and `prec@k` for k in `top_k`."""
    yield from self._means(train_state, self.data).items()
