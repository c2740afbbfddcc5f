"""Standard TFDS datasets through the pipelines, with `tfds.testing.mock_data`.

No real data is available offline, and TFDS ships no metadata for these
datasets, so each test writes the dataset's metadata (features from the
builder code, splits of `NUM` examples) to a temp data dir, and mocks the
reading with random examples (`MockPolicy.USE_FILES`). Sequence features
(COCO captions and objects) get one fixed length (TFDS's default random
lengths differ between the fields of one sequence and fail to encode) and
bounding boxes are made valid (min <= max); encoded sequences are stacked
into arrays.
"""

import functools
import itertools
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.testing import mocking

from big_vision_like import input_pipeline as ip
from big_vision_like.datasets import core

NUM = 6  # Examples per split (the mock gives NUM for any split).


def _write_metadata(name, data_dir, splits=("train", "validation")):
  builder = tfds.builder(name, data_dir=data_dir)
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=s, shard_lengths=[NUM], num_bytes=0,
                          filename_template=None) for s in splits]))
  os.makedirs(builder.data_dir, exist_ok=True)
  builder.info.write_to_directory(builder.data_dir)


def _as_numpy(value):
  """An encoded feature as one numpy array (lists stacked, str -> bytes)."""
  if isinstance(value, dict):
    return {k: _as_numpy(v) for k, v in value.items()}
  array = np.array([np.asarray(v) for v in value] if isinstance(value, list)
                   else value)
  if array.dtype.kind in "OU":
    array = np.vectorize(_as_bytes, otypes=[object])(array)
  return array


def _as_bytes(x):
  x = x.item() if isinstance(x, np.ndarray) else x
  return x.encode() if isinstance(x, str) else x


class _FakeExamples(mocking.EncodedRandomFakeGenerator):
  """TFDS's encoded random examples, with valid bounding boxes, as arrays."""

  def __iter__(self):
    for example in super().__iter__():
      yield _as_numpy(example)

  def _generate_random_obj(self, feature, tensor_info, rng):
    obj = super()._generate_random_obj(feature, tensor_info, rng)
    if isinstance(feature, tfds.features.BBoxFeature):  # Sort min <= max.
      obj = np.sort(obj.reshape(obj.shape[:-1] + (2, 2)), axis=-2)
      obj = obj.reshape(obj.shape[:-2] + (4,))
    return obj


def _fake_as_dataset(self, split, decoders=None, read_config=None, **kw):
  """Random encoded examples, decoded with `decoders` (TFDS's mock, fixed)."""
  del split, read_config, kw
  features = self.info.features
  signature = tf.nest.map_structure(
      lambda t: tf.TensorSpec(t.shape, t.tf_dtype),
      features.get_serialized_info())
  examples = functools.partial(_FakeExamples, features,
                               NUM, constant_dynamic_shape=True)
  ds = tf.data.Dataset.from_generator(examples, output_signature=signature)
  ds = ds.apply(tf.data.experimental.assert_cardinality(NUM))
  return ds.map(functools.partial(features.decode_example,
                                  decoders=decoders))


@pytest.fixture(name="mock_tfds")
def _mock_tfds(tmp_path, monkeypatch):
  """mock(name) -> data_dir: `name` is readable from it while mocked.

  The mock replaces `as_dataset` and writes no shard files, so training
  reads the mocked `get_tfdata` in blocks (`datasets.core.dataset_blocks`)
  instead of reading the TFRecord shards directly (`get_blocks`).
  """
  monkeypatch.setattr(core.TfdsSource, "get_blocks",
                      lambda self, *args, **kwargs: None)
  with tfds.testing.mock_data(num_examples=NUM, data_dir=str(tmp_path),
                              policy=tfds.testing.MockPolicy.USE_FILES,
                              as_dataset_fn=_fake_as_dataset):

    def mock(name):
      _write_metadata(name, str(tmp_path))
      return str(tmp_path)

    yield mock


def _first_batch(source, pp, batch_size=4):
  ds = ip.make_train_dataset(source, "train", pp=pp,
                             global_batch_size=batch_size, seed=0,
                             process_index=0, process_count=1)
  return next(ds.as_numpy_iterator())


def _eval_count(source, pp, batch_size=4):
  ds, num_batches = ip.make_eval_dataset(
      source, "validation", pp=pp, global_batch_size=batch_size,
      process_index=0, process_count=1)
  batches = list(ds.as_numpy_iterator())
  assert len(batches) == num_batches
  return sum(b["_mask"].sum() for b in batches), batches


def test_cifar10(mock_tfds):
  source = core.get_source("cifar10", data_dir=mock_tfds("cifar10"))
  assert source.num_examples("train") == NUM
  pp = ("decode|resize(16)|flip_lr|value_range(-1, 1)"
        "|onehot(10, key='label', key_result='labels')|keep('image', 'labels')")
  batch = _first_batch(source, pp)
  assert batch["image"].shape == (4, 16, 16, 3)
  assert batch["labels"].shape == (4, 10)
  assert -1 <= batch["image"].min() and batch["image"].max() <= 1
  count, _ = _eval_count(source, pp)
  assert count == NUM


def test_imagenet2012(mock_tfds):
  source = core.get_source("imagenet2012", data_dir=mock_tfds("imagenet2012"))
  batch = _first_batch(
      source, "decode|resize_small(20)|random_crop(16)|flip_lr"
      "|value_range(-1, 1)|onehot(1000, key='label', key_result='labels')"
      "|keep('image', 'labels')")
  assert batch["image"].shape == (4, 16, 16, 3)
  assert batch["labels"].shape == (4, 1000)
  count, batches = _eval_count(
      source, "decode|resize_small(20)|central_crop(16)|value_range(-1, 1)"
      "|keep('image', 'label', 'file_name')")
  assert count == NUM
  assert batches[0]["file_name"].dtype == object


def test_coco_captions(mock_tfds):
  source = core.get_source("coco_captions",
                           data_dir=mock_tfds("coco_captions"))
  # Nested features batch as nested dicts: captions {"text": [B, n], ...}.
  batch = _first_batch(source, "decode|resize(16)|value_range(-1, 1)"
                       "|keep('image', 'image/id', 'captions')")
  assert batch["image"].shape == (4, 16, 16, 3)
  assert batch["image/id"].shape == (4,)
  assert batch["captions"]["text"].shape == (4, 10)
  count, _ = _eval_count(source, "decode|resize(16)|keep('image', 'image/id')")
  assert count == NUM


def test_mixture_of_mocked_datasets(mock_tfds):
  cifar = core.get_source("cifar10", data_dir=mock_tfds("cifar10"))
  imagenet = core.get_source("imagenet2012",
                             data_dir=mock_tfds("imagenet2012"))
  common = "decode|resize(8)|keep('image', 'label')"
  mixture = [ip.Component(cifar, "train", 1.0, common),
             ip.Component(imagenet, "train", 1.0, common)]
  ds = ip.make_train_dataset(mixture, pp="value_range(0, 1)",
                             global_batch_size=4, seed=0, process_index=0,
                             process_count=1)
  batches = list(itertools.islice(ds.as_numpy_iterator(), 3))
  assert batches[0]["image"].shape == (4, 8, 8, 3)
  assert np.concatenate([b["label"] for b in batches]).max() < 1000
