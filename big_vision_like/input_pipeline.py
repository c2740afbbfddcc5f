"""tf.data input pipelines: per-process shares, shuffle, pp, batch, to device.

Training streams are deterministic and resumable without iterator state:
epoch `e` of this process's share is shuffled with a seed derived from
(seed, e), epochs are concatenated, and `start_step` positions the stream by
skipping raw (undecoded) examples. Every example gets `_seed`, a stateless
seed derived from (seed, process_index, position in the stream), that the pp
builder hands to random ops, so augmentations are identical after a resume.

Evaluation streams hold every example of the split exactly once across
processes, padded with `_mask == False` examples to the same number of
batches on every process.
"""

import math
import queue
import threading

import jax
import numpy as np
import tensorflow as tf

from big_vision_like import datasets
from big_vision_like.pp import builder as pp_builder
from big_vision_like.pp import utils as pp_utils

AUTOTUNE = tf.data.AUTOTUNE
_SHUFFLE_TAG = 1
_EXAMPLE_TAG = 2


def _as_source(source):
  return datasets.get_source(source) if isinstance(source, str) else source


def _as_pp_fn(pp):
  return pp if callable(pp) else pp_builder.get_preprocess_fn(pp)


def _local_batch_size(global_batch_size, process_count):
  if global_batch_size % process_count:
    raise ValueError(f"global_batch_size={global_batch_size} is not divisible "
                     f"by process_count={process_count}.")
  return global_batch_size // process_count


def _derive(seed, value, shape=()):
  """Stateless int64 numbers derived from the pair (seed, value)."""
  pair = tf.stack([tf.cast(seed, tf.int64), tf.cast(value, tf.int64)])
  return tf.random.stateless_uniform(shape, seed=pair, minval=None,
                                     maxval=None, dtype=tf.int64)


def _options():
  options = tf.data.Options()
  options.deterministic = True
  return options


def num_train_examples(source, split):
  """Number of examples in `split` of `source` (a DataSource or a name)."""
  return _as_source(source).num_examples(split)


def make_train_dataset(source, split, *, pp, global_batch_size, seed,
                       process_index, process_count, start_step=0,
                       shuffle_buffer_size=10_000, cache_raw=False,
                       prefetch=2, num_parallel_calls=AUTOTUNE):
  """Returns this process's endless stream of preprocessed training batches.

  Args:
    source: a `DataSource` or a dataset name for `datasets.get_source`.
    split: the split (TFDS syntax, e.g. "train[:90%]").
    pp: a pp string or a function of a feature dict.
    global_batch_size: batch size summed over processes.
    seed: the integer seed of shuffling and augmentation.
    process_index: this process's index.
    process_count: number of processes; each reads an equal, disjoint share
      (the remainder of the split is dropped).
    start_step: number of batches already consumed (to resume).
    shuffle_buffer_size: shuffle buffer (>= share size: a full shuffle).
    cache_raw: keep the raw (undecoded) examples in memory.
    prefetch: batches to prefetch.
    num_parallel_calls: parallelism of the pp map.

  Returns:
    A `tf.data.Dataset` of dicts of [global_batch_size // process_count, ...]
    tensors.
  """
  source = _as_source(source)
  local_batch = _local_batch_size(global_batch_size, process_count)
  n = source.num_examples_per_process(
      split, process_count=process_count, drop_remainder=True)[process_index]
  if n == 0:
    raise ValueError(f"Split {split!r} gives process {process_index} of "
                     f"{process_count} no training examples.")
  raw = source.get_tfdata(split, process_index=process_index,
                          process_count=process_count, drop_remainder=True)
  if cache_raw:
    raw = raw.cache()
  shuffle_key = _derive(seed, _SHUFFLE_TAG)

  def epoch(e):
    return raw.shuffle(min(shuffle_buffer_size, n),
                       seed=_derive(shuffle_key, e),
                       reshuffle_each_iteration=False)

  offset = start_step * local_batch
  ds = tf.data.Dataset.counter(offset // n).flat_map(epoch)
  ds = ds.skip(offset % n)
  ds = ds.enumerate(start=offset)
  example_key = _derive(_derive(seed, _EXAMPLE_TAG), process_index)

  def add_seed(position, features):
    return {**features, pp_utils.SEED_KEY: _derive(example_key, position, [2])}

  ds = ds.map(add_seed)
  ds = ds.map(_as_pp_fn(pp), num_parallel_calls=num_parallel_calls,
              deterministic=True)
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds.prefetch(prefetch).with_options(_options())


def eval_num_batches(source, split, *, global_batch_size, process_count):
  """Batches per process of the eval stream (the same on every process)."""
  local_batch = _local_batch_size(global_batch_size, process_count)
  sizes = _as_source(source).num_examples_per_process(
      split, process_count=process_count, drop_remainder=False)
  return max(1, math.ceil(max(sizes) / local_batch))


def make_eval_dataset(source, split, *, pp, global_batch_size, process_index,
                      process_count, cache=False, prefetch=2,
                      num_parallel_calls=AUTOTUNE):
  """Returns (dataset, num_batches): each example of `split` exactly once.

  Each process preprocesses its share, marks it with `_mask = True` and pads
  it with zero-valued `_mask = False` examples to `num_batches` full batches.

  Args:
    source: a `DataSource` or a dataset name.
    split: the split.
    pp: a pp string or a function of a feature dict (should be
      deterministic and give fixed shapes).
    global_batch_size: batch size summed over processes.
    process_index: this process's index.
    process_count: number of processes.
    cache: keep the preprocessed examples in memory.
    prefetch: batches to prefetch.
    num_parallel_calls: parallelism of the pp map.

  Returns:
    A finite `tf.data.Dataset` of `num_batches` batches of
    [global_batch_size // process_count, ...] tensors, and `num_batches`.
  """
  source = _as_source(source)
  local_batch = _local_batch_size(global_batch_size, process_count)
  num_batches = eval_num_batches(source, split, process_count=process_count,
                                 global_batch_size=global_batch_size)
  ds = source.get_tfdata(split, process_index=process_index,
                         process_count=process_count, drop_remainder=False)
  pp_fn = _as_pp_fn(pp)
  ds = ds.map(lambda x: {**pp_fn(x), "_mask": tf.constant(True)},
              num_parallel_calls=num_parallel_calls, deterministic=True)
  if cache:
    ds = ds.cache()
  ds = ds.concatenate(_padding(ds)).take(num_batches * local_batch)
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds.prefetch(prefetch).with_options(_options()), num_batches


def _padding(ds):
  """An endless dataset of zero-valued, `_mask = False` examples like `ds`."""
  spec = ds.element_spec
  if all(s.shape.is_fully_defined() for s in tf.nest.flatten(spec)):
    zeros = tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), spec)
    pad = tf.data.Dataset.from_tensors(zeros)
  else:  # Shapes known only at run time: copy those of the first example.
    pad = ds.take(1).map(lambda x: tf.nest.map_structure(tf.zeros_like, x))
  pad = pad.map(lambda x: {**x, "_mask": tf.constant(False)})
  return pad.repeat()


def to_global(batch, sharding):
  """Per-process numpy batch -> global `jax.Array`s sharded by `sharding`.

  Args:
    batch: a pytree of numpy arrays whose leading axis is this process's
      part of the global batch; string/object arrays stay numpy.
    sharding: e.g. `NamedSharding(mesh, P(("data",)))`.

  Returns:
    The same pytree with numeric leaves as global arrays.
  """

  def _put(x):
    x = np.asarray(x)
    if x.dtype.kind in "OSU":
      return x
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree.map(_put, batch)


def start_global_iterator(ds, sharding, *, prefetch=2):
  """Iterates `ds` as global sharded batches, prefetched in a thread.

  Args:
    ds: a `tf.data.Dataset` of per-process batches.
    sharding: the batch sharding, e.g. `NamedSharding(mesh, P(("data",)))`.
    prefetch: how many batches to put on devices ahead of use.

  Yields:
    Pytrees of global `jax.Array`s.
  """
  items = queue.Queue(maxsize=max(1, prefetch))
  done = object()
  stop = threading.Event()

  def _put(item):
    while not stop.is_set():
      try:
        items.put(item, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def _producer():
    try:
      for batch in ds.as_numpy_iterator():
        if not _put(to_global(batch, sharding)):
          return
      _put(done)
    except Exception as e:  # pylint: disable=broad-except
      _put(e)

  threading.Thread(target=_producer, daemon=True).start()
  try:
    while True:
      item = items.get()
      if item is done:
        return
      if isinstance(item, Exception):
        raise item
      yield item
  finally:
    stop.set()  # The producer stops at its next batch.
