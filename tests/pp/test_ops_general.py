"""Tests of the general pp ops."""

import numpy as np
import pytest
import tensorflow as tf

from big_vision_like.pp import builder


def _run(pp, **data):
  data = {k: tf.constant(v) for k, v in data.items()}
  out = builder.get_preprocess_fn(pp)(data)
  return {k: v.numpy() for k, v in out.items()}


def test_onehot():
  out = _run("onehot(4)", label=2)
  np.testing.assert_array_equal(out["label"], [0, 0, 1, 0])
  assert out["label"].dtype == np.float32
  out = _run('onehot(3, key="y", key_result="labels", on=0.9, off=0.05)', y=0)
  np.testing.assert_allclose(out["labels"], [0.9, 0.05, 0.05])
  np.testing.assert_array_equal(out["y"], 0)


def test_onehot_multi_label():
  out = _run("onehot(4)", label=[0, 3])
  np.testing.assert_array_equal(out["label"], [1, 0, 0, 1])
  out = _run("onehot(4, multi=False)", label=[0, 3])
  np.testing.assert_array_equal(out["label"], [[1, 0, 0, 0], [0, 0, 0, 1]])


def test_onehot_multi_label_of_variable_length_lists():
  """ReaL's `real_label`: lists of any length, empty ones included."""
  pp = builder.get_preprocess_fn(
      'onehot(4, key="real_label", key_result="labels", on=0.9, off=0.1)')
  lists = [[1], [], [0, 3, 3]]
  ds = tf.data.Dataset.from_generator(
      lambda: iter(lists), output_signature=tf.TensorSpec([None], tf.int64))
  out = [x["labels"] for x in ds.map(
      lambda x: pp({"real_label": x})).as_numpy_iterator()]
  np.testing.assert_allclose(out, [[0.1, 0.9, 0.1, 0.1], [0.1] * 4,
                                   [0.9, 0.1, 0.1, 0.9]], rtol=1e-6)


def test_keep_and_drop():
  assert set(_run('keep("a", "c", "zz")', a=1, b=2, c=3)) == {"a", "c"}
  assert set(_run('drop("a", "zz")', a=1, b=2, c=3)) == {"b", "c"}


def test_copy():
  out = _run('copy("a", "b")', a=[1, 2])
  np.testing.assert_array_equal(out["b"], [1, 2])
  np.testing.assert_array_equal(out["a"], [1, 2])


def test_rename():
  out = _run('rename("a", "b")', a=1, c=2)
  assert out == {"b": 1, "c": 2}
  out = _run('rename(a="c", c="a")', a=1, c=2)
  assert out == {"a": 2, "c": 1}
  with pytest.raises(KeyError, match="zz"):
    _run('rename(zz="y")', a=1)


def test_setdefault():
  assert _run('setdefault("a", 5)', b=1) == {"a": 5, "b": 1}
  assert _run('setdefault("a", 5)', a=1) == {"a": 1}
  assert _run('setdefault("t", "x")')["t"] == b"x"


def test_cast():
  out = _run('cast("int32", key="x")', x=[1.7])
  assert out["x"].dtype == np.int32


def test_general_ops_work_in_tf_data():
  pp = ('onehot(3, key="label", key_result="labels")|copy("id", "id2")'
        '|rename(id2="key")|setdefault("w", 1.0)|drop("label")')
  ds = tf.data.Dataset.from_tensor_slices(
      {"label": np.array([2, 0]), "id": np.array([7, 8])})
  out = list(ds.map(builder.get_preprocess_fn(pp)).as_numpy_iterator())
  assert set(out[0]) == {"labels", "id", "key", "w"}
  np.testing.assert_array_equal(out[0]["labels"], [0, 0, 1])
  assert out[1]["key"] == 8 and out[1]["w"] == 1.0


def test_flatten_nested_features_eagerly_and_in_tf_data():
  data = {"image": tf.zeros([2]), "captions": {"text": tf.constant(["a", "b"]),
                                               "id": {"x": tf.constant(3)}}}
  fn = builder.get_preprocess_fn("flatten")
  out = fn(data)
  assert sorted(out) == ["captions/id/x", "captions/text", "image"]
  ds = tf.data.Dataset.from_tensors(data).map(fn)
  got = next(iter(ds))
  assert got["captions/text"].numpy().tolist() == [b"a", b"b"]
  assert int(got["captions/id/x"]) == 3
