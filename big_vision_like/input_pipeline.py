"""tf.data input pipelines: per-process shares, shuffle, pp, batch, to device.

Training streams are deterministic and resumable without iterator state, at
a cost that does not grow with the position. Each process reads its own
share of the split (`n` examples), cut into blocks of at most `block_size`
consecutive examples that read on their own (`datasets.core.Blocks`: runs
of records of one TFRecord shard for TFDS data; index ranges of data held in
memory for lazy (own-data) records and for cached data). Epoch `e`:

1. orders the blocks by a seeded permutation of (seed, e)
   (`tf.random.experimental.index_shuffle`: no permutation is stored);
2. cuts that order into windows of `W = shuffle_buffer_size // block_size`
   blocks, reads each window's blocks (up to 16 at once) and shuffles the
   window's examples in a buffer of `shuffle_buffer_size`, started afresh
   per window and seeded by (seed, e, window): a uniform shuffle of the
   window, since it fits in the buffer.

Epochs follow one another endlessly. Shuffle semantics: an example's place
in the epoch is independent of its place on disk at any dataset size (the
blocks come from anywhere in the share), and neighbours in the epoch come
from the same block with probability about 1 / W (e.g. 256-example blocks
and a 10,000-example buffer: W = 39). A share that fits in one window
(`n <= shuffle_buffer_size`) is shuffled uniformly, as before.

Resume cost model: position `p` (= start_step x local batch) lies in epoch
`p // n`, in the window found from the block sizes (computed, not read);
resuming reads that one window from its start (W blocks, about
shuffle_buffer_size examples: the same as the first batch of a fresh run)
and skips the window's examples before `p` out of the shuffle buffer,
undecoded. So the time to the first batch is about the time to read one
window, whatever `p`: ~ W x (block open + seek + block_size records read).
Smaller blocks shuffle better and cost more opens per window (on remote
storage an open is ~10-100 ms, overlapped 16 at a time); block_size >= n
gives the old sequential read behind a buffer. Exceptions: in-memory data
(`cache_raw`, `pp_cached`, and lazy sources' records) is read whole once
per process when the stream starts (at any `p`), then only indexed; a
source with neither blocks nor records (`get_tfdata` only) is cut with
`datasets.core.dataset_blocks`, whose blocks skip their start.

Every example gets `_seed`, a stateless seed derived from (seed,
process_index, position in the stream), that the pp builder hands to random
ops, so augmentations are identical after a resume.

A training stream may mix several sources (`Component`s, with weights):
each component is such a stream of its own, and position `p` of the mixture
takes its next example from a component drawn by a stateless categorical of
(seed, process_index, p). On resume at position P, component `k` starts at
the number of positions before P that drew `k` (counted exactly, in blocks
of choices: cheap arithmetic, no data read), and reads one window.

Evaluation streams hold every example of the split exactly once across
processes, padded with `_mask == False` examples to the same number of
batches on every process.
"""

import collections
import dataclasses
import math
import queue
import threading
from typing import Any

from absl import logging
import jax
import numpy as np
import tensorflow as tf

from big_vision_like import datasets
from big_vision_like.pp import builder as pp_builder
from big_vision_like.pp import utils as pp_utils

AUTOTUNE = tf.data.AUTOTUNE
# The pipeline's own dataset functions are plain TF graph code: AutoGraph's
# source-to-source conversion of them (and of the pp ops, see pp/builder.py)
# only slowed tracing down: a SigLIP training run's pipelines took 1.3 s of
# conversions, now 0.16 s. A user's callable pp or DataSource keeps its
# conversion.
_plain = tf.autograph.experimental.do_not_convert
_SHUFFLE_TAG = 1
_EXAMPLE_TAG = 2
_MIXTURE_TAG = 3
_COMPONENT_TAG = 4
_CHOICE_BLOCK = 2**16  # Mixture choices are drawn this many at a time.
_PARALLEL_READS = 16  # Most blocks of a window read at once.
DEFAULT_BLOCK_SIZE = 256


@dataclasses.dataclass(frozen=True)
class Component:
  """One source of a training mixture.

  Attributes:
    source: a `DataSource` or a name for `datasets.get_source`.
    split: the split (TFDS syntax).
    weight: relative frequency (> 0) of this component in the mixture.
    pp: optional pp (string or function) applied to this component's
      examples before the shared pp, e.g. to rename or drop features so that
      all components give the same features.
  """
  source: Any
  split: str
  weight: float = 1.0
  pp: Any = None

  @classmethod
  def from_config(cls, spec, data_dir=None):
    """A component from `dict(name=, split=, weight=1, pp=None, **source_kw)`.

    Args:
      spec: the dict (or ConfigDict); keys other than name, split, weight and
        pp (e.g. `data_dir`, `skip_bad`) are passed to `get_source`.
      data_dir: the default `data_dir` of the source.

    Returns:
      The `Component`.
    """
    spec = {"data_dir": data_dir, **dict(spec)}
    missing = {"name", "split"} - set(spec)
    if missing:
      raise KeyError(f"Mixture component {spec} lacks {sorted(missing)}.")
    name, split = spec.pop("name"), spec.pop("split")
    weight, pp = spec.pop("weight", 1.0), spec.pop("pp", None)
    return cls(datasets.get_source(name, **spec), split, weight, pp)


def _as_source(source):
  return datasets.get_source(source) if isinstance(source, str) else source


def _as_pp_fn(pp):
  return pp if callable(pp) else pp_builder.get_preprocess_fn(pp)


def _is_mixture(source):
  return isinstance(source, (list, tuple))


def as_components(mixture):
  """A list of `Component`s from Components, tuples or config dicts.

  Args:
    mixture: a sequence whose items are `Component`s, tuples `(source,
      split, weight[, pp])` or dicts for `Component.from_config`.

  Returns:
    A list of `Component`s with positive weights and `DataSource`s.
  """
  if not mixture:
    raise ValueError("A mixture needs at least one component.")
  out = []
  for item in mixture:
    if isinstance(item, Component):
      c = item
    elif isinstance(item, (list, tuple)):
      c = Component(*item)
    else:
      c = Component.from_config(item)
    if not (c.weight > 0 and math.isfinite(c.weight)):
      raise ValueError(f"Mixture weights must be positive; got {c}.")
    out.append(dataclasses.replace(c, source=_as_source(c.source)))
  return out


def _local_batch_size(global_batch_size, process_count):
  if global_batch_size % process_count:
    raise ValueError(f"global_batch_size={global_batch_size} is not divisible "
                     f"by process_count={process_count}.")
  return global_batch_size // process_count


@_plain
def _derive(seed, value, shape=()):
  """Stateless int64 numbers derived from the pair (seed, value)."""
  pair = tf.stack([tf.cast(seed, tf.int64), tf.cast(value, tf.int64)])
  return tf.random.stateless_uniform(shape, seed=pair, minval=None,
                                     maxval=None, dtype=tf.int64)


def _options():
  options = tf.data.Options()
  options.deterministic = True
  # No autotuning thread: deleting an iterator joins it, and it can miss the
  # cancellation and sleep out its period (up to a minute) first. Measured
  # (TF 2.21, 2 cores): after 45 s of reading an AUTOTUNE map, `del it` took
  # 0, 0 and 37 s; the trainer's input thread and the notebooks' runs paused
  # 6-48 s at the end of one run in two. Without it, AUTOTUNE parallelism is
  # the number of cores, and the same pipeline read 30% more batches here.
  options.autotune.enabled = False
  return options


def num_train_examples(source, split=None):
  """Examples in `split` of `source` (a name, a DataSource or a mixture).

  Args:
    source: a `DataSource`, a name, or a mixture (see `as_components`).
    split: the split; None for a mixture.

  Returns:
    The number of examples; for a mixture, the sum over its components.
  """
  if _is_mixture(source):
    return sum(c.source.num_examples(c.split) for c in as_components(source))
  return _as_source(source).num_examples(split)


_CACHED_CHUNK = 512  # Examples per call of `pp_cached_batched`.
_GATHER_CHUNK = 256  # Examples gathered at once from in-memory data.


@dataclasses.dataclass(frozen=True)
class _Plan:
  """How an epoch of one share is cut: blocks, windows, shuffle buffer."""
  sizes: np.ndarray  # [num_blocks] int64, examples per block (share order).
  window_blocks: int  # Blocks per window.
  buffer: int  # Shuffle buffer of a window (>= its examples, if possible).

  @property
  def num_blocks(self):
    return len(self.sizes)

  @property
  def num_windows(self):
    return -(-self.num_blocks // self.window_blocks)


def _plan(sizes, block_size, shuffle_buffer_size):
  """Windows of shuffle_buffer_size // block_size blocks (at least one)."""
  if block_size < 1 or shuffle_buffer_size < 1:
    raise ValueError(f"block_size={block_size} and shuffle_buffer_size="
                     f"{shuffle_buffer_size} must be >= 1.")
  sizes = np.asarray(sizes, np.int64)
  window_blocks = max(1, shuffle_buffer_size // block_size)
  buffer = min(shuffle_buffer_size, window_blocks * int(sizes.max()))
  return _Plan(sizes, window_blocks, max(1, buffer))


@_plain
def _block_order(key, epoch, lo, hi, num_blocks):
  """The blocks at places [lo, hi) of epoch `epoch`'s seeded block order."""
  seed = _derive(_derive(key, epoch), -1, [2])
  return tf.random.experimental.index_shuffle(
      tf.range(lo, hi, dtype=tf.int64), seed,
      tf.constant(num_blocks - 1, tf.int64))


def _resume_point(plan, key, start):
  """(epoch, window, examples of that window before position `start`)."""
  epoch, q = divmod(start, int(plan.sizes.sum()))
  order = _block_order(key, epoch, 0, plan.num_blocks, plan.num_blocks)
  ends = np.cumsum(np.add.reduceat(
      plan.sizes[order.numpy()],
      np.arange(0, plan.num_blocks, plan.window_blocks)))
  window = int(np.searchsorted(ends, q, side="right"))
  return epoch, window, q - (int(ends[window - 1]) if window else 0)


def _windowed_stream(plan, key, start, window_elements):
  """The endless stream of epochs of shuffled windows, from position `start`.

  Args:
    plan: the `_Plan`.
    key: the shuffle key of this stream.
    start: the position to start at.
    window_elements: a function of block ids [<= window_blocks] to a dataset
      of those blocks' elements, block after block.

  Returns:
    The dataset; reaching `start` costs one window (and skipping its first
    examples from the shuffle buffer), wherever `start` is.
  """

  def window(epoch, w):
    lo = w * plan.window_blocks
    ids = _block_order(key, epoch, lo,
                       tf.minimum(lo + plan.window_blocks, plan.num_blocks),
                       plan.num_blocks)
    return window_elements(ids).shuffle(
        plan.buffer, seed=_derive(_derive(key, epoch), w))

  def epoch(e, first_window=0):
    return tf.data.Dataset.range(first_window, plan.num_windows).flat_map(
        _plain(lambda w: window(e, w)))

  e0, w0, skip = _resume_point(plan, key, start)
  rest = tf.data.Dataset.counter(e0 + 1).flat_map(_plain(epoch))
  return epoch(e0, w0).skip(skip).concatenate(rest)


def _read_blocks(blocks, plan):
  """window_elements (see `_windowed_stream`) reading `Blocks` in parallel."""
  specs = {k: tf.constant(v) for k, v in blocks.specs.items()}
  cycle = min(plan.window_blocks, _PARALLEL_READS)

  def elements(ids):
    # Each block is read whole in its turn: the blocks' records in order.
    return tf.data.Dataset.from_tensor_slices(ids).interleave(
        lambda b: blocks.read({k: v[b] for k, v in specs.items()}),
        cycle_length=cycle, block_length=int(plan.sizes.max()),
        num_parallel_calls=cycle, deterministic=True)

  return elements


def _table_indices(plan):
  """window_elements giving the blocks' example indices (in-memory data)."""
  sizes = tf.constant(plan.sizes)
  starts = tf.constant(np.cumsum(plan.sizes) - plan.sizes)

  def elements(ids):
    lo = tf.gather(starts, ids)
    return tf.data.Dataset.from_tensor_slices(
        tf.ragged.range(lo, lo + tf.gather(sizes, ids)).flat_values)

  return elements


def _flat(x, spec):
  """An example's feature for the table: as is if its shape is static, else
  (flat values, shape), so that any shapes batch into one tensor each."""
  if spec.shape.is_fully_defined():
    return x
  return tf.reshape(x, [-1]), tf.shape(x, out_type=tf.int64)


def _row(column, i, spec):
  """Example `i` of a table column made of `_flat` features."""
  if spec.shape.is_fully_defined():
    return tf.gather(column, i)
  values, shapes = column  # Ragged [n, None] values, [n, rank] shapes.
  lo, hi = values.row_splits[i], values.row_splits[i + 1]
  row = tf.reshape(values.flat_values[lo:hi], shapes[i])
  return tf.ensure_shape(row, spec.shape)


def _table_stream(ds, num_examples, plan, key, start):
  """`_windowed_stream` of finite `ds`, read once into memory (a "table").

  The same blocks, windows and shuffles as reading `ds`'s blocks from
  storage, so the same examples in the same order; `ds` is read whole at the
  first element, wherever `start` is, and later windows only index it.
  Features of static shape are gathered a chunk of examples at a time; the
  others are kept as flat values with their shapes and sliced out.
  """
  spec = ds.element_spec
  dense = all(s.shape.is_fully_defined() for s in tf.nest.flatten(spec))
  leaves = tf.nest.flatten(spec)
  flat = ds.map(_plain(lambda x: tuple(_flat(v, s) for v, s in zip(
      tf.nest.flatten(x), leaves))), num_parallel_calls=AUTOTUNE,
                deterministic=True)
  table = (flat.batch(num_examples) if dense
           else flat.ragged_batch(num_examples)).take(1)
  indices = _windowed_stream(plan, key, start, _table_indices(plan))

  def rows(columns):
    if dense:  # One gather per chunk of indices, not per example.
      return indices.batch(_GATHER_CHUNK).map(
          _plain(lambda i: tf.nest.pack_sequence_as(
              spec, [tf.gather(c, i) for c in columns]))).unbatch()
    return indices.map(
        _plain(lambda i: tf.nest.pack_sequence_as(
            spec, [_row(c, i, s) for c, s in zip(columns, leaves)])),
        num_parallel_calls=AUTOTUNE, deterministic=True)

  return table.flat_map(_plain(lambda *columns: rows(columns)))


def _cached_raw(source, split, kw, blocks, plan, *, cache_raw, pp_cached,
                pp_cached_batched):
  """The share's raw examples after the cached pps, or None if not cached.

  Read block after block where the source has blocks, so that the cached
  stream holds the examples in the same order and gives the same batches.
  """
  if not (cache_raw or pp_cached or pp_cached_batched):
    return None
  if blocks is None:
    raw = source.get_tfdata(split, **kw)
  else:
    raw = _read_blocks(blocks, plan)(tf.range(plan.num_blocks,
                                              dtype=tf.int64))
    if blocks.load is not None:
      raw = raw.map(blocks.load, num_parallel_calls=AUTOTUNE,
                    deterministic=True)
  if pp_cached:  # Deterministic: the same values in every epoch.
    raw = raw.map(_as_pp_fn(pp_cached), num_parallel_calls=AUTOTUNE,
                  deterministic=True)
  if pp_cached_batched:
    raw = raw.batch(_CACHED_CHUNK).map(
        _as_pp_fn(pp_cached_batched), num_parallel_calls=AUTOTUNE,
        deterministic=True).unbatch()
  return raw


def _example_stream(source, split, *, shuffle_key, start, process_index,
                    process_count, shuffle_buffer_size, block_size,
                    cache_raw, pp_cached=None, pp_cached_batched=None,
                    materialize=True):
  """This process's endless stream of raw examples, from position `start`.

  With `materialize=False`, the cached pps run in the stream instead: the
  share's examples in storage order, repeated, nothing read ahead (a probe).

  Returns:
    (dataset, load): `load` is None, or a function the caller must map over
    the dataset's records to get the raw feature dicts (lazy sources).
  """
  n = source.num_examples_per_process(
      split, process_count=process_count, drop_remainder=True)[process_index]
  if n == 0:
    raise ValueError(f"Split {split!r} of {source!r} gives process "
                     f"{process_index} of {process_count} no training "
                     "examples.")
  kw = dict(process_index=process_index, process_count=process_count,
            drop_remainder=True)
  blocks = None
  if hasattr(source, "get_blocks"):
    blocks = source.get_blocks(split, block_size=block_size, **kw)
  sizes = (datasets.core.cut([n], block_size)[2] if blocks is None
           else blocks.sizes)
  if int(sizes.sum()) != n:
    raise ValueError(f"The blocks of {source!r} {split!r} hold "
                     f"{int(sizes.sum())} examples, not {n}.")
  plan = _plan(sizes, block_size, shuffle_buffer_size)
  raw = _cached_raw(source, split, kw, blocks, plan, cache_raw=cache_raw,
                    pp_cached=pp_cached, pp_cached_batched=pp_cached_batched)
  if raw is not None:
    if not materialize:
      return raw.repeat(), None
    return _table_stream(raw, n, plan, shuffle_key, start), None
  if blocks is not None:
    return _windowed_stream(plan, shuffle_key, start,
                            _read_blocks(blocks, plan)), blocks.load
  if hasattr(source, "get_records"):
    records = source.get_records(split, **kw)
    return _table_stream(records, n, plan, shuffle_key, start), source.load
  blocks = datasets.core.dataset_blocks(source.get_tfdata(split, **kw), n,
                                        block_size)
  return _windowed_stream(plan, shuffle_key, start,
                          _read_blocks(blocks, plan)), None


def _seeded_pp(pp_fn, load, key):
  """map fn (position, example) -> pp(load(example) + `_seed`)."""

  def process(position, features):
    if load is not None:
      features = load(features)
    return pp_fn({**features,
                  pp_utils.SEED_KEY: _derive(key, position, [2])})

  return process


def make_train_dataset(source, split=None, *, pp, global_batch_size, seed,
                       process_index, process_count, start_step=0,
                       shuffle_buffer_size=10_000,
                       block_size=DEFAULT_BLOCK_SIZE, cache_raw=False,
                       pp_cached=None, pp_cached_batched=None, prefetch=2,
                       num_parallel_calls=AUTOTUNE, materialize=True):
  """Returns this process's endless stream of preprocessed training batches.

  Args:
    source: a `DataSource` or a dataset name for `datasets.get_source`; or a
      mixture: a list of `Component`s, `(source, split, weight[, pp])` tuples
      or `dict(name=, split=, weight=, pp=, **source_kw)` (then `split` is
      None).
    split: the split (TFDS syntax, e.g. "train[:90%]").
    pp: a pp string or a function of a feature dict (after the component's
      own pp, for mixtures).
    global_batch_size: batch size summed over processes.
    seed: the integer seed of shuffling, mixing and augmentation.
    process_index: this process's index.
    process_count: number of processes; each reads an equal, disjoint share
      (the remainder of the split is dropped).
    start_step: number of batches already consumed (to resume).
    shuffle_buffer_size: examples shuffled together: each window of
      shuffle_buffer_size // block_size randomly chosen blocks is shuffled
      in a buffer of this size (>= the share size: a full shuffle). Also
      the memory (raw examples) and the reading cost of a resume.
    block_size: most examples of a block, the unit read from storage and
      permuted each epoch (see the module docstring).
    cache_raw: keep the raw (undecoded) examples in memory.
    pp_cached: a deterministic pp (string or function) applied once per
      example and cached in memory, before `pp` runs in every epoch (e.g.
      decoding and tokenising all captions); single sources only.
    pp_cached_batched: a deterministic pp run after `pp_cached`, before the
      cache, on chunks of examples (every feature gains a leading axis), for
      ops that take batched inputs: e.g. `tokenize`, which then calls the
      tokenizer once per chunk rather than once per example (a Python call
      from tf.data costs about 0.1 ms).
    prefetch: batches to prefetch.
    num_parallel_calls: parallelism of the pp map.
    materialize: False runs `pp_cached(_batched)` in the stream, unshuffled,
      instead of first reading the whole share into memory: the first batch
      costs a batch, not the share (for probing shapes; single sources).

  Returns:
    A `tf.data.Dataset` of dicts of [global_batch_size // process_count, ...]
    tensors.
  """
  local_batch = _local_batch_size(global_batch_size, process_count)
  offset = start_step * local_batch
  kw = dict(process_index=process_index, process_count=process_count,
            shuffle_buffer_size=shuffle_buffer_size, block_size=block_size,
            cache_raw=cache_raw)
  if _is_mixture(source):
    if split is not None:
      raise ValueError("A mixture names its splits in its components; "
                       f"got split={split!r} too.")
    if pp_cached or pp_cached_batched:
      raise ValueError("pp_cached(_batched) is for single sources; give "
                       "mixture components their own `pp`.")
    ds = _mixture_stream(as_components(source), seed=seed, start=offset,
                         num_parallel_calls=num_parallel_calls, **kw)
    load = None
  else:
    ds, load = _example_stream(_as_source(source), split, start=offset,
                               shuffle_key=_derive(seed, _SHUFFLE_TAG),
                               pp_cached=pp_cached,
                               pp_cached_batched=pp_cached_batched,
                               materialize=materialize, **kw)
  ds = ds.enumerate(start=offset)
  example_key = _derive(_derive(seed, _EXAMPLE_TAG), process_index)
  ds = ds.map(_seeded_pp(_as_pp_fn(pp), load, example_key),
              num_parallel_calls=num_parallel_calls, deterministic=True)
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds.prefetch(prefetch).with_options(_options())


def _mixture_stream(components, *, seed, start, process_index,
                    num_parallel_calls, **kw):
  """The mixed stream of raw (component-preprocessed) examples from `start`."""
  choice_key = _derive(_derive(seed, _MIXTURE_TAG), process_index)
  bounds = _choice_bounds([c.weight for c in components])
  starts = _component_starts(choice_key, bounds, start)
  shuffle_key = _derive(seed, _SHUFFLE_TAG)
  pp_key = _derive(_derive(seed, _COMPONENT_TAG), process_index)
  streams = []
  for k, c in enumerate(components):
    ds, load = _example_stream(
        c.source, c.split, shuffle_key=_derive(shuffle_key, k),
        start=int(starts[k]), process_index=process_index, **kw)
    if c.pp is not None:
      ds = ds.enumerate(start=int(starts[k])).map(
          _seeded_pp(_as_pp_fn(c.pp), load, _derive(pp_key, k)),
          num_parallel_calls=num_parallel_calls, deterministic=True)
    elif load is not None:
      ds = ds.map(load, num_parallel_calls=num_parallel_calls,
                  deterministic=True)
    streams.append(ds)
  _check_same_features(components, streams)
  return tf.data.Dataset.choose_from_datasets(
      streams, _choices(choice_key, bounds, start))


def _check_same_features(components, streams):
  """Raises naming the components if their examples differ in structure."""
  specs = [tf.nest.map_structure(lambda s: s.dtype, ds.element_spec)
           for ds in streams]
  if any(s != specs[0] for s in specs[1:]):
    lines = "\n".join(f"  {c.source!r} {c.split!r}: {s}"
                      for c, s in zip(components, specs))
    raise ValueError("Mixture components give different features (use a "
                     f"component `pp` to make them match):\n{lines}")


def _choice_bounds(weights):
  """Inner boundaries in [0, 1) of the cumulative normalised weights."""
  cum = np.cumsum(np.asarray(weights, np.float64))
  return tf.constant(cum[:-1] / cum[-1], tf.float64)


def _block_choices(key, block, bounds):
  """The components drawn at positions [block * B, (block + 1) * B)."""
  u = tf.random.stateless_uniform(
      [_CHOICE_BLOCK], seed=tf.stack([key, tf.cast(block, tf.int64)]),
      dtype=tf.float64)
  return tf.searchsorted(bounds, u, side="right", out_type=tf.int64)


def _choices(key, bounds, start):
  """The endless stream of drawn components from position `start`."""
  first, skip = divmod(start, _CHOICE_BLOCK)
  ds = tf.data.Dataset.counter(first).map(
      _plain(lambda b: _block_choices(key, b, bounds)))
  return ds.unbatch().skip(skip)


def component_starts(weights, start, *, seed, process_index):
  """How many of the mixture positions [0, start) drew each component.

  Args:
    weights: the components' weights.
    start: the position in this process's mixture stream.
    seed: the training seed.
    process_index: this process's index.

  Returns:
    An int64 numpy array [len(weights)], summing to `start`.
  """
  key = _derive(_derive(seed, _MIXTURE_TAG), process_index)
  return _component_starts(key, _choice_bounds(weights), start)


def _component_starts(key, bounds, start):
  k = int(bounds.shape[0]) + 1
  full, rest = divmod(start, _CHOICE_BLOCK)

  def count(choices):
    return tf.math.bincount(choices, minlength=k, maxlength=k,
                            dtype=tf.int64)

  counts = tf.data.Dataset.range(full).map(
      _plain(lambda b: count(_block_choices(key, b, bounds))),
      num_parallel_calls=AUTOTUNE).reduce(
          tf.zeros([k], tf.int64), lambda a, b: a + b)
  counts += count(_block_choices(key, full, bounds)[:rest])
  return counts.numpy()


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
    pad = ds.take(1).map(
        _plain(lambda x: tf.nest.map_structure(tf.zeros_like, x)))
  pad = pad.map(_plain(lambda x: {**x, "_mask": tf.constant(False)}))
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


def start_global_iterator(ds, sharding, *, prefetch=2, join_timeout=120):
  """Iterates `ds` as global sharded batches, read ahead in a thread.

  A thread reads `prefetch` numpy batches ahead of use from tf.data; this
  (the calling) thread puts them on the devices, `prefetch` batches ahead:
  the transfers are asynchronous, and every XLA call comes from the one
  thread that dispatches the steps. (Transfers from the reading thread, in
  flight while a step of several CPU devices was being launched, hung
  XLA:CPU's all-reduce: jax 0.10.2, 2 CPU devices.)

  Close the generator (`it.close()`, or let a `with contextlib.closing(...)`
  do it) when done: it stops the producer thread and waits for it, so that
  no thread is left inside TensorFlow when the interpreter exits (a daemon
  thread still in C++ code at exit aborts the process).

  Args:
    ds: a `tf.data.Dataset` of per-process batches.
    sharding: the batch sharding, e.g. `NamedSharding(mesh, P(("data",)))`.
    prefetch: how many batches to read, and to put on devices, ahead of use.
    join_timeout: seconds to wait for the producer to finish its batch.

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
        if not _put(batch):
          return
      _put(done)
    except Exception as e:  # pylint: disable=broad-except
      _put(e)

  thread = threading.Thread(target=_producer, daemon=True,
                            name="bvl-input-producer")
  thread.start()
  on_devices = collections.deque()
  finished = False
  try:
    while True:
      while not finished and len(on_devices) < max(1, prefetch):
        item = items.get()
        if item is done:
          finished = True
        elif isinstance(item, Exception):
          finished = True
          on_devices.append(item)
        else:
          on_devices.append(to_global(item, sharding))
      if not on_devices:
        return
      item = on_devices.popleft()
      if isinstance(item, Exception):
        raise item
      yield item
  finally:
    stop.set()  # The producer stops at its next batch ...
    thread.join(join_timeout)  # ... and releases its tf.data iterator.
    if thread.is_alive():
      logging.warning("The input producer thread did not stop within %ss.",
                      join_timeout)
