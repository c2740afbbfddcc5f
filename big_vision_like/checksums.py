"""Checksums of saved arrays: what a checkpoint records and verifies.

Orbax's compressed chunks carry no integrity check: a few overwritten bytes
restore as garbage values without an error. So a checkpoint records, for
every saved array, its shape, dtype and a fingerprint, and a SHA-256 of its
JSON metadata; every restore recomputes and compares.

The fingerprint of an array is two wrapping uint32 sums over its elements'
bit patterns, `sum(u * (2i + 1))` and `sum((u ^ (u >> 16)) * (i * 2654435761
| 1))` with `u` the element's bits and `i` its row-major index: a changed
element always changes the first sum (odd weights), the sums are the same
however the array is sharded, and they are computed where the array lives
(on devices with `fingerprints`, or with NumPy for host arrays).
"""

import hashlib
import json

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import numpy as np

CHECKSUMS_FORMAT = 1


class CheckpointError(ValueError):
  """A checkpoint that cannot be restored or fails its checksums."""


class CheckpointMismatchError(ValueError):
  """A checkpoint whose arrays differ from the state the config builds."""


def leaf_names(tree):
  """`/`-joined names of the leaves of `tree`, in `jax.tree.leaves` order."""
  def name(path):
    parts = []
    for key in path:
      for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
          parts.append(str(getattr(key, attr)))
          break
    return "/".join(parts)
  return [name(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


_GOLDEN = 2654435761  # Knuth's multiplicative hash constant (< 2**32).


def _unsigned(dtype):
  return {1: np.uint8, 2: np.uint16, 4: np.uint32}[np.dtype(dtype).itemsize]


def _fingerprint_jax(x):
  """[2] uint32 fingerprint of one jax array (see the module docstring)."""
  if x.dtype == jnp.bool_:
    u = x.astype(jnp.uint32)
  else:
    u = jax.lax.bitcast_convert_type(x, _unsigned(x.dtype)).astype(jnp.uint32)
  i = jnp.zeros(x.shape, jnp.uint32)
  for axis in range(x.ndim):  # Row-major index, without reshaping shards.
    stride = int(np.prod(x.shape[axis + 1:], dtype=np.int64))
    i = i + jax.lax.broadcasted_iota(jnp.uint32, x.shape, axis) * jnp.uint32(
        stride)
  w2 = (i * jnp.uint32(_GOLDEN)) | jnp.uint32(1)
  h1 = jnp.sum(u * (i * jnp.uint32(2) + jnp.uint32(1)), dtype=jnp.uint32)
  h2 = jnp.sum((u ^ (u >> 16)) * w2, dtype=jnp.uint32)
  return jnp.stack([h1, h2])


_fingerprints_jit = jax.jit(lambda leaves: [_fingerprint_jax(x)
                                            for x in leaves])


def fingerprint_np(x):
  """The fingerprint of one array computed with NumPy: [h1, h2] ints."""
  x = np.ascontiguousarray(np.asarray(x))
  if x.dtype == np.bool_:
    u = x.astype(np.uint32).ravel()
  elif x.dtype.itemsize == 8:  # Two uint32 words per element (as in jax x64).
    raise ValueError(f"Fingerprints of {x.dtype} arrays are not defined.")
  else:
    u = x.view(_unsigned(x.dtype)).astype(np.uint32).ravel()
  i = np.arange(u.size, dtype=np.uint32)
  with np.errstate(over="ignore"):
    w2 = (i * np.uint32(_GOLDEN)) | np.uint32(1)
    h1 = np.sum(u * (i * np.uint32(2) + np.uint32(1)), dtype=np.uint64)
    h2 = np.sum((u ^ (u >> np.uint32(16))) * w2, dtype=np.uint64)
  return [int(h1 % 2**32), int(h2 % 2**32)]


def fingerprints(tree):
  """{name: [h1, h2]} of every array leaf of `tree` (jax or NumPy arrays)."""
  names, leaves = leaf_names(tree), jax.tree.leaves(tree)
  if all(isinstance(x, jax.Array) for x in leaves):
    values = [[int(v) for v in fp]
              for fp in jax.device_get(_fingerprints_jit(leaves))]
  else:
    values = [fingerprint_np(x) for x in leaves]
  return dict(zip(names, values))


def _meta_digest(meta):
  return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def make_record(state, meta):
  """The `checksums` item of a checkpoint of `state` (arrays) and `meta`."""
  fps = fingerprints(state)
  arrays = {name: {"shape": list(np.shape(x)), "dtype": str(x.dtype),
                   "fingerprint": fps[name]}
            for name, x in zip(leaf_names(state), jax.tree.leaves(state))}
  return {"format": CHECKSUMS_FORMAT, "arrays": arrays,
          "meta_sha256": _meta_digest(meta)}


def read_record(step_dir):
  """The `checksums` record of a step directory, or None if it has none."""
  path = epath.Path(step_dir) / "checksums" / "metadata"
  if not path.exists():
    return None
  try:
    record = json.loads(path.read_bytes().decode("utf-8"))
    assert record["format"] == CHECKSUMS_FORMAT and "arrays" in record
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f"{path}: unreadable checksums ({type(e).__name__}:"
                          f" {e}).") from None
  return record


def verify(where, record, tree, *, prefix="", meta=None):
  """Raises CheckpointError naming the arrays of `tree` that fail `record`.

  Args:
    where: the checkpoint's path, for the message.
    record: a `make_record`, or None for a checkpoint written without one
      (by an older version): a warning says it is not verified.
    tree: the restored arrays (the whole state, or the subtree `prefix`).
    prefix: the name of `tree` in the saved state, e.g. "params/".
    meta: the restored meta, checked against the record's digest if given.
  """
  if record is None:
    logging.warning("Checkpoint %s has no checksums (written by an older "
                    "version): not verified.", where)
    return
  problems = []
  if meta is not None and _meta_digest(meta) != record.get("meta_sha256"):
    problems.append("meta differs from what was saved")
  for name, fp in fingerprints(tree).items():
    saved = record["arrays"].get(prefix + name)
    if saved is None:
      problems.append(f"{prefix + name} was not saved")
    elif saved["fingerprint"] != fp:
      problems.append(f"{prefix + name} differs from what was saved")
  if problems:
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    raise CheckpointError(f"Checkpoint {where} is damaged: "
                          + "; ".join(problems[:5]) + more + ".")


def mismatches(record_arrays, abstract):
  """Lines naming the arrays whose names, shapes or dtypes differ.

  The params come first, once each; differences in the optimizer state (its
  copies of the same params, mostly) are summed up in one line.
  """
  want = {n: (tuple(x.shape), str(x.dtype))
          for n, x in zip(leaf_names(abstract), jax.tree.leaves(abstract))}
  have = {n: (tuple(a["shape"]), a["dtype"]) for n, a in record_arrays.items()}
  lines = [f"{n}: checkpoint {have[n][0]} {have[n][1]}, config {want[n][0]} "
           f"{want[n][1]}" for n in sorted(want) if n in have
           and have[n] != want[n]]
  lines += [f"{n}: not in the checkpoint" for n in sorted(set(want) - set(have))]
  lines += [f"{n}: only in the checkpoint" for n in sorted(set(have) - set(want))]
  params = [line for line in lines if not line.startswith("opt/")]
  others = len(lines) - len(params)
  if others:
    params.append(f"(and {others} arrays of the optimizer state)")
  return params
