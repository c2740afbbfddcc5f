"""Test helpers: in-memory data sources and fake models with known outputs.

`put_arrays(key, splits)` makes `{"name": "bvl_test_arrays:<key>"}` a data
source of numpy features; examples hold precomputed vectors as `image`, so a
fake `predict_fn` maps them to outputs the tests can compute by hand.
"""

import numpy as np
import tensorflow as tf

from big_vision_like.registry import DATASETS

_ARRAYS = {}
PREFIX = "bvl_test_arrays"


class ArraySource:
  """A `DataSource` of in-memory {split: {feature: array}}."""

  def __init__(self, splits, class_names=None):
    self.splits = splits
    self.class_names = class_names

  def num_examples(self, split):
    return len(next(iter(self.splits[split].values())))

  def num_examples_per_process(self, split, *, process_count,
                               drop_remainder):
    n = self.num_examples(split)
    if drop_remainder:
      return [n // process_count] * process_count
    return [len(s) for s in np.array_split(np.arange(n), process_count)]

  def get_tfdata(self, split, *, process_index, process_count,
                 drop_remainder):
    sizes = self.num_examples_per_process(
        split, process_count=process_count, drop_remainder=drop_remainder)
    start = sum(sizes[:process_index])
    rows = slice(start, start + sizes[process_index])
    return tf.data.Dataset.from_tensor_slices(
        {k: v[rows] for k, v in self.splits[split].items()})


@DATASETS.register(PREFIX)
def _factory(key, data_dir=None):
  del data_dir
  return _ARRAYS[key]


def put_arrays(key, splits, class_names=None):
  """Registers `splits` ({split: {feature: array}}); returns its name."""
  _ARRAYS[key] = ArraySource(splits, class_names)
  return f"{PREFIX}:{key}"


def data(key, split):
  return {"name": f"{PREFIX}:{key}", "split": split}


def classifier_predict(train_state, batch):
  """A fake classifier: pre_logits = image, logits = image @ w."""
  x = batch["image"]
  logits = x @ train_state["params"]["w"]
  aux = {"pre_logits": x, "logits": logits,
         "sq_norm": (x ** 2).sum(-1), "nested": {"first": x[:, 0]}}
  return logits, aux


def two_tower_predict(train_state, batch):
  """A fake two-tower model.

  zimg = image (a vector); ztxt = sum of `table` rows of the non-zero tokens
  of `labels` [B, L]. A missing input gives None, as the trainer's predict.
  """
  zimg = batch.get("image")
  tokens = batch.get("labels")
  ztxt = None
  if tokens is not None:
    table = train_state["params"]["table"]
    ztxt = (table[tokens] * (tokens > 0)[..., None]).sum(1)
  return zimg, ztxt, {}
