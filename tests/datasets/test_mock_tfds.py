"""Standard TFDS datasets through the pipelines, mocked (tests/mock_tfds.py)."""

import itertools

import numpy as np

from big_vision_like import input_pipeline as ip
from big_vision_like.datasets import core

NUM = 6  # Examples per split (tests/mock_tfds.py).


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
