"""Tests of the train/eval input pipelines on the built-in digits dataset."""

import itertools

import jax
import numpy as np
import pytest

from big_vision_like import input_pipeline as ip
from big_vision_like.datasets import core

PP_RANDOM = ("decode(1)|random_affine(12, rotate=10, scale=0.1, shift=0.1)"
             "|flip_lr|value_range(0, 1)|keep('image', 'label', 'id')")
PP_EVAL = "decode(1)|value_range(0, 1)|keep('image', 'label', 'id')"


@pytest.fixture(scope="module")
def source():
  return core.get_source("bvl_digits")


def _batches(ds, n):
  return list(itertools.islice(ds.as_numpy_iterator(), n))


def _train(source, n, split="train", **kw):
  kw = {"pp": PP_RANDOM, "global_batch_size": 100, "seed": 0,
        "process_index": 0, "process_count": 1, **kw}
  return _batches(ip.make_train_dataset(source, split, **kw), n)


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_train_batches_shapes_and_determinism(source):
  first = _train(source, 3)
  assert first[0]["image"].shape == (100, 12, 12, 1)
  assert set(first[0]) == {"image", "label", "id"}
  _assert_same(first, _train(source, 3))
  other = _train(source, 3, seed=1)
  assert not np.array_equal(first[0]["id"], other[0]["id"])


def test_epochs_are_permutations_and_reshuffled(source):
  batches = _train(source, 25, split="validation", global_batch_size=20,
                   pp="keep('id')")
  ids = np.concatenate([b["id"] for b in batches])
  epochs = ids[:360].reshape(2, 180)
  assert sorted(epochs[0]) == sorted(epochs[1])
  assert len(set(epochs[0])) == 180
  assert not np.array_equal(epochs[0], epochs[1])


@pytest.mark.parametrize("start_step", [1, 12, 13, 26])
def test_resume_equals_fresh_run(source, start_step):
  # 1257 train examples, 100 per batch: batches 12 and 25 straddle epochs.
  fresh = _train(source, start_step + 2)
  resumed = _train(source, 2, start_step=start_step)
  _assert_same(fresh[start_step:], resumed)


def test_resume_with_two_processes(source):
  kw = dict(process_index=1, process_count=2, global_batch_size=200)
  fresh = _train(source, 8, **kw)
  _assert_same(fresh[6:], _train(source, 2, start_step=6, **kw))


def test_processes_see_disjoint_shares(source):
  n = 628  # 1257 // 2 per process, one example dropped.
  ids = []
  for index in range(2):
    batches = _train(source, 4, split="train", pp="keep('id')",
                     global_batch_size=314, process_index=index,
                     process_count=2)
    epoch = np.concatenate([b["id"] for b in batches[:4]])[:n]
    assert len(set(epoch)) == n
    ids.append(set(epoch))
  assert not ids[0] & ids[1]
  assert len(ids[0] | ids[1]) == 1256


def test_cache_raw_gives_the_same_batches(source):
  _assert_same(_train(source, 14), _train(source, 14, cache_raw=True))


def test_batch_size_must_divide(source):
  with pytest.raises(ValueError, match="101.*2"):
    ip.make_train_dataset(source, "train", pp="", global_batch_size=101,
                          seed=0, process_index=0, process_count=2)


def test_num_train_examples(source):
  assert ip.num_train_examples(source, "train") == 1257
  assert ip.num_train_examples("bvl_digits", "train+validation") == 1437


@pytest.mark.parametrize("count,batch", [(1, 64), (3, 48)])
def test_eval_sees_every_example_once(source, count, batch):
  ids, nums = [], set()
  for index in range(count):
    ds, num_batches = ip.make_eval_dataset(
        source, "test", pp=PP_EVAL, global_batch_size=batch,
        process_index=index, process_count=count)
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == num_batches
    nums.add(num_batches)
    for b in batches:
      assert b["image"].shape == (batch // count, 8, 8, 1)
      ids += list(b["id"][b["_mask"]])
      assert not b["image"][~b["_mask"]].any()
  assert len(nums) == 1
  assert sorted(ids) == sorted(
      e["id"] for e in core.get_source("bvl_digits").get_tfdata(
          "test", process_index=0, process_count=1,
          drop_remainder=False).as_numpy_iterator())
  assert len(ids) == 360


def test_eval_uneven_shares_and_dynamic_shapes(source):
  # 180 / 7 processes: shares of 26 and 25; no resize: shapes known at run.
  nums = set()
  total = 0
  for index in range(7):
    ds, num_batches = ip.make_eval_dataset(
        source, "validation", pp="decode(1)|keep('id', 'image')",
        global_batch_size=70, process_index=index, process_count=7,
        cache=True)
    nums.add(num_batches)
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == num_batches == 3
    total += sum(b["_mask"].sum() for b in batches)
  assert nums == {3} and total == 180


def test_global_iterator(source):
  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
      ("data",)))
  ds, num_batches = ip.make_eval_dataset(
      source, "validation", pp=PP_EVAL, global_batch_size=64,
      process_index=0, process_count=1)
  batches = list(ip.start_global_iterator(ds, sharding))
  assert len(batches) == num_batches == 3
  assert isinstance(batches[0]["image"], jax.Array)
  assert batches[0]["image"].shape == (64, 8, 8, 1)
  assert batches[0]["image"].sharding == sharding
  expected = list(ds.as_numpy_iterator())
  np.testing.assert_array_equal(batches[2]["id"], expected[2]["id"])


def test_global_iterator_can_stop_early(source):
  mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
      "data"))
  ds = ip.make_train_dataset(source, "train", pp=PP_EVAL,
                             global_batch_size=8, seed=0, process_index=0,
                             process_count=1)
  it = ip.start_global_iterator(ds, sharding, prefetch=1)
  first = next(it)
  assert first["label"].shape == (8,)
  it.close()


def test_to_global_keeps_strings_as_numpy():
  mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
      "data"))
  out = ip.to_global({"x": np.ones([2, 3]), "s": np.array([b"a", b"b"])},
                     sharding)
  assert isinstance(out["x"], jax.Array) and isinstance(out["s"], np.ndarray)
