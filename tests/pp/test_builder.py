"""Tests of the pp-string parser and builder."""

import numpy as np
import pytest
import tensorflow as tf

from big_vision_like import registry
from big_vision_like.pp import builder
from big_vision_like.pp import utils


@registry.PP_OPS.register("test_record")
def _get_record(*args, out="record", **kwargs):
  """Writes its arguments and its seed into the data, for these tests."""

  def _op(data):
    data = dict(data)
    data[out] = (args, kwargs)
    data[out + "_rng"] = data.get("_rng")
    return data

  return _op


def test_split_ops_respects_brackets_and_quotes():
  pp = 'a|b(1, "x|y")|c(k=[1, 2])| d '
  assert builder.split_ops(pp) == ["a", 'b(1, "x|y")', "c(k=[1, 2])", "d"]
  assert builder.split_ops("") == []


def test_parse_op_args_and_kwargs():
  assert builder.parse_op("decode") == ("decode", (), {})
  got = builder.parse_op('onehot(10, key="label", on=0.9, x=(1, -2), y=None)')
  assert got == ("onehot", (10,),
                 {"key": "label", "on": 0.9, "x": (1, -2), "y": None})


def test_ops_receive_literal_arguments():
  fn = builder.get_preprocess_fn('test_record(1, "a", [2, 3], k={"z": 1})')
  out = fn({})
  assert out["record"] == ((1, "a", [2, 3]), {"k": {"z": 1}})


def test_log_data():
  fn = builder.get_preprocess_fn("keep('a')", log_data=True)
  assert fn({"a": 1, "b": 2}) == {"a": 1}


def test_empty_string_is_identity():
  fn = builder.get_preprocess_fn("")
  data = {"image": tf.zeros([2, 2, 3])}
  assert fn(data).keys() == {"image"}
  assert builder.get_preprocess_fn(None)({"a": 1}) == {"a": 1}


@pytest.mark.parametrize("pp,words", [
    ("decode|no_such_op(3)", ["no_such_op", "decode|no_such_op(3)"]),
    ("decode|resize(3", ["resize(3", "syntax"]),
    ("decode|resize(x)", ["resize", "'x'", "literal"]),
    ("decode|resize(size=open('f'))", ["resize", "size=open('f')"]),
    ("resize(sise=3)", ["resize", "'sise'", "resize(sise=3)"]),
    ("resize", ["resize", "'size'"]),
    ("resize(1, 'bilinear', False, 4)", ["resize", "too many"]),
    ("decode(chanels=1)|resize(3)", ["decode", "'chanels'"]),
    ("rename('a')", ["rename", "both"]),
    ("resize(1)[0]", ["resize(1)[0]"]),
])
def test_errors_name_op_argument_and_pp_string(pp, words):
  with pytest.raises(ValueError) as e:
    builder.get_preprocess_fn(pp)
  for word in words:
    assert word in str(e.value)
  assert repr(pp) in str(e.value) or pp in str(e.value)


def test_seed_gives_each_op_its_own_rng_and_is_removed():
  fn = builder.get_preprocess_fn('test_record(out="a")|test_record(out="b")')
  out = fn({"_seed": tf.constant([3, 4], tf.int64)})
  assert "_seed" not in out and "_rng" not in out
  a, b = out["a_rng"].numpy(), out["b_rng"].numpy()
  assert a.shape == (2,) and not np.array_equal(a, b)
  again = fn({"_seed": tf.constant([3, 4], tf.int64)})
  np.testing.assert_array_equal(again["a_rng"], a)
  other = fn({"_seed": tf.constant([3, 5], tf.int64)})
  assert not np.array_equal(other["a_rng"], a)


def test_without_seed_random_ops_still_work():
  fn = builder.get_preprocess_fn("flip_lr|random_crop(2)")
  out = fn({"image": tf.reshape(tf.range(27), [3, 3, 3])})
  assert out["image"].shape == (2, 2, 3) and "_rng" not in out


def test_works_inside_tf_data():
  fn = builder.get_preprocess_fn(
      'value_range(0, 1)|onehot(4, key="label", key_result="labels")'
      '|keep("image", "labels")')
  ds = tf.data.Dataset.from_tensor_slices(
      {"image": np.full([3, 2, 2, 1], 255, np.uint8),
       "label": np.array([0, 1, 3]), "_seed": np.zeros([3, 2], np.int64)})
  out = list(ds.map(fn).as_numpy_iterator())
  assert set(out[0]) == {"image", "labels"}
  np.testing.assert_array_equal(out[2]["labels"], [0, 0, 0, 1])
  np.testing.assert_allclose(out[1]["image"], 1.0)


def test_keyed_decorator_key_inkey_outkey():
  fn = builder.get_preprocess_fn('value_range(0, 1, key="x")')
  out = fn({"x": tf.constant([255.0]), "image": tf.constant([0.0])})
  np.testing.assert_allclose(out["x"], [1.0])
  fn = builder.get_preprocess_fn('value_range(0, 1, inkey="x", outkey="y")')
  out = fn({"x": tf.constant([255.0])})
  np.testing.assert_allclose(out["x"], [255.0])
  np.testing.assert_allclose(out["y"], [1.0])


def test_get_rng_falls_back_to_a_fresh_seed():
  assert utils.get_rng({}).shape == (2,)
  seed = tf.constant([1, 2], tf.int64)
  assert utils.get_rng({"_rng": seed}) is seed
