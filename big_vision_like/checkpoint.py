"""Orbax checkpoints of the train state, and `load_params` for transfer.

A workdir holds `checkpoints/<step>/` written by orbax: asynchronous, atomic
(written under a temporary name and renamed when complete, so an interrupted
save is never picked up), keeping the last `keep_last` plus every
`keep_every`-th step. Each checkpoint has three items: `state` (params and
optimizer state, saved and restored with their shardings), `meta` (JSON:
step, examples seen, config) and `checksums` (JSON: shape, dtype and a
fingerprint of every saved array, and a SHA-256 of `meta`). The RNG is
derived from the config seed and the step, and the data position from the
step, so the step restores both.

Every restore (`restore`, `restore_latest`, `load_params`) verifies the
checksums (`checksums.py`: orbax's compressed chunks carry no integrity
check); `restore_latest` moves a checkpoint that fails to
`checkpoints_damaged/` and falls back to the newest one that restores and
verifies.
"""

from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp

from big_vision_like import checksums
from big_vision_like import console
from big_vision_like import fs
from big_vision_like.checksums import CheckpointError  # Re-exported.
from big_vision_like.checksums import CheckpointMismatchError  # Re-exported.

DAMAGED_DIR = "checkpoints_damaged"


class Checkpointer:
  """Saves and restores the train state in `workdir/checkpoints`."""

  def __init__(self, workdir, *, keep_last=2, keep_every=None,
               async_save=True):
    self.workdir = fs.abspath(workdir)
    self.directory = fs.join(self.workdir, "checkpoints")
    fs.check_writable(self.directory, "Checkpoints")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep_last, keep_period=keep_every, create=True,
        cleanup_tmp_directories=True, enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_names=("state", "meta", "checksums"))

  def latest_step(self):
    """The newest complete checkpoint's step, or None."""
    return self._manager.latest_step()

  def all_steps(self):
    return list(self._manager.all_steps())

  def save(self, step, state, meta):
    """Starts saving `state` (a pytree of jax.Arrays) and `meta` (JSON).

    The checksums are computed first, on the arrays where they live (this
    waits for `state` to be computed).
    """
    record = checksums.make_record(state, meta)
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        meta=ocp.args.JsonSave(meta),
        checksums=ocp.args.JsonSave(record)), force=True)

  def restore(self, step, abstract_state):
    """Restores (state, meta) at `step` onto `abstract_state`'s shardings.

    Args:
      step: the checkpoint step (e.g. `latest_step()`).
      abstract_state: a pytree of `jax.ShapeDtypeStruct` with `sharding` set,
        of the same structure as the saved state.

    Raises:
      CheckpointMismatchError: the saved arrays are not those of
        `abstract_state` (another model or optimizer); names them.
      CheckpointError: the checkpoint cannot be read or fails its checksums.
    """
    where = fs.join(self.directory, str(step))
    record = checksums.read_record(where)
    if record is not None:
      lines = checksums.mismatches(record["arrays"], abstract_state)
      if lines:
        raise CheckpointMismatchError(
            f"Checkpoint {where} does not match the state this config builds"
            " (a changed model or optimizer config? Use another workdir, or "
            "restore the config):\n  " + "\n  ".join(lines[:20])
            + ("\n  ..." if len(lines) > 20 else ""))
    try:
      out = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state),
          meta=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f"Checkpoint {where} cannot be restored: "
                            f"{type(e).__name__}: {_first_line(e)}") from e
    checksums.verify(where, record, out["state"], meta=out["meta"])
    return out["state"], out["meta"]

  def restore_latest(self, abstract_state, log=print):
    """(step, state, meta) of the newest checkpoint that restores and verifies.

    A checkpoint that cannot be restored or fails its checksums is logged
    (naming its step and the problem) and moved to `checkpoints_damaged/`,
    and the previous one is tried. Returns (None, None, None) when there is no
    checkpoint at all; raises if there are checkpoints and none restores.
    """
    failed = []
    for step in sorted(self.all_steps(), reverse=True):
      try:
        state, meta = self.restore(step, abstract_state)
      except CheckpointError as e:
        log(f"ERROR: {e} Falling back to the previous checkpoint.")
        failed.append(step)
        self._quarantine(step)
        continue
      return step, state, meta
    if failed:
      raise CheckpointError(
          f"No checkpoint in {self.directory} restores: steps {failed} are "
          f"damaged (moved to {fs.join(self.workdir, DAMAGED_DIR)}). "
          "Remove the workdir's checkpoints to start over.")
    return None, None, None

  def _quarantine(self, step):
    """Moves `step` aside so that training can write that step again."""
    if jax.process_index() == 0:
      src = epath.Path(self.directory) / str(step)
      dst = epath.Path(self.workdir) / DAMAGED_DIR / str(step)
      dst.parent.mkdir(parents=True, exist_ok=True)
      n = 0
      while dst.exists():
        n += 1
        dst = dst.parent / f"{step}.{n}"
      src.rename(dst)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=C0415
      multihost_utils.sync_global_devices(f"bvl_quarantine_{step}")
    self._manager.reload()

  def wait(self):
    """Blocks until pending asynchronous saves are complete."""
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()


def _first_line(e):
  text = str(e).strip().splitlines()
  return text[0][:500] if text else ""


def _unflatten(flat):
  tree = {}
  for name, value in flat.items():
    *parents, leaf = name.split("/")
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def _npz_array(value):
  if value.dtype.kind == "V" and value.dtype.itemsize == 2:  # bfloat16 as void.
    return value.view(jax.numpy.bfloat16)
  return value


def _load_npz(path):
  with fs.open(path, "rb") as f:
    if f.read(4) != b"PK\x03\x04":
      raise CheckpointError(f"load_params: {path} is not a .npz file (a .npz "
                            "is a zip archive of .npy arrays; this file does "
                            "not start like one).")
  try:
    with fs.open(path, "rb") as f, np.load(f, allow_pickle=False) as data:
      if not hasattr(data, "files"):
        raise ValueError("it holds one array, not named arrays")
      flat = {k: _npz_array(data[k]) for k in data.files}
  except Exception as e:  # pylint: disable=broad-except
    # Zip CRC errors (damaged bytes), text files, pickles: name the file.
    raise CheckpointError(
        f"load_params: {path} is not a readable .npz of named arrays "
        f"({type(e).__name__}: {_first_line(e)}).") from None
  for prefix in ("params/", "opt/target/"):
    if flat and all(k.startswith(prefix) for k in flat):
      flat = {k[len(prefix):]: v for k, v in flat.items()}
  return _unflatten(flat)


def _latest_step_dir(path):
  """The newest finished `<step>` directory in `path`, or None."""
  steps = [int(n) for n in fs.listdir(path) if n.isdigit()
           and fs.isdir(fs.join(path, n, "state"))]
  return fs.join(path, str(max(steps))) if steps else None


def _no_step_metadata_warning():
  """Orbax warns on every `load_params`: reading the `state` item alone, it
  looks for the step's `_CHECKPOINT_METADATA` in the item directory."""
  return console.hide_log_messages("Metadata file does not exist")


class _NoItem(Exception):
  """The checkpoint's state has no such item (e.g. no "ema")."""


def _load_orbax(path, item):
  path = fs.abspath(path)
  if fs.isdir(fs.join(path, "checkpoints")):  # A workdir.
    path = fs.join(path, "checkpoints")
  if not fs.isdir(fs.join(path, "state")):  # Dir of step dirs.
    step_dir = _latest_step_dir(path)
    if step_dir is None:
      raise FileNotFoundError(f"load_params: no complete checkpoint in {path}.")
    path = step_dir
  record = checksums.read_record(path)
  # Only the params (not the optimizer state), as host numpy arrays: the
  # saving run's devices and shardings may differ from this one's (e.g. saved
  # on 2 devices, loaded on 1).
  try:
    with _no_step_metadata_warning(), ocp.PyTreeCheckpointer() as checkpointer:
      state_dir = fs.join(path, "state")
      tree = checkpointer.metadata(state_dir).item_metadata.tree
      if item not in tree:
        raise _NoItem(sorted(tree))
      wanted = {item: tree[item]}
      as_numpy = jax.tree.map(
          lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
      params = checkpointer.restore(state_dir, args=ocp.args.PyTreeRestore(
          item=wanted, restore_args=as_numpy, partial_restore=True))[item]
  except _NoItem as e:
    hint = " (train with config.ema to have one)" if item == "ema" else ""
    raise KeyError(f"load_params: checkpoint {path} has no {item!r}{hint}; "
                   f"its state has {e.args[0]}.") from None
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f"load_params: checkpoint {path} cannot be read: "
                          f"{type(e).__name__}: {_first_line(e)}") from e
  checksums.verify(path, record, params, prefix=f"{item}/")
  return params


def load_params(path, *, item="params"):
  """Loads a params tree from a big_vision `.npz` or an orbax checkpoint.

  Args:
    path: a `.npz` file (keys `/`-joined, optional `params/` prefix), or a
      workdir / checkpoints dir / step dir written by this project; local
      or a bucket URL (`gs://...`). A suffix `:a/b` selects a subtree, e.g.
      `siglip.npz:img`.
    item: which params of an orbax checkpoint: "params", or "ema" (the
      weight EMA of a run with `config.ema`).

  Returns:
    A nested dict of numpy arrays.
  """
  subtree = None
  if ":" in fs.basename(path):
    path, subtree = path.rsplit(":", 1)
  if not fs.exists(path):
    raise FileNotFoundError(f"load_params: {path} does not exist.")
  if path.endswith(".npz"):
    if item != "params":
      raise ValueError(f"load_params: item={item!r} is for orbax "
                       f"checkpoints; {path} is an .npz of one params tree.")
    params = _load_npz(path)
  else:
    params = _load_orbax(path, item)
  for key in (subtree.split("/") if subtree else []):
    if key not in params:
      raise KeyError(f"load_params: {path} has no subtree {subtree!r} "
                     f"(top-level keys: {sorted(params)}).")
    params = params[key]
  return params
