"""Tests of `datasets.core` blocks: cutting, and TFDS shards read in blocks."""

import numpy as np
import pytest
import tensorflow as tf

from big_vision_like.datasets import core


def test_cut_never_spans_pieces():
  piece, offset, size = core.cut([5, 0, 3], 2)
  np.testing.assert_array_equal(piece, [0, 0, 0, 2, 2])
  np.testing.assert_array_equal(offset, [0, 2, 4, 0, 2])
  np.testing.assert_array_equal(size, [2, 2, 1, 2, 1])
  with pytest.raises(ValueError, match="block_size"):
    core.cut([5], 0)


def _read(blocks, order):
  out = []
  for b in order:
    ds = blocks.read({k: tf.constant(v[b]) for k, v in blocks.specs.items()})
    out += [blocks.load(r) if blocks.load else r for r in ds]
  return out


@pytest.mark.parametrize("count,index", [(1, 0), (3, 2)])
def test_tfds_blocks_hold_the_share(count, index):
  source = core.get_source("bvl_digits")
  kw = dict(process_index=index, process_count=count, drop_remainder=True)
  split = "train[10:]+validation"  # Two shard files.
  blocks = source.get_blocks(split, block_size=50, **kw)
  assert blocks.sizes.max() <= 50
  # `as_dataset` interleaves the files; blocks read them one after another.
  expected = [e["id"] for e in source.get_tfdata(
      split, **kw).as_numpy_iterator()]
  got = _read(blocks, range(len(blocks.sizes)))
  ids = [int(e["id"]) for e in got]
  assert sorted(ids) == sorted(expected)
  assert got[0]["image"].dtype == tf.string  # Left encoded.
  # A block read alone (from the middle of its shard) is the same.
  last = _read(blocks, [len(blocks.sizes) - 1])
  assert [int(e["id"]) for e in last] == ids[-len(last):]
  assert len(last) == blocks.sizes[-1]


def test_dataset_blocks_read_any_dataset():
  blocks = core.dataset_blocks(tf.data.Dataset.range(10), 10, 4)
  np.testing.assert_array_equal(blocks.sizes, [4, 4, 2])
  assert [int(x) for x in _read(blocks, [2, 0])] == [8, 9, 0, 1, 2, 3]
