"""Classification losses: softmax and sigmoid cross-entropy, label smoothing.

Each loss exists twice: a pure per-example function of arrays
(`softmax_xent(logits, labels)`) and a registered objective used by the
trainer, `objective(outputs, batch, **kw) -> (scalar loss, metrics)`, which
takes the model's `(logits, aux)` and the batch. The config selects the
objective by name (`config.loss = "softmax_xent"`) and passes `config.loss_kw`.
"""

import jax
import jax.numpy as jnp

from big_vision_like.registry import LOSSES


def _as_onehot(labels, num_classes):
  """Integer labels [B] -> one-hot [B, C]; (multi-)hot labels pass through."""
  if jnp.issubdtype(labels.dtype, jnp.integer) and labels.ndim == 1:
    return jax.nn.one_hot(labels, num_classes)
  if labels.shape[-1] != num_classes:
    raise ValueError(f"labels have {labels.shape[-1]} classes but logits "
                     f"have {num_classes}.")
  return labels


def smooth_labels(labels, label_smoothing):
  """Mixes (multi-)hot labels [B, C] with the uniform distribution."""
  if not label_smoothing:
    return labels
  num_classes = labels.shape[-1]
  return labels * (1.0 - label_smoothing) + label_smoothing / num_classes


def softmax_xent(logits, labels, *, label_smoothing=0.0):
  """Per-example softmax cross-entropy [B] with (soft or integer) labels."""
  logits = logits.astype(jnp.float32)  # [B, C]
  labels = smooth_labels(_as_onehot(labels, logits.shape[-1]), label_smoothing)
  labels = labels / jnp.maximum(labels.sum(-1, keepdims=True), 1e-9)
  return -jnp.sum(labels * jax.nn.log_softmax(logits), axis=-1)


def sigmoid_xent(logits, labels, *, label_smoothing=0.0):
  """Per-example sum over classes of binary cross-entropies [B]."""
  logits = logits.astype(jnp.float32)  # [B, C]
  labels = smooth_labels(_as_onehot(labels, logits.shape[-1]), label_smoothing)
  log_p = jax.nn.log_sigmoid(logits)
  log_not_p = jax.nn.log_sigmoid(-logits)
  return -jnp.sum(labels * log_p + (1.0 - labels) * log_not_p, axis=-1)


def _objective(per_example_fn):
  def objective(outputs, batch, *, labels_key="labels", label_smoothing=0.0):
    logits, _ = outputs
    if labels_key not in batch:
      raise KeyError(f"The loss reads batch[{labels_key!r}], but the batch has "
                     f"{sorted(batch)}; check config.input.pp or "
                     "config.loss_kw.labels_key.")
    losses = per_example_fn(logits, batch[labels_key],
                            label_smoothing=label_smoothing)
    return jnp.mean(losses), {}
  objective.example_mean = True  # Micro-batch gradients average exactly.
  objective.__name__ = per_example_fn.__name__
  objective.__doc__ = (f"Trainer objective: mean of `{per_example_fn.__name__}`"
                       " over the batch.")
  return objective


LOSSES.register("softmax_xent", _objective(softmax_xent))
LOSSES.register("sigmoid_xent", _objective(sigmoid_xent))
