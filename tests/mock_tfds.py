"""Standard TFDS datasets without their data: `tfds.testing.mock_data`.

No real data is available offline, and TFDS ships no metadata for these
datasets, so `mock_tfds` writes the dataset's metadata (features from the
builder code, splits of `NUM` examples) to a temp data dir, and mocks the
reading with random examples (`MockPolicy.USE_FILES`). Sequence features
(COCO captions and objects) get one fixed length (TFDS's default random
lengths differ between the fields of one sequence and fail to encode) and
bounding boxes are made valid (min <= max); encoded sequences are stacked
into arrays. Used through the `mock_tfds` fixture of tests/conftest.py.
"""

import contextlib
import functools
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.testing import mocking
from tensorflow_datasets.testing import test_utils as tfds_test_utils

from big_vision_like.datasets import core

NUM = 6  # Examples per split (the mock gives NUM for any split).


def write_metadata(name, data_dir, splits=("train", "validation")):
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


class _NoMockFs:
  """TFDS's mock wraps each `as_dataset` in `MockFs`, a process-wide patch
  of `epath` that redirects every absolute path to a temp dir while it runs.
  The train input thread calls `as_dataset` every epoch (6 examples: every
  step), so orbax's checkpoint thread, also on `epath`, could list a
  redirected (missing) directory and fail the run. With
  `MockPolicy.USE_FILES` the metadata is on disk: no redirection is needed.
  """

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False

  def add_file(self, *args, **kwargs):
    del args, kwargs


@contextlib.contextmanager
def mock_tfds(data_dir, monkeypatch):
  """Yields mock(name, splits=("train", "validation")) -> data_dir: `name`
  is readable from `data_dir` while mocked, with `NUM` random examples in
  each of `splits`.

  The mock replaces `as_dataset` and writes no shard files, so training
  reads the mocked `get_tfdata` in blocks (`datasets.core.dataset_blocks`)
  instead of reading the TFRecord shards directly (`get_blocks`).
  """
  monkeypatch.setattr(core.TfdsSource, "get_blocks",
                      lambda self, *args, **kwargs: None)
  monkeypatch.setattr(tfds_test_utils, "MockFs", _NoMockFs)
  with tfds.testing.mock_data(num_examples=NUM, data_dir=str(data_dir),
                              policy=tfds.testing.MockPolicy.USE_FILES,
                              as_dataset_fn=_fake_as_dataset):

    def mock(name, splits=("train", "validation")):
      write_metadata(name, str(data_dir), splits)
      return str(data_dir)

    yield mock
