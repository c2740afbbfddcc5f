"""Tests of the text pp ops (tokenize, choice, lower, strfmt, pad_to_shape)."""

import numpy as np
import pytest
import tensorflow as tf

from big_vision_like import registry
from big_vision_like.pp import builder
from big_vision_like.pp import tokenizer

TOK = 'model="bvl_shapes"'


@pytest.fixture(scope="module")
def red():
  """The id of "red" (one token) in the built-in tokenizer."""
  ids = tokenizer.get_tokenizer("bvl_shapes").to_int("red red")
  assert len(ids) == 2 and ids[0] == ids[1]
  return ids[0]


def _run(pp, **data):
  data = {k: tf.constant(v) for k, v in data.items()}
  out = builder.get_preprocess_fn(pp)(data)
  return {k: v.numpy() for k, v in out.items()}


def _run_tfdata(pp, **data):
  ds = tf.data.Dataset.from_tensors({k: tf.constant(v)
                                     for k, v in data.items()})
  return next(ds.map(builder.get_preprocess_fn(pp)).as_numpy_iterator())


def _tokens(text, max_len, eos, **kw):
  args = "".join(f", {k}={v!r}" for k, v in kw.items())
  pp = f'tokenize({max_len}, "{eos}", {TOK}, inkey="t"{args})'
  return _run(pp, t=text)["labels"].tolist()


@pytest.mark.parametrize("eos,want", [
    ("none", [[1, 0, 0], [1, 1, 0], [1, 1, 1]]),
    ("yes", [[1, -1, 0], [1, 1, -1], [1, 1, 1]]),
    ("sticky", [[1, -1, 0], [1, 1, -1], [1, 1, -1]]),
])
def test_tokenize_eos_modes(red, eos, want):
  # In `want`, 1 stands for "red", -1 for EOS (id 1) and 0 for <pad> (id 0).
  ids = {1: red, -1: 1, 0: 0}
  for text, row in zip(["red", "red red", "red red red red"], want):
    assert _tokens(text, 3, eos) == [ids[i] for i in row], text


def test_tokenize_sticky_padded_with_eos_siglip_style(red):
  assert _tokens("red", 4, "sticky", pad_value=1) == [red, 1, 1, 1]
  assert _tokens("red " * 9, 4, "sticky", pad_value=1) == [red] * 3 + [1]
  assert _tokens("red", 3, "yes", pad_value="</s>") == [red, 1, 1]
  assert _tokens("", 3, "sticky") == [1, 0, 0]


def test_tokenize_lowercases_unless_told_not_to(red):
  assert _tokens("RED", 2, "none") == [red, 0]
  assert 2 in _tokens("RED", 2, "none", lower=False)  # <unk>


def test_tokenize_several_texts_and_keys(red):
  pp = f'tokenize(3, "sticky", {TOK})'
  out = _run(pp, texts=[["red", "red red"], ["", "red red red"]])
  assert out["labels"].shape == (2, 2, 3) and out["labels"].dtype == np.int32
  assert out["labels"][1].tolist() == [[1, 0, 0], [red, red, 1]]
  out = _run(f'tokenize(2, "none", {TOK}, key="x")', x="red")
  assert out["x"].tolist() == [red, 0]
  out = _run(f'tokenize(2, "none", {TOK}, inkey="x", outkey="y")', x="red")
  assert out["y"].tolist() == [red, 0] and out["x"] == b"red"


def test_tokenize_in_tf_data_equals_eager():
  texts = ["a photo of a large red circle in the top left.", "A Blue Cross"]
  pp = f'tokenize(6, "sticky", {TOK}, pad_value=1)'
  want = _run(pp, texts=texts)["labels"]
  ds = tf.data.Dataset.from_tensor_slices({"texts": texts})
  ds = ds.map(builder.get_preprocess_fn(pp))
  assert ds.element_spec["labels"].shape == (6,)
  got = np.stack([x["labels"] for x in ds.as_numpy_iterator()])
  np.testing.assert_array_equal(got, want)


def test_tokenize_rejects_bad_arguments():
  with pytest.raises(ValueError, match="eos"):
    builder.get_preprocess_fn(f'tokenize(3, "maybe", {TOK})')
  with pytest.raises(ValueError, match="not in"):
    builder.get_preprocess_fn(f'tokenize(3, "yes", {TOK}, pad_value="<x>")')


def _choose(pp, seed, **data):
  return _run(pp, _seed=np.array([seed, 7], np.int64), **data)


def test_choice_single_is_deterministic_and_covers_all():
  texts = [f"t{i}" for i in range(5)]
  picks = [_choose("choice()", s, texts=texts)["texts"] for s in range(60)]
  assert set(picks) == {t.encode() for t in texts}
  again = [_choose("choice()", s, texts=texts)["texts"] for s in range(60)]
  assert picks == again


def test_choice_n_keeps_order_and_keys_aligned():
  pp = 'choice(2, key=["a", "b"])'
  for seed in range(20):
    out = _choose(pp, seed, a=[0, 1, 2, 3], b=[0, 10, 20, 30])
    assert out["a"].shape == (2,) and out["a"][0] < out["a"][1]
    np.testing.assert_array_equal(out["b"], out["a"] * 10)
  out = _choose('choice(inkey="texts", outkey="{key}_1")', 3, texts=["x"])
  assert out["texts_1"] == b"x" and out["texts"].tolist() == [b"x"]


def test_choice_ranges_and_too_few():
  sizes = {len(_choose("choice([1, 3], key='a')", s, a=[5, 6, 7, 8])["a"])
           for s in range(40)}
  assert sizes == {1, 2, 3}
  out = _choose("choice(3, key='a', fewer_ok=True)", 0, a=[5, 6])
  assert sorted(out["a"].tolist()) == [5, 6]
  with pytest.raises(tf.errors.InvalidArgumentError):
    _choose("choice(3, key='a')", 0, a=[5, 6])


def test_choice_in_tf_data_follows_the_seed():
  pp = builder.get_preprocess_fn("choice()")
  texts = [f"t{i}" for i in range(8)]
  ds = tf.data.Dataset.range(30).map(lambda i: {
      "texts": tf.constant(texts), "_seed": tf.stack([i, i])})
  got = [x["texts"] for x in ds.map(pp).as_numpy_iterator()]
  assert got == [x["texts"] for x in ds.map(pp).as_numpy_iterator()]
  assert len(set(got)) > 3
  eager = _run("choice()", texts=texts, _seed=np.array([4, 4], np.int64))
  assert got[4] == eager["texts"]


def test_lower():
  out = _run("lower()", text=["Hello WORLD", "ÄÖ"])
  assert [t.decode() for t in out["text"]] == ["hello world", "äö"]
  out = _run('lower(inkey="t", outkey="u")', t="AbC")
  assert out["u"] == b"abc" and out["t"] == b"AbC"


def test_strfmt():
  out = _run('strfmt("a {name} ({label}) {{x}}")', name="cat", label=3)
  assert out["text"] == b"a cat (3) {x}"
  out = _run('strfmt("{v}", outkey="s")', v=[1, 2])
  assert out["s"] == b"[1 2]"
  with pytest.raises(ValueError, match="plain"):
    builder.get_preprocess_fn('strfmt("{x:3d}")')


def test_strfmt_in_tf_data():
  out = _run_tfdata('strfmt("a photo of a {c} {s}.")', c="red", s="circle")
  assert out["text"] == b"a photo of a red circle."


def test_pad_to_shape():
  out = _run("pad_to_shape((4,), key='x')", x=[1, 2])
  assert out["x"].tolist() == [1, 2, 0, 0]
  out = _run("pad_to_shape((2,), key='x')", x=[1, 2, 3])
  assert out["x"].tolist() == [1, 2]
  out = _run("pad_to_shape((None, 3), pad_value=-1, key='x')", x=[[1], [2]])
  assert out["x"].tolist() == [[1, -1, -1], [2, -1, -1]]
  out = _run("pad_to_shape((5,), where='both', key='x')", x=[1, 2])
  assert out["x"].tolist() == [0, 1, 2, 0, 0]
  out = _run("pad_to_shape((2,), where='before', key='x')", x=[1, 2, 3])
  assert out["x"].tolist() == [2, 3]
  out = _run("pad_to_shape((3,), pad_value='', key='t')", t=["a"])
  assert out["t"].tolist() == [b"a", b"", b""]


def test_pad_to_shape_in_tf_data_gives_static_shapes():
  pp = builder.get_preprocess_fn("pad_to_shape((3, None), key='x')")
  ds = tf.data.Dataset.from_generator(
      lambda: iter([np.ones((2, 4)), np.ones((5, 4))]),
      output_signature=tf.TensorSpec([None, 4], tf.float64))
  ds = ds.map(lambda x: pp({"x": x}))
  assert ds.element_spec["x"].shape == (3, 4)
  got = [x["x"] for x in ds.as_numpy_iterator()]
  assert got[0][:, 0].tolist() == [1, 1, 0] and got[1].shape == (3, 4)
  with pytest.raises(ValueError, match="rank"):
    _run("pad_to_shape((3,), key='x')", x=[[1]])


def test_ops_are_registered():
  for name in ("tokenize", "choice", "lower", "strfmt", "pad_to_shape"):
    assert name in registry.PP_OPS
