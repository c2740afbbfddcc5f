"""Tests of the zero-shot evaluator with a fake two-tower model.

A fake text op (`bvl_test_words`, registered here) maps each word to a hash
bucket; the fake model embeds a text as the sum of its words' table rows.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from big_vision_like import sharding
from big_vision_like.evaluators import zeroshot
from big_vision_like.pp import builder as pp_builder
from big_vision_like.registry import EVALUATORS
from big_vision_like.registry import PP_OPS
from tests.evaluators import fakes

VOCAB, DIM, LEN = 97, 16, 8
CLASSES = ["cat", "dog", "red bird", "ship", "tree", "car", "lamp"]
TEMPLATES = ("a photo of a {}.", "a {} drawing", "{}")
PP_TXT = "bvl_test_words(max_len=8)"


@PP_OPS.register("bvl_test_words")
def _get_words(max_len, inkey="texts", outkey="labels"):
  """Words -> hash buckets 1..VOCAB-1, padded with 0 to `max_len`."""

  def op(data):
    words = tf.strings.split(data[inkey])[:max_len]
    ids = tf.strings.to_hash_bucket_fast(words, VOCAB - 1) + 1
    ids = tf.pad(ids, [[0, max_len - tf.shape(ids)[0]]])
    return {**data, outkey: tf.ensure_shape(ids, [max_len])}

  return op


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _expected_classes(table, class_names, templates):
  """NumPy: mean of unit prompt embeddings per class, re-normalised."""
  pp = pp_builder.get_preprocess_fn(PP_TXT)
  out = []
  for c in class_names:
    prompts = []
    for t in templates:
      ids = pp({"texts": tf.constant(t.format(c))})["labels"].numpy()
      prompts.append(_unit(table[ids[ids > 0]].sum(0)))
    out.append(_unit(np.mean(prompts, axis=0)))
  return np.stack(out)


@pytest.fixture(scope="module")
def setup():
  rng = np.random.default_rng(0)
  table = rng.normal(size=(VOCAB, DIM)).astype(np.float32)
  classes = _expected_classes(table, CLASSES, TEMPLATES)
  labels = np.arange(23) % len(CLASSES)
  nearest = labels.copy()
  nearest[[1, 5, 12, 20]] = (labels[[1, 5, 12, 20]] + 1) % len(CLASSES)
  images = classes[nearest] + 0.01 * rng.normal(size=(23, DIM))
  fakes.put_arrays("zeroshot", {"test": {
      "image": images.astype(np.float32), "label": labels}},
                   class_names=CLASSES)
  return {"params": {"table": table}}, classes, images, labels


def _evaluator(**kw):
  return EVALUATORS.get("zeroshot")(
      fakes.two_tower_predict, data=fakes.data("zeroshot", "test"), pp_fn="",
      pp_txt=PP_TXT, batch_size=8, mesh=sharding.make_mesh(), **kw)


def test_class_embeddings_average_unit_prompt_embeddings(setup):
  state, classes, _, _ = setup
  ev = _evaluator(templates=TEMPLATES)  # Class names from the source.
  assert ev.class_names == CLASSES
  np.testing.assert_allclose(ev.class_embeddings(state), classes, atol=1e-5)


def test_top1_and_top5_are_exact(setup):
  state, classes, images, labels = setup
  res = dict(_evaluator(templates=TEMPLATES, top_k=(1, 5)).run(state))
  assert res["prec@1"] == pytest.approx(19 / 23)
  logits = _unit(images) @ classes.T
  rank = (logits > logits[np.arange(23), labels][:, None]).sum(1)
  assert res["prec@5"] == pytest.approx(np.mean(rank < 5))


def test_class_names_from_the_config(setup):
  state, _, _, _ = setup
  names = ["x", "y", "z", "w", "v", "u", "t"]
  ev = _evaluator(class_names=names, templates=("{}",))
  assert len(ev.prompts.features["labels"]) == len(names)
  assert 0 <= dict(ev.run(state))["prec@1"] <= 1


def test_check_inputs_traces_both_towers(setup):
  state, _, _, _ = setup
  ev = _evaluator(templates=TEMPLATES)
  table = state["params"]["table"]
  ev.check_inputs({"params": {"table": jax.ShapeDtypeStruct(
      table.shape, table.dtype)}})
  wider_text = {"params": {"table": jax.ShapeDtypeStruct(
      (VOCAB, DIM + 1), jnp.float32)}}  # Text embeddings no longer match.
  with pytest.raises(ValueError, match=r"image: float32\[8, 16\].*TypeError"):
    ev.check_inputs(wider_text)


def test_batched_prompt_tokenizing_gives_the_same_tokens():
  prompts = [t.format(c) for c in CLASSES for t in TEMPLATES]
  pp = ('tokenize(max_len=6, eos="sticky", model="bvl_shapes", pad_value=1, '
        'inkey="texts", outkey="labels")')
  one_by_one = zeroshot.tokenize(prompts, pp, "labels")
  chunked = zeroshot.tokenize(prompts, pp, "labels", batched=True, chunk=4)
  assert one_by_one.shape == (len(prompts), 6)
  np.testing.assert_array_equal(chunked, one_by_one)
