"""Tests of the built-in `bvl_digits` dataset and of datasets/core.py."""

import os

import numpy as np
import pytest
from sklearn import datasets as sk_datasets
import tensorflow as tf

from big_vision_like import registry
from big_vision_like.datasets import core
from big_vision_like.datasets import digits

SIZES = {"train": 1257, "validation": 180, "test": 360}


@pytest.fixture(scope="module")
def source():
  return core.get_source("bvl_digits")


def _read(source, split, **kw):
  kw = {"process_index": 0, "process_count": 1, "drop_remainder": False,
        **kw}
  return list(source.get_tfdata(split, **kw).as_numpy_iterator())


def test_prepared_in_bvl_data_dir(source):
  assert source.builder.data_dir.startswith(os.environ["BVL_DATA_DIR"])
  assert source.builder.info.features["label"].names == [str(i)
                                                         for i in range(10)]


def test_explicit_data_dir_wins(tmp_path):
  assert core._resolve_data_dir("bvl_digits", tmp_path) == str(tmp_path)
  assert core._resolve_data_dir("bvl_digits", None) == os.environ[
      "BVL_DATA_DIR"]


@pytest.mark.parametrize("split", sorted(SIZES))
def test_split_sizes_and_labels(source, split):
  examples = _read(source, split)
  assert source.num_examples(split) == len(examples) == SIZES[split]
  assert sorted({int(e["label"]) for e in examples}) == list(range(10))


def test_splits_are_disjoint_and_cover_everything(source):
  ids = [int(e["id"]) for s in SIZES for e in _read(source, s)]
  assert sorted(ids) == list(range(1797))
  expected = digits.split_indices()
  for split in SIZES:
    got = sorted(int(e["id"]) for e in _read(source, split))
    np.testing.assert_array_equal(got, expected[split])


def test_images_are_encoded_and_match_sklearn(source):
  sk = sk_datasets.load_digits()
  for e in _read(source, "validation")[:20]:
    assert e["image"].startswith(b"\x89PNG")  # Still encoded.
    image = tf.io.decode_png(e["image"]).numpy()
    assert image.shape == (8, 8, 1) and image.dtype == np.uint8
    want = np.round(sk.images[e["id"]] * 255 / 16).astype(np.uint8)
    np.testing.assert_array_equal(image[..., 0], want)
    assert e["label"] == sk.target[e["id"]]


def test_split_strings(source):
  assert source.num_examples("train+validation") == 1437
  assert source.num_examples("train[:50%]") == len(
      _read(source, "train[:50%]")) == 628  # TFDS rounds percent slices.
  assert len(_read(source, "test[:10]")) == 10


@pytest.mark.parametrize("count,drop", [(2, False), (3, False), (7, True)])
def test_process_shares_are_disjoint(source, count, drop):
  sizes = source.num_examples_per_process("test", process_count=count,
                                          drop_remainder=drop)
  ids = []
  for i in range(count):
    share = _read(source, "test", process_index=i, process_count=count,
                  drop_remainder=drop)
    assert len(share) == sizes[i]
    ids += [int(e["id"]) for e in share]
  assert len(ids) == len(set(ids)) == sum(sizes)
  assert sum(sizes) == (360 if not drop else 360 // count * count)


def test_order_is_deterministic(source):
  first = [int(e["id"]) for e in _read(source, "validation")]
  assert first == [int(e["id"]) for e in _read(source, "validation")]


def test_unknown_dataset_is_named():
  with pytest.raises(ValueError, match="no_such_dataset_xyz"):
    core.get_source("no_such_dataset_xyz")


def test_registered_factory_takes_precedence():
  calls = []

  def factory(arg, data_dir=None):
    calls.append((arg, data_dir))
    return "fake source"

  registry.DATASETS.register("test_fake_source", factory)
  assert core.get_source("test_fake_source:/some/path") == "fake source"
  assert calls == [("/some/path", None)]


def test_unprepared_tfds_dataset_is_not_downloaded(tmp_path):
  with pytest.raises(ValueError, match="mnist.*not prepared"):
    core.get_builder("mnist", data_dir=tmp_path)
