"""Data sources: where raw examples come from, split per process.

A `DataSource` hands out the raw feature dicts of a split (images still
encoded), each process its own disjoint share, in a deterministic order. The
input pipeline does the rest (shuffle, preprocess, batch).

`get_source(name, data_dir, **kwargs)` looks `name` up first in the
`DATASETS` registry of source factories (own data, e.g. `"jsonl:/path/to/dir"`:
the factory registered as `"jsonl"` is called as `factory("/path/to/dir",
data_dir=data_dir, **kwargs)`, see `own.py`), and otherwise treats it as a
TFDS name (`"cifar10"`, `"bvl_digits:1.0.0"`), which takes no extra kwargs.

Sources of factories with a `cache_key(arg, data_dir=..., **kwargs)` (the own
sources) are cached per process: `get_source` returns the same source for
the same key while `source.is_current()` (its files are unchanged), so the
training input and every evaluator share one index and one image check.
`clear_cache()` forgets them all.

A source may also read lazily (`LazyDataSource`): `get_records` gives cheap
records (e.g. file names) and `load(record)` the full feature dict, so the
training pipeline can shuffle and skip records before reading any file.

A source may also read its share in blocks (`BlockDataSource`): `get_blocks`
cuts it into `Blocks` of at most `block_size` consecutive examples, each
readable on its own (a TFDS TFRecord shard from a record on: the skipped
records are seeked over, not parsed), so the training pipeline reads the
blocks in a seeded random order and resumes by reading one window of blocks
(see `input_pipeline`). `dataset_blocks` cuts any dataset (reading block `b`
then costs skipping the examples before it).

Built-in TFDS builders (those defined in this package, e.g. `bvl_digits`) are
prepared on first use, offline, into `data_dir`, else `$BVL_DATA_DIR`, else
the TFDS default data dir. Other TFDS datasets must already be prepared
(`tfds build NAME`); nothing is downloaded at run time.
"""

import collections
import contextlib
import dataclasses
import difflib
import functools
import io
import os
import threading
import time
from typing import Any, Callable, Protocol

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from big_vision_like import console
from big_vision_like import registry
from big_vision_like.datasets import digits  # noqa: F401  (registers it)
from big_vision_like.datasets import own  # noqa: F401  (registers sources)

DATA_DIR_ENV = "BVL_DATA_DIR"
_CACHE_SIZE = 32  # Sources kept by `get_source`, least recently used first.
_cache = collections.OrderedDict()  # (factory, key) -> source
_cache_lock = threading.Lock()


class DataSource(Protocol):
  """Raw examples of named splits, shared out between processes."""

  def num_examples(self, split: str) -> int:
    """Number of examples in `split` (all processes together)."""

  def num_examples_per_process(self, split: str, *, process_count: int,
                               drop_remainder: bool) -> list[int]:
    """Size of each process's share of `split`, without reading data."""

  def get_tfdata(self, split: str, *, process_index: int, process_count: int,
                 drop_remainder: bool) -> tf.data.Dataset:
    """This process's share of `split`: raw feature dicts, fixed order."""


class LazyDataSource(DataSource, Protocol):
  """A `DataSource` whose examples are cheap records until loaded.

  `get_tfdata(...)` equals `get_records(...).map(load)`.
  """

  def get_records(self, split: str, *, process_index: int,
                  process_count: int, drop_remainder: bool) -> tf.data.Dataset:
    """This process's share of `split` as cheap records, fixed order."""

  def load(self, record: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """The raw feature dict of a record (a tf function, usable in map)."""


@dataclasses.dataclass(frozen=True)
class Blocks:
  """A process's share of a split, cut into blocks that read independently.

  Attributes:
    specs: what locates each block, a dict of numpy arrays [num_blocks]
      (e.g. file name, first record, number of records).
    sizes: int64 numpy array [num_blocks], the examples of each block; the
      blocks hold the share's examples, each once (in storage order, which
      may differ from `get_tfdata`'s: TFDS interleaves its files).
    read: a tf function of one block's specs (a dict of scalar tensors) to a
      `tf.data.Dataset` of its `sizes[b]` records, in order.
    load: None, or a tf function record -> raw feature dict, which the
      pipeline maps after shuffling (e.g. parsing a serialized example).
  """
  specs: dict[str, np.ndarray]
  sizes: np.ndarray
  read: Callable[[dict[str, tf.Tensor]], tf.data.Dataset]
  load: Callable[[Any], dict[str, tf.Tensor]] | None = None


class BlockDataSource(DataSource, Protocol):
  """A `DataSource` whose shares read block by block (`Blocks`)."""

  def get_blocks(self, split: str, *, process_index: int, process_count: int,
                 drop_remainder: bool, block_size: int) -> Blocks | None:
    """This process's share in blocks of <= block_size, or None if it can't."""


def cut(lengths, block_size):
  """Cuts consecutive pieces of `lengths` examples into blocks.

  Args:
    lengths: the examples of each piece (e.g. the records read of each file).
    block_size: the most examples of a block (> 0).

  Returns:
    (piece, offset, size): int64 arrays [num_blocks], the piece of each
    block, its first example in the piece, and its examples; no block is
    empty or spans two pieces.
  """
  if block_size < 1:
    raise ValueError(f"block_size={block_size} must be >= 1.")
  lengths = np.asarray(lengths, np.int64)
  counts = -(-lengths // block_size)  # Blocks per piece (ceil).
  piece = np.repeat(np.arange(len(lengths)), counts)
  first = np.repeat(np.cumsum(counts) - counts, counts)
  offset = (np.arange(len(piece)) - first) * block_size
  return piece, offset, np.minimum(block_size, lengths[piece] - offset)


def dataset_blocks(ds, num_examples, block_size):
  """`Blocks` of the finite dataset `ds` of `num_examples` examples.

  Block `b` reads `ds.skip(start).take(size)`: cheap where the dataset skips
  cheaply (in-memory slices, TFRecord files), else as costly as reading the
  examples before the block.
  """
  _, start, size = cut([num_examples], block_size)
  return Blocks(specs={"start": start, "size": size}, sizes=size,
                read=lambda spec: ds.skip(spec["start"]).take(spec["size"]))


def _is_builtin(name):
  """Whether the TFDS builder `name` is defined in this package."""
  try:
    cls = tfds.builder_cls(name.split(":")[0].split("/")[0])
  except Exception:  # pylint: disable=broad-except
    return False
  return cls.__module__.startswith("big_vision_like.")


def _resolve_data_dir(name, data_dir):
  if data_dir is not None:
    return os.fspath(data_dir)
  if _is_builtin(name):
    return os.environ.get(DATA_DIR_ENV) or None
  return None


def get_builder(name, data_dir=None):
  """Returns the prepared TFDS builder of dataset `name`.

  Args:
    name: a TFDS name, optionally with config and version
      (`"name/config:1.2.3"`).
    data_dir: where the data lives; defaults to `$BVL_DATA_DIR` for built-in
      datasets, else the TFDS default.

  Returns:
    A `tfds.core.DatasetBuilder` whose data is ready to read.
  """
  with _tfds_warnings_hidden():
    return _get_builder(name, _resolve_data_dir(name, data_dir))


def _tfds_warnings_hidden():
  """TFDS warns that a not-yet-prepared dataset has no dataset_info.json."""
  return console.hide_log_messages("Variant folder")


@functools.lru_cache(maxsize=None)
def _get_builder(name, data_dir):
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(_unknown_dataset_message(name)) from None
  if builder.is_prepared():
    return builder
  if not _is_builtin(name):
    raise ValueError(
        f"TFDS dataset {name!r} is not prepared in {builder.data_dir!r}; "
        f"prepare it first (e.g. `tfds build {name} --data_dir=...`).")
  _prepare_offline(builder)
  return tfds.builder(name, data_dir=data_dir)


def _unknown_dataset_message(name):
  """Names the closest registered sources and TFDS datasets, not all 500."""
  base = name.split("/")[0].split(":")[0]
  known = list(tfds.list_builders(with_community_datasets=False))
  close = difflib.get_close_matches(base, known, n=5, cutoff=0.6)
  hint = (f" Did you mean {', '.join(map(repr, close))}?" if close else
          " `tfds.list_builders()` lists the TFDS names.")
  return (f"Unknown dataset {name!r}: neither a registered data source nor a "
          f"TFDS dataset.{hint} Own data: `imagefolder:DIR` or `jsonl:FILE`.")


def _prepare_offline(builder):
  """Generates a built-in dataset; TFDS's download messages are not shown.

  (It would announce "Downloading and preparing dataset Unknown size" for
  data generated here without any download.)
  """
  config = tfds.download.DownloadConfig(try_download_gcs=False)
  print(f"Preparing the built-in dataset {builder.name} in {builder.data_dir}"
        " (first use only) ...", flush=True)
  t0 = time.perf_counter()
  quiet = io.StringIO()
  try:
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
      builder.download_and_prepare(download_config=config)
  except Exception:  # pylint: disable=broad-except
    # Another process may have prepared it at the same time.
    if not builder.is_prepared():
      raise
  print(f"Prepared {builder.name} in {time.perf_counter() - t0:.0f}s.",
        flush=True)


class TfdsSource:
  """A `DataSource` reading a TFDS dataset; images are left encoded."""

  def __init__(self, name, data_dir=None):
    self.name = name
    self.builder = get_builder(name, data_dir)

  @classmethod
  def from_builder(cls, builder):
    """The source of a prepared `tfds.core.DatasetBuilder` instance."""
    source = cls.__new__(cls)
    source.name, source.builder = builder.info.full_name, builder
    return source

  def num_examples(self, split):
    """Number of examples of `split` (TFDS split syntax, e.g. "a+b[:10%]")."""
    with self._naming_split(split):
      return self.builder.info.splits[split].num_examples

  def num_examples_per_process(self, split, *, process_count,
                               drop_remainder):
    """Size of each process's share of `split`."""
    with self._naming_split(split):
      shares = tfds.even_splits(split, n=process_count,
                                drop_remainder=drop_remainder)
      return [self.builder.info.splits[s].num_examples for s in shares]

  @contextlib.contextmanager
  def _naming_split(self, split):
    """Re-raises TFDS's split errors naming this dataset and close splits."""
    try:
      yield
    except (KeyError, ValueError) as e:
      known = list(self.builder.info.splits)
      unknown = [n for n in _split_names(split) if n not in known]
      if unknown:
        within = f" (in split {split!r})" if split != unknown[0] else ""
        raise ValueError(
            f"TFDS dataset {self.name!r} has no split {unknown[0]!r}{within};"
            f" its splits: {known}.{_close_splits(unknown, known)}") from None
      detail = " ".join(str(e.args[0] if e.args else e).split())
      raise ValueError(f"Bad split {split!r} of TFDS dataset {self.name!r}: "
                       f"{detail}") from None

  def _share(self, split, process_index, process_count, drop_remainder):
    """The TFDS split of process `process_index`'s share of `split`."""
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index={process_index} is not in "
                       f"[0, process_count={process_count}).")
    with self._naming_split(split):
      return tfds.even_splits(split, n=process_count,
                              drop_remainder=drop_remainder)[process_index]

  def get_tfdata(self, split, *, process_index, process_count,
                 drop_remainder):
    """This process's share of `split`, raw feature dicts in a fixed order."""
    share = self._share(split, process_index, process_count, drop_remainder)
    options = tf.data.Options()
    options.deterministic = True
    read_config = tfds.ReadConfig(options=options, try_autocache=False,
                                  shuffle_seed=None)
    return self.builder.as_dataset(
        split=share, shuffle_files=False, read_config=read_config,
        decoders=self._skip_image_decoding())

  def get_blocks(self, split, *, process_index, process_count,
                 drop_remainder, block_size):
    """This process's share of `split` as `Blocks` of serialized examples.

    Blocks are runs of <= `block_size` records of one TFRecord shard: a
    block reads its file from its first record on (TFRecord readers seek
    over the records before it without parsing them), and `load` parses and
    decodes (images left encoded) like `get_tfdata`. Returns None for data
    that is not in TFRecord files (e.g. ArrayRecord).
    """
    share = self._share(split, process_index, process_count, drop_remainder)
    with self._naming_split(split):
      infos = [self.builder.info.splits[s] for s in _split_names(split)]
      if (self.builder.info.file_format != tfds.core.FileFormat.TFRECORD
          or any(i.filename_template is None for i in infos)):
        return None
      files = self.builder.info.splits[share].file_instructions
    piece, offset, size = cut([f.take for f in files], block_size)
    skips = np.array([f.skip for f in files], np.int64)
    specs = {"file": np.array([f.filename for f in files], object)[piece],
             "skip": skips[piece] + offset, "take": size}
    features = self.builder.info.features
    decoders = self._skip_image_decoding()
    return Blocks(
        specs=specs, sizes=size,
        read=lambda b: tf.data.TFRecordDataset(b["file"]).skip(
            b["skip"]).take(b["take"]),
        load=lambda r: features.deserialize_example(r, decoders=decoders))

  def _skip_image_decoding(self):
    features = self.builder.info.features
    return {k: tfds.decode.SkipDecoding() for k, f in features.items()
            if isinstance(f, tfds.features.Image)} or None

  def __repr__(self):
    return f"TfdsSource({self.name!r}, data_dir={self.builder.data_dir!r})"


def _split_names(split):
  """The base split names of a TFDS split spec, e.g. "a[:10%]+b" -> a, b."""
  return [part.split("[")[0].strip() for part in split.split("+")]


def _close_splits(unknown, known):
  """" Did you mean ...?" for the `unknown` split names, or ""."""
  hints = [c for name in unknown
           for c in difflib.get_close_matches(name, known, n=1, cutoff=0.6)]
  return f" Did you mean {', '.join(map(repr, hints))}?" if hints else ""


def get_source(name, data_dir=None, **kwargs):
  """Returns the `DataSource` called `name`.

  Args:
    name: "PREFIX:ARG" for a factory registered in `registry.DATASETS` as
      PREFIX (e.g. "imagefolder:/data/pets", "jsonl:/data/caps"), else a TFDS
      name ("cifar10", "imagenet2012:5.1.0").
    data_dir: passed to the factory; for TFDS, where the data is prepared.
    **kwargs: options of a registered factory (e.g. `skip_bad=True`).

  Returns:
    The `DataSource`; for a factory with a `cache_key`, the one returned
    before for the same key if it is still current (see the module
    docstring).
  """
  prefix, _, arg = name.partition(":")
  if prefix in registry.DATASETS:
    return _cached_source(registry.DATASETS.get(prefix), arg, data_dir,
                          kwargs)
  if kwargs:
    raise TypeError(f"TFDS dataset {name!r} takes no options; got "
                    f"{sorted(kwargs)}. Registered sources: "
                    f"{registry.DATASETS.names()}.")
  return TfdsSource(name, data_dir)


def _cached_source(factory, arg, data_dir, kwargs):
  """`factory(arg, ...)`, cached by `factory.cache_key` where it has one."""
  cache_key = getattr(factory, "cache_key", None)
  if cache_key is None:
    return factory(arg, data_dir=data_dir, **kwargs)
  key = (factory, cache_key(arg, data_dir=data_dir, **kwargs))
  with _cache_lock:  # Also makes concurrent callers build a source once.
    source = _cache.pop(key, None)
    if source is None or not source.is_current():
      source = factory(arg, data_dir=data_dir, **kwargs)
    _cache[key] = source
    while len(_cache) > _CACHE_SIZE:
      _cache.popitem(last=False)
  return source


def clear_cache():
  """Forgets the sources cached by `get_source`.

  E.g. after rewriting image files in place, which `is_current` does not see.
  """
  with _cache_lock:
    _cache.clear()
