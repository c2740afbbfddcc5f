"""Tests of the SentencePiece tokenizer wrapper and the built-in tokenizer."""

import os

import numpy as np
import pytest
import tensorflow as tf

from big_vision_like.datasets import shapes
from big_vision_like.pp import tokenizer


@pytest.fixture(scope="module")
def tok():
  return tokenizer.get_tokenizer("bvl_shapes")


def test_builtin_ids_and_cache_location(tok):
  assert tok.vocab_size == tokenizer.BUILTIN_VOCAB_SIZE == 256
  assert (tok.pad_token, tok.eos_token, tok.unk_token) == (0, 1, 2)
  assert [tok.to_piece(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
  folder = os.path.join(os.environ["BVL_DATA_DIR"], "tokenizers")
  assert os.path.dirname(tok.model_path) == folder
  assert tokenizer.get_tokenizer("bvl_shapes") is tok  # Cached.


def test_round_trips_every_caption(tok):
  corpus = shapes.caption_corpus()
  ids = tok.to_int(corpus)
  assert tok.to_str(ids) == corpus
  assert all(tok.unk_token not in x and tok.eos_token not in x for x in ids)


def test_attribute_words_are_single_tokens(tok):
  for word in shapes.COLOURS + shapes.SHAPES + shapes.SIZES:
    assert len(tok.to_int(word)) == 1, word


def test_plain_lower_case_text_has_no_unk(tok):
  ids = tok.to_int("zebra 42, quickly!")
  assert tok.unk_token not in ids
  assert tok.to_str(ids) == "zebra 42, quickly!"
  assert tok.unk_token in tok.to_int("Zebra")  # Expects lower-cased text.


def test_training_is_deterministic(tmp_path):
  path_a = tokenizer.train_builtin_tokenizer(tmp_path / "a")
  path_b = tokenizer.train_builtin_tokenizer(tmp_path / "b")
  with open(path_a, "rb") as fa, open(path_b, "rb") as fb:
    assert fa.read() == fb.read()
  mtime = os.path.getmtime(path_a)
  assert tokenizer.train_builtin_tokenizer(tmp_path / "a") == path_a
  assert os.path.getmtime(path_a) == mtime  # Reused, not retrained.
  texts = ["a b", "a c", "b c"] * 3
  assert (tokenizer.train_sentencepiece(texts, 10) ==
          tokenizer.train_sentencepiece(texts, 10))


def test_eos(tok):
  red = tok.to_int("red")
  assert tok.to_int("red", eos=True) == red + [1]
  eos_tok = tokenizer.Tokenizer(tok.model_path, add_eos=True)
  assert eos_tok.to_int(["red", "blue"]) == [red + [1],
                                            tok.to_int("blue") + [1]]
  assert eos_tok.to_int("red", eos=False) == red


def test_to_str_stops_at_eos_and_decodes_batches(tok):
  red, blue = tok.to_int("red"), tok.to_int("blue")
  assert tok.to_str(red + [1] + blue) == "red"
  assert tok.to_str(red + [1] + blue, stop_at_eos=False) == "red blue"
  batch = np.array([red + [1, 1], blue + blue + [0]], np.int32)
  assert tok.to_str(batch) == ["red", "blue blue"]
  assert tok.to_str(tf.constant(batch)) == ["red", "blue blue"]
  assert tok.to_str([red, blue]) == ["red", "blue"]


def test_tf_op_equals_eager(tok):
  texts = shapes.caption_corpus()[:50]
  want = tok.to_int(texts, eos=True)
  got = tok.to_int_tf_op(tf.constant(texts[0]), eos=True)
  assert got.dtype == tf.int32 and got.shape.rank == 1
  assert got.numpy().tolist() == want[0]
  assert tok.to_int_tf_op(tf.constant(texts), eos=True).to_list() == want
  ds = tf.data.Dataset.from_tensor_slices(texts)
  ds = ds.map(lambda t: tok.to_int_tf_op(t, eos=True))
  assert [x.tolist() for x in ds.as_numpy_iterator()] == want


def test_tf_op_keeps_higher_ranks(tok):
  texts = [["red", "a blue cross"], ["", "green"]]
  got = tok.to_int_tf_op(tf.constant(texts))
  assert got.shape[:2] == (2, 2)
  assert got.to_list() == [tok.to_int(row) for row in texts]


def test_get_tokenizer_by_path_and_unknown_name(tok):
  by_path = tokenizer.get_tokenizer(tok.model_path)
  assert by_path.to_int("a red circle") == tok.to_int("a red circle")
  with pytest.raises(ValueError, match="bvl_shapes"):
    tokenizer.get_tokenizer("no_such_tokenizer")


def test_piece_to_id(tok):
  assert tok.piece_to_id("<pad>") == 0 and tok.piece_to_id("</s>") == 1
  with pytest.raises(ValueError, match="not in"):
    tok.piece_to_id("no-such-piece")
