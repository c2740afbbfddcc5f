"""Tests of the built-in `bvl_shapes` dataset (its `small` config)."""

import os

import numpy as np
import pytest
import tensorflow as tf

from big_vision_like.datasets import core
from big_vision_like.datasets import shapes

NAME = "bvl_shapes/small"
SIZES = {"train": 200, "validation": 50, "test": 50}


@pytest.fixture(scope="module")
def source():
  return core.get_source(NAME)


def _read(source, split):
  ds = source.get_tfdata(split, process_index=0, process_count=1,
                         drop_remainder=False)
  return list(ds.as_numpy_iterator())


@pytest.fixture(scope="module")
def examples(source):
  return {s: _read(source, s) for s in SIZES}


def _texts(example):
  return [t.decode() for t in example["texts"]]


def test_prepared_offline_in_bvl_data_dir(source):
  assert source.builder.data_dir.startswith(os.environ["BVL_DATA_DIR"])
  features = source.builder.info.features
  assert features["label"].names == list(shapes.CLASS_NAMES)
  assert features["position"].names == list(shapes.POSITIONS)
  assert features["image"].shape == (32, 32, 3)


def test_split_sizes_and_unique_ids(source, examples):
  for split, size in SIZES.items():
    assert source.num_examples(split) == len(examples[split]) == size
  ids = sorted(int(e["id"]) for s in SIZES for e in examples[s])
  assert ids == list(range(sum(SIZES.values())))


def test_labels_match_colour_and_shape(examples):
  for e in examples["train"]:
    assert e["label"] == e["colour"] * len(shapes.SHAPES) + e["shape"]
    name = shapes.CLASS_NAMES[e["label"]]
    assert name == f"{shapes.COLOURS[e['colour']]} {shapes.SHAPES[e['shape']]}"
    assert 0 <= e["size"] < 2 and 0 <= e["position"] < 9
  assert len({int(e["label"]) for e in examples["train"]}) == 24


def test_captions_describe_the_image(examples):
  for e in examples["validation"] + examples["test"]:
    texts = _texts(e)
    assert len(texts) == shapes.NUM_TEXTS == len(set(texts))
    colour, shape = shapes.COLOURS[e["colour"]], shapes.SHAPES[e["shape"]]
    other_size = shapes.SIZES[1 - e["size"]]
    for text in texts:
      assert f"{colour} {shape}" in text and text == text.lower()
      assert other_size not in text.split()
      for p, phrase in enumerate(shapes.POSITION_PHRASES):
        if text.endswith((f" {phrase}", f" {phrase}.")):
          assert p == e["position"], (text, e["position"])


def test_captions_vary_and_come_from_the_corpus(examples):
  corpus = set(shapes.caption_corpus())
  texts = [t for e in examples["train"] for t in _texts(e)]
  assert set(texts) <= corpus
  assert any("small" in t or "large" in t for t in texts)
  assert any(t == f"a {n}" for t in texts for n in shapes.CLASS_NAMES)


def test_images_decode_and_differ(examples):
  images = [tf.io.decode_png(e["image"]).numpy() for e in examples["train"]]
  assert all(i.shape == (32, 32, 3) and i.dtype == np.uint8 for i in images)
  assert len({i.tobytes() for i in images}) == len(images)


def test_shape_is_drawn_in_its_colour_position_and_size(examples):
  counts = {0: [], 1: []}
  for e in examples["train"]:
    image = tf.io.decode_png(e["image"]).numpy().astype(np.float32)
    dist = np.linalg.norm(image - np.array(shapes.RGB[e["colour"]]), axis=-1)
    rows, cols = np.nonzero(dist < 50)
    assert len(rows) >= 5, e["id"]
    cell = (int(rows.mean() * 3 // 32), int(cols.mean() * 3 // 32))
    assert cell == divmod(int(e["position"]), 3), e["id"]
    counts[int(e["size"])].append(len(rows))
  assert max(counts[0]) < min(counts[1])  # Every large shape is larger.


def test_two_builds_are_identical(tmp_path, examples):
  other = core.TfdsSource(NAME, data_dir=tmp_path)
  for split in SIZES:
    mine = {int(e["id"]): e for e in examples[split]}
    for e in _read(other, split):
      want = mine[int(e["id"])]
      assert e.keys() == want.keys()
      for k in e:
        np.testing.assert_array_equal(e[k], want[k])


def test_make_example_is_deterministic():
  a = shapes.make_example(shapes.SEED, "test", 3, 32)
  b = shapes.make_example(shapes.SEED, "test", 3, 32)
  c = shapes.make_example(shapes.SEED, "validation", 3, 32)
  np.testing.assert_array_equal(a["image"], b["image"])
  assert a["texts"] == b["texts"]
  assert not np.array_equal(a["image"], c["image"])


def test_encode_png_round_trips():
  image = np.random.default_rng(0).integers(0, 256, (7, 5, 3), np.uint8)
  np.testing.assert_array_equal(
      tf.io.decode_png(shapes.encode_png(image)).numpy(), image)


def test_class_names_and_templates():
  assert len(shapes.CLASS_NAMES) == len(set(shapes.CLASS_NAMES)) == 24
  assert shapes.CLASS_NAMES[0] == "red circle"
  assert "a photo of a {}." in shapes.TEMPLATES
  assert all(t.count("{}") == 1 for t in shapes.TEMPLATES)
  corpus = shapes.caption_corpus()
  assert "a photo of a cyan cross." in corpus
  assert len(corpus) == len(set(corpus))


@pytest.mark.parametrize("config,res,train", [("32px", 32, 20_000),
                                              ("64px", 64, 20_000)])
def test_configs(config, res, train):
  cfg = {c.name: c for c in shapes.BvlShapes.BUILDER_CONFIGS}[config]
  assert (cfg.res, cfg.num_train, cfg.num_validation) == (res, train, 1000)
  assert shapes.BvlShapes.DEFAULT_BUILDER_CONFIG_NAME == "32px"


def test_captions_are_a_function_of_the_attributes():
  by_attributes = {}
  for index in range(300):
    ex = shapes.make_example(0, "train", index, 32)
    key = (ex["colour"], ex["shape"], ex["size"], ex["position"])
    by_attributes.setdefault(key, []).append(tuple(ex["texts"]))
    first = ex["texts"][0]
    assert shapes.SIZES[ex["size"]] in first
    assert shapes.POSITION_PHRASES[ex["position"]] in first
    second = ex["texts"][1]
    assert shapes.SIZES[ex["size"]] not in second.split()
    assert shapes.POSITION_PHRASES[ex["position"]] not in second
  repeated = [v for v in by_attributes.values() if len(v) > 1]
  assert repeated and all(len(set(v)) == 1 for v in repeated)
