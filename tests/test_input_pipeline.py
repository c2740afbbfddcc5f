"""Tests of the train/eval input pipelines on the built-in digits dataset."""

import itertools
import threading

import jax
import numpy as np
import pytest
import tensorflow as tf

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
  kw = dict(split="train+validation")  # Two files; epochs of 14.37 steps.
  _assert_same(_train(source, 16, **kw),
               _train(source, 16, cache_raw=True, **kw))


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


def test_global_iterator_puts_batches_on_devices_in_the_calling_thread(
    monkeypatch):
  # Only the thread that dispatches the steps calls XLA; the reader's error
  # comes after the batches read before it.
  threads, to_global = [], ip.to_global
  def recording(batch, sharding):
    threads.append(threading.current_thread())
    return to_global(batch, sharding)
  monkeypatch.setattr(ip, "to_global", recording)
  ds = tf.data.Dataset.range(5).map(
      lambda i: {"x": tf.fill([8], tf.cast(i, tf.float32))})

  def fail_at_3(b):
    with tf.control_dependencies([tf.debugging.assert_less(b["x"][0], 3.0)]):
      return {"x": tf.identity(b["x"])}
  ds = ds.map(fail_at_3)
  mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
      "data"))
  it = ip.start_global_iterator(ds, sharding, prefetch=2)
  assert [float(next(it)["x"][0]) for _ in range(3)] == [0.0, 1.0, 2.0]
  with pytest.raises(tf.errors.InvalidArgumentError):
    next(it)
  assert threads and set(threads) == {threading.current_thread()}


def test_to_global_keeps_strings_as_numpy():
  mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
      "data"))
  out = ip.to_global({"x": np.ones([2, 3]), "s": np.array([b"a", b"b"])},
                     sharding)
  assert isinstance(out["x"], jax.Array) and isinstance(out["s"], np.ndarray)


def _mixture(source, weights=(3, 1)):
  return [ip.Component(source, "train", weights[0], "setdefault('src', 0)"),
          ip.Component(source, "validation", weights[1],
                       "setdefault('src', 1)")]


def _split_ids(source, split):
  return {e["id"] for e in source.get_tfdata(
      split, process_index=0, process_count=1,
      drop_remainder=False).as_numpy_iterator()}


def test_mixture_respects_weights_and_component_epochs(source):
  batches = _train(source=_mixture(source), n=40, split=None,
                   pp="keep('src', 'id')")
  src = np.concatenate([b["src"] for b in batches])
  ids = np.concatenate([b["id"] for b in batches])
  assert abs(np.mean(src == 0) - 0.75) < 0.03
  assert set(ids[src == 0]) <= _split_ids(source, "train")
  val = ids[src == 1]
  assert set(val) <= _split_ids(source, "validation")
  assert len(set(val[:180])) == 180  # Each component is its own epochs.


def test_mixture_is_deterministic_and_resumes(source):
  kw = dict(split=None, pp=PP_RANDOM.replace("'id'", "'id', 'src'"),
            global_batch_size=20)
  fresh = _train(_mixture(source), 12, **kw)
  _assert_same(fresh, _train(_mixture(source), 12, **kw))
  other = _train(_mixture(source), 1, seed=1, **kw)
  assert not np.array_equal(fresh[0]["id"], other[0]["id"])
  for start_step in (1, 9):  # Validation's first epoch ends near step 9.
    _assert_same(fresh[start_step:],
                 _train(_mixture(source), 12 - start_step,
                        start_step=start_step, **kw))


def test_mixture_resumes_on_another_process(source):
  kw = dict(split=None, pp="keep('id', 'src')", global_batch_size=40,
            process_index=1, process_count=2)
  fresh = _train(_mixture(source, (1, 2)), 10, **kw)
  _assert_same(fresh[6:], _train(_mixture(source, (1, 2)), 4, start_step=6,
                                 **kw))


def test_component_starts_counts_the_choices(source):
  batches = _train(_mixture(source), 10, split=None, pp="keep('src')",
                   global_batch_size=10)
  src = np.concatenate([b["src"] for b in batches])
  for start in (0, 1, 37, 100):
    np.testing.assert_array_equal(
        ip.component_starts([3, 1], start, seed=0, process_index=0),
        np.bincount(src[:start], minlength=2))
  counts = ip.component_starts([1, 2, 5], 10**7 + 3, seed=0, process_index=3)
  assert counts.sum() == 10**7 + 3
  np.testing.assert_allclose(counts / counts.sum(), [1 / 8, 2 / 8, 5 / 8],
                             atol=1e-3)


def test_mixture_from_config_dicts(source):
  mixture = [dict(name="bvl_digits", split="train[:100]", weight=1.0,
                  pp="setdefault('src', 0)"),
             dict(name="bvl_digits", split="test", pp="setdefault('src', 1)")]
  assert ip.num_train_examples(mixture) == 460
  batch = _train(mixture, 1, split=None, pp="keep('src', 'label')")[0]
  assert batch["src"].shape == (100,) and set(batch["src"]) == {0, 1}


def test_mixture_errors(source):
  with pytest.raises(ValueError, match="different features"):
    _train([(source, "train", 1.0, "keep('image')"),
            (source, "test", 1.0, "keep('label')")], 1, split=None, pp="")
  with pytest.raises(ValueError, match="positive"):
    _train([(source, "train", 0.0)], 1, split=None, pp="")
  with pytest.raises(ValueError, match="split"):
    _train([(source, "train", 1.0)], 1, split="train", pp="")


def test_pp_cached_batched_equals_per_example(monkeypatch):
  """Tokenising chunks of cached examples gives the per-example batches."""
  monkeypatch.setattr(ip, "_CACHED_CHUNK", 64)  # 200 = 3 x 64 + 8.
  tok = ('tokenize(max_len=12, eos="sticky", model="bvl_shapes", '
         'pad_value=0, inkey="texts", outkey="captions")')
  kw = dict(pp='choice(inkey="captions", outkey="labels")', seed=0,
            global_batch_size=16, process_index=0, process_count=1)
  per_example = _batches(ip.make_train_dataset(
      "bvl_shapes/small", "train", pp_cached=f'decode|{tok}|keep("captions")',
      **kw), 15)  # 240 examples: into the second epoch.
  chunked = _batches(ip.make_train_dataset(
      "bvl_shapes/small", "train", pp_cached='decode|keep("texts")',
      pp_cached_batched=f'{tok}|keep("captions")', **kw), 15)
  _assert_same(per_example, chunked)
  assert per_example[0]["captions"].shape == (16, 5, 12)
  with pytest.raises(ValueError, match="single sources"):
    ip.make_train_dataset([("bvl_digits", "train", 1)], pp="",
                          pp_cached_batched="lower", **{
                              k: v for k, v in kw.items() if k != "pp"})


# Blocks and windows (see the module docstring): small ones, so that an
# epoch of validation (180 examples) has 23 blocks of <= 8 in 6 windows.
SMALL = dict(block_size=8, shuffle_buffer_size=32)


def _ids(batches):
  return np.concatenate([b["id"] for b in batches])


def test_resume_mid_window_and_across_epochs(source):
  # Batches of 10: windows end every ~3 steps, epochs after 18 steps.
  kw = dict(split="validation", global_batch_size=10, **SMALL)
  fresh = _train(source, 31, **kw)
  for start_step in (3, 17, 29):  # Mid-window, across epochs, epoch 2.
    _assert_same(fresh[start_step:start_step + 2],
                 _train(source, 2, start_step=start_step, **kw))


def test_each_epoch_holds_each_example_once_in_new_block_order(source):
  batches = _train(source, 54, split="validation", global_batch_size=10,
                   pp="keep('id')", **SMALL)
  epochs = _ids(batches).reshape(3, 180)
  for epoch in epochs:
    assert sorted(epoch) == sorted(_split_ids(source, "validation"))
  assert not np.array_equal(epochs[0], epochs[1])
  assert not np.array_equal(epochs[1], epochs[2])


def _disk_positions(source, split, ids):
  order = [e["id"] for e in source.get_tfdata(
      split, process_index=0, process_count=1,
      drop_remainder=False).as_numpy_iterator()]
  where = {i: p for p, i in enumerate(order)}
  return np.array([where[i] for i in ids], np.float64)


def _shuffle_correlations(positions):
  """corr(epoch place, disk position), corr(consecutive disk positions)."""
  places = np.arange(len(positions))
  return (np.corrcoef(places, positions)[0, 1],
          np.corrcoef(positions[:-1], positions[1:])[0, 1])


def test_shuffle_quality(source):
  # 1257 examples in 158 blocks of <= 8, windows of 32 blocks: the epoch
  # order does not follow the disk order, and neighbours are unrelated.
  kw = dict(global_batch_size=419, pp="keep('id')", block_size=8,
            shuffle_buffer_size=256)
  positions = _disk_positions(source, "train", _ids(_train(source, 3, **kw)))
  assert sorted(positions) == list(range(1257))
  trend, lag1 = _shuffle_correlations(positions)
  assert abs(trend) < 0.1 and abs(lag1) < 0.1, (trend, lag1)
  # One block (a sequential read behind a buffer) follows the disk order.
  one_block = _train(source, 3, **{**kw, "block_size": 2000})
  trend, _ = _shuffle_correlations(
      _disk_positions(source, "train", _ids(one_block)))
  assert trend > 0.8


def test_resume_with_small_blocks_on_two_processes(source):
  kw = dict(process_index=1, process_count=2, global_batch_size=40,
            pp="keep('id')", **SMALL)
  fresh = _train(source, 40, **kw)  # Epochs of 628 // 20 = 31.4 steps.
  for start_step in (5, 31, 33):
    _assert_same(fresh[start_step:start_step + 3],
                 _train(source, 3, start_step=start_step, **kw))


def test_mixture_resumes_with_small_blocks_on_two_processes(source):
  kw = dict(split=None, pp="keep('id', 'src')", global_batch_size=20,
            process_index=0, process_count=2, **SMALL)
  fresh = _train(_mixture(source, (1, 2)), 29, **kw)
  for start_step in (13, 27):  # Validation's epoch (90) ends near 13.
    _assert_same(fresh[start_step:start_step + 2],
                 _train(_mixture(source, (1, 2)), 2, start_step=start_step,
                        **kw))


class _CountingSource:
  """A `BlockDataSource` of ids 0..n-1 that counts the records it reads."""

  def __init__(self, n):
    self.n = n
    self.reads = tf.Variable(0, dtype=tf.int64)

  def num_examples_per_process(self, split, *, process_count,
                               drop_remainder):
    del split, drop_remainder
    return [self.n // process_count] * process_count

  def get_blocks(self, split, *, process_index, process_count,
                 drop_remainder, block_size):
    del split, process_index, process_count, drop_remainder
    _, start, size = core.cut([self.n], block_size)

    def read(spec):
      ids = tf.data.Dataset.range(spec["start"], spec["start"] + spec["size"])
      return ids.map(lambda i: {"id": i + self.reads.assign_add(1) * 0})

    return core.Blocks({"start": start, "size": size}, size, read)


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.97])
def test_resume_reads_one_window_wherever_it_starts(fraction):
  counting = _CountingSource(100_000)
  start = int(fraction * 100_000)
  ds, load = ip._example_stream(
      counting, "train", shuffle_key=ip._derive(0, 1), start=start,
      process_index=0, process_count=1, shuffle_buffer_size=1000,
      block_size=100, cache_raw=False)
  assert load is None
  next(iter(ds))
  assert 0 < counting.reads.numpy() <= 1000  # One window of 10 blocks.


def test_unmaterialized_stream_reads_a_batch_not_the_share():
  """materialize=False (the trainer's shape probe) runs the cached pps in the
  stream: the first batch is the share's first examples, in storage order,
  after reading a few blocks; the default reads the whole share first."""
  n = 20_000
  kw = dict(pp='keep("id", "twice")', global_batch_size=8, seed=0,
            process_index=0, process_count=1, block_size=100,
            pp_cached=lambda x: {**x, "twice": 2 * x["id"]})
  counting = _CountingSource(n)
  first = next(ip.make_train_dataset(
      counting, "train", materialize=False, shuffle_buffer_size=1,
      **kw).as_numpy_iterator())
  np.testing.assert_array_equal(first["id"], np.arange(8))
  np.testing.assert_array_equal(first["twice"], 2 * np.arange(8))
  assert 8 <= counting.reads.numpy() <= n // 10, counting.reads.numpy()
  counting = _CountingSource(n)
  shuffled = next(ip.make_train_dataset(counting, "train",
                                        **kw).as_numpy_iterator())
  assert counting.reads.numpy() == n  # The whole share, into memory.
  np.testing.assert_array_equal(shuffled["twice"], 2 * shuffled["id"])


def test_datasets_have_no_autotune_thread(source):
  """The autotuner's thread can delay an iterator's deletion by up to a
  minute (see `_options`): train and eval datasets run without it."""
  train = ip.make_train_dataset(source, "train", pp=PP_RANDOM,
                                global_batch_size=8, seed=0, process_index=0,
                                process_count=1)
  evals, _ = ip.make_eval_dataset(source, "validation", pp=PP_EVAL,
                                  global_batch_size=8, process_index=0,
                                  process_count=1)
  for ds in (train, evals):
    assert ds.options().autotune.enabled is False
    assert ds.options().deterministic is True
