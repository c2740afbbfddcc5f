"""Top-k accuracy and loss over a whole split (masked, each example once).

  config.evals.val = dict(
      type="classification", data=dict(name="imagefolder:/data/pets",
                                       split="val"),
      pp_fn="decode|resize(224)|value_range(-1, 1)|"
            "onehot(37, key='label', key_result='labels')|"
            "keep('image', 'labels', 'filename')")

String features the pp keeps (here `filename`) are not fed to the model.

Labels may be integers, one-hot or multi-hot rows (ImageNet-ReaL's
`onehot(1000, key="real_label", ...)`). Examples without any positive label
(an all-zero row, or an integer label < 0) are left out of every metric, as
ReaL's protocol and big_vision's evaluator do: about 1,000 of ReaL's 50,000
validation images have no valid label. `label_indices` scores a model on a
subset of its classes: the logits are restricted to those classes and the
labels mapped onto them, e.g. ImageNet-A / -R (200 of the 1,000 ImageNet
classes, labelled in the 1,000-class space in TFDS):

  config.evals.imagenet_a = dict(
      type="classification", data=dict(name="imagenet_a", split="test"),
      pp_fn="decode|resize_small(256)|central_crop(224)|value_range(-1, 1)|"
            "onehot(1000, key='label', key_result='labels')|"
            "keep('image', 'labels')",
      label_indices="imagenet_a")

`imagenet_data.classification_evals` builds these for every ImageNet
variant.
"""

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_like.evaluators import common
from big_vision_like.evaluators import imagenet_data
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


def has_label(labels):
  """True per example with a positive label: an id >= 0, a row with a 1."""
  if labels.ndim == 1:
    return labels >= 0
  return jnp.max(labels, axis=-1) > 0


def map_labels(labels, label_indices):
  """Labels in the data's class space -> the evaluated classes.

  Args:
    labels: integer labels [B] (data classes; -1 or unknown: no class) or
      one-/multi-hot labels [B, num data classes].
    label_indices: the data class of each evaluated class, [C] (numpy or
      traced).

  Returns:
    Integer labels [B] in 0..C-1 (-1 where no evaluated class), or [B, C].
  """
  if labels.ndim > 1:
    return labels[:, label_indices]
  hit = labels[:, None] == jnp.asarray(label_indices)[None, :]  # [B, C]
  return jnp.where(hit.any(axis=1), hit.argmax(axis=1), -1).astype(jnp.int32)


def resolve_label_indices(value, what="label_indices"):
  """None, a list of class ids, or a named set ("imagenet_a") -> [C] or None.

  A named set of `imagenet_data.CLASS_NAME_SETS` gives its indices among the
  1,000 ImageNet classes; the full-ImageNet sets ("imagenet", ...) give None
  (every class). Raises ValueError naming `what` on anything else.
  """
  if value is None:
    return None
  if isinstance(value, str):
    if value not in imagenet_data.CLASS_NAME_SETS:
      raise ValueError(f"{what}={value!r}: unknown named set; known: "
                       f"{sorted(imagenet_data.CLASS_NAME_SETS)}.")
    value = imagenet_data.label_indices(value)
    return None if value is None else np.asarray(value, np.int32)
  indices = np.asarray(value)
  if (indices.ndim != 1 or not indices.size
      or not np.issubdtype(indices.dtype, np.integer) or indices.min() < 0
      or len(np.unique(indices)) != len(indices)):
    raise ValueError(f"{what} must be a non-empty list of distinct class ids "
                     f">= 0 (or a named set), got {value!r}.")
  return indices.astype(np.int32)


def restrict(logits, labels, label_indices):
  """(logits [B, C], labels) of the `label_indices` classes only."""
  if label_indices is None:
    return logits, labels
  return logits[:, label_indices], map_labels(labels, label_indices)


@EVALUATORS.register("classification")
class Evaluator:
  """prec@k (k in `top_k`) and mean softmax cross-entropy over a split.

  Examples without a positive label are not counted (module docstring).

  Args:
    predict_fn: the trainer's predict function of a classifier.
    data: the split, dict(name=..., split=...).
    pp_fn: its pp string.
    batch_size: global batch size.
    mesh: the device mesh.
    label_key: the integer, one-hot or multi-hot labels in the batch.
    top_k: the k of the reported prec@k.
    label_indices: None (every class), a list of the model's class ids to
      score among, or a named set ("imagenet_a", "imagenet_r": their 200
      classes among ImageNet's 1,000); labels are in the model's class space
      and are mapped onto these classes.
    cache: keep the preprocessed split in memory.
  """

  def __init__(self, predict_fn, *, data, pp_fn, batch_size, mesh,
               label_key="labels", top_k=(1, 5), label_indices=None,
               cache=True):
    self.data = common.EvalData(data, pp_builder.get_preprocess_fn(pp_fn),
                                batch_size, mesh, cache=cache)
    self.top_k = tuple(top_k)
    self.label_indices = resolve_label_indices(label_indices)

    # The indices are an argument, not a constant of the jitted function:
    # evaluators scoring the same number of classes (ImageNet-A and -R)
    # compile the same program (a hit of the compilation cache).
    def per_example(train_state, batch, *indices):
      logits, _ = predict_fn(train_state, batch)
      if label_key not in batch:
        raise KeyError(f"label_key={label_key!r} is not in the batch (keys "
                       f"{sorted(batch)}); check pp_fn.")
      if indices and int(self.label_indices.max()) >= logits.shape[-1]:
        raise ValueError(f"label_indices reach class "
                         f"{int(self.label_indices.max())}, but the model "
                         f"has {logits.shape[-1]} outputs.")
      logits, labels = restrict(logits, batch[label_key],
                                indices[0] if indices else None)
      out = {"loss": cls_losses.softmax_xent(logits, labels),
             "_mask": has_label(labels)}
      for k in self.top_k:
        out[f"prec@{k}"] = topk_correct(logits, labels, k)
      return out

    self._means = common.MaskedMeans(per_example, mesh)

  def check_inputs(self, train_state):
    """Traces the model on abstract batches; raises on a mismatch."""
    self._means.eval_shape(train_state, self.data, *self._args())

  def _args(self):
    return () if self.label_indices is None else (self.label_indices,)

  def run(self, train_state):
    """Yields `loss` and `prec@k` for k in `top_k`."""
    yield from self._means(train_state, self.data, *self._args()).items()
