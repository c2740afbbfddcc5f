"""Tests for the checksums of saved arrays (fingerprints and records)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_like import checksums
from big_vision_like import sharding


def _np_fingerprint_reference(x):
  """The fingerprint written out element by element (Python ints)."""
  u = np.ascontiguousarray(x).view(
      {1: np.uint8, 2: np.uint16, 4: np.uint32}[x.dtype.itemsize]).ravel()
  h1 = h2 = 0
  for i, v in enumerate(int(e) for e in u):
    h1 += v * (2 * i + 1)
    h2 += (v ^ (v >> 16)) * (((i * 2654435761) % 2**32) | 1)
  return [h1 % 2**32, h2 % 2**32]


@pytest.mark.parametrize("dtype", [np.float32, jnp.bfloat16, np.int32,
                                   np.uint8])
def test_fingerprints_on_devices_equal_numpy_reference(dtype):
  rng = np.random.default_rng(0)
  x = (rng.normal(size=(8, 6)) * 100).astype(dtype)
  expected = _np_fingerprint_reference(x)
  assert checksums.fingerprint_np(x) == expected
  mesh = sharding.make_mesh()
  tree = {"a": {"x": x}}
  for rule in ("fsdp", "replicate"):
    sh = sharding.infer_shardings(tree, [(".*", rule)], mesh)
    on_devices = jax.device_put(tree, sh)
    assert checksums.fingerprints(on_devices) == {"a/x": expected}


def test_fingerprint_changes_with_any_one_element():
  x = np.arange(64, dtype=np.float32).reshape(8, 8)
  base = checksums.fingerprint_np(x)
  for i in range(x.size):
    y = x.copy().ravel()
    y[i] = np.nextafter(y[i], np.float32(np.inf))  # The smallest change.
    assert checksums.fingerprint_np(y.reshape(8, 8)) != base
  # Swapping two elements changes it too (position-weighted).
  y = x.copy().ravel()
  y[[3, 40]] = y[[40, 3]]
  assert checksums.fingerprint_np(y.reshape(8, 8)) != base


def test_verify_names_the_changed_array_and_meta():
  tree = {"params": {"a": np.ones((3, 2), np.float32),
                     "b": np.arange(4, dtype=np.int32)}}
  record = checksums.make_record(tree, {"step": 1})
  checksums.verify("here", record, tree, meta={"step": 1})  # Intact.
  checksums.verify("here", record, tree["params"], prefix="params/")
  tree["params"]["b"] = tree["params"]["b"] + np.array([0, 0, 1, 0], np.int32)
  with pytest.raises(checksums.CheckpointError,
                     match=r"here is damaged: meta differs.*params/b differs"):
    checksums.verify("here", record, tree, meta={"step": 2})
