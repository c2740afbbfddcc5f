"""General pp ops: labels and the bookkeeping of feature-dict keys.

Arguments are checked when an op is built (`utils.check_*`).
"""

import tensorflow as tf

from big_vision_like.pp import utils
from big_vision_like.registry import PP_OPS


@PP_OPS.register("onehot")
def get_onehot(depth, key="label", key_result=None, multi=True, on=1.0,
               off=0.0):
  """One-hot encodes `data[key]` into `data[key_result or key]` (float32).

  Args:
    depth: number of classes.
    key: the integer label(s) to encode.
    key_result: where to write the result (default: overwrite `key`).
    multi: a vector of labels becomes one multi-hot vector (else [N, depth]);
      an empty vector gives all `off` (e.g. ImageNet-ReaL's `real_label`).
    on: value of the true class(es).
    off: value of the other classes.

  Returns:
    The op.
  """
  utils.check_positive_int("onehot", "depth", depth)
  utils.check_str("onehot", "key", key)
  utils.check_str("onehot", "key_result", key_result, allow_none=True)
  utils.check_bool("onehot", "multi", multi)
  utils.check_number("onehot", "on", on)
  utils.check_number("onehot", "off", off)

  def _onehot(data):
    data = dict(data)
    labels = tf.cast(data[key], tf.int32)
    # tf.one_hot makes all-zero targets of labels >= depth, silently.
    tf.debugging.assert_less(
        labels, depth, message=f"pp op onehot({depth}): a label of `{key}` "
        f"is >= depth={depth}; set depth to the number of classes")
    out = tf.one_hot(labels, depth, on_value=1.0, off_value=0.0)
    if multi and labels.shape.rank == 1:
      # Not reduce_max: an empty list (an unlabelled ReaL image) must give
      # all `off`, not -inf; repeated labels still count once.
      out = tf.minimum(tf.reduce_sum(out, axis=0), 1.0)
    data[key_result or key] = out * (on - off) + off
    return data

  return _onehot


@PP_OPS.register("keep")
def get_keep(*keys):
  """Keeps only `keys` (missing ones are ignored)."""
  _check_keys("keep", keys)
  return lambda data: {k: v for k, v in data.items() if k in keys}


@PP_OPS.register("drop")
def get_drop(*keys):
  """Removes `keys` (missing ones are ignored)."""
  _check_keys("drop", keys)
  return lambda data: {k: v for k, v in data.items() if k not in keys}


@PP_OPS.register("copy")
def get_copy(inkey, outkey):
  """Copies `data[inkey]` to `data[outkey]`."""
  _check_keys("copy", (inkey, outkey), ("inkey", "outkey"))
  return lambda data: {**data, outkey: data[inkey]}


@PP_OPS.register("rename")
def get_rename(inkey=None, outkey=None, /, **old_to_new):
  """Renames keys: `rename("a", "b")` and/or `rename(a="b", c="d")`."""
  if (inkey is None) != (outkey is None):
    raise ValueError("rename needs both inkey and outkey, or neither.")
  if inkey is not None:
    _check_keys("rename", (inkey, outkey), ("inkey", "outkey"))
    old_to_new = {inkey: outkey, **old_to_new}
  if not old_to_new:
    raise ValueError("rename needs at least one key to rename.")
  _check_keys("rename", old_to_new.values(), old_to_new.keys())

  def _rename(data):
    data = dict(data)
    missing = [k for k in old_to_new if k not in data]
    if missing:
      raise KeyError(f"rename: keys {missing} not in {sorted(data)}.")
    values = {new: data.pop(old) for old, new in old_to_new.items()}
    data.update(values)
    return data

  return _rename


@PP_OPS.register("setdefault")
def get_setdefault(key, value):
  """Sets `data[key] = value` when `key` is absent."""
  utils.check_str("setdefault", "key", key)

  def _setdefault(data):
    data = dict(data)
    if key not in data:
      data[key] = tf.constant(value)
    return data

  return _setdefault


def _check_keys(op, keys, names=None):
  """Checks that feature keys are strings; `names` name the arguments."""
  names = list(names) if names is not None else [
      f"keys[{i}]" for i in range(len(keys))]
  for name, key in zip(names, keys):
    utils.check_str(op, name, key)


# Keyed single-tensor helpers, useful on any feature.
@PP_OPS.register("cast")
@utils.keyed("image")
def get_cast(dtype="float32"):
  """Casts to `dtype` (a tf dtype name)."""
  try:
    dtype = tf.dtypes.as_dtype(dtype)
  except TypeError:
    raise utils.ArgumentError("cast", "dtype", dtype,
                              "is not a TensorFlow dtype name") from None
  return lambda x: tf.cast(x, dtype)


@PP_OPS.register("flatten")
def get_flatten():
  """Flattens nested feature dicts into `/`-joined keys (big_vision's op).

  E.g. TFDS coco_captions' `{"captions": {"text": ...}}` becomes
  `{"captions/text": ...}`, which other ops can then read by key.
  """

  def _flatten(data):
    out = {}
    for key, value in data.items():
      if isinstance(value, dict):
        for sub, v in _flatten(value).items():
          out[f"{key}/{sub}"] = v
      else:
        out[key] = value
    return out

  return _flatten
