"""Orbax checkpoints of the train state, and `load_params` for transfer.

A workdir holds `checkpoints/<step>/` written by orbax: asynchronous, atomic
(written under a temporary name and renamed when complete, so an interrupted
save is never picked up), keeping the last `keep_last` plus every
`keep_every`-th step. Each checkpoint has two items: `state` (params and
optimizer state, saved and restored with their shardings) and `meta` (JSON:
step, examples seen, config). The RNG is derived from the config seed and the
step, and the data position from the step, so the step restores both.
"""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores the train state in `workdir/checkpoints`."""

  def __init__(self, workdir, *, keep_last=2, keep_every=None,
               async_save=True):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep_last, keep_period=keep_every, create=True,
        cleanup_tmp_directories=True, enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "meta"))

  def latest_step(self):
    """The newest complete checkpoint's step, or None."""
    return self._manager.latest_step()

  def all_steps(self):
    return list(self._manager.all_steps())

  def save(self, step, state, meta):
    """Starts saving `state` (a pytree of jax.Arrays) and `meta` (JSON)."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, step, abstract_state):
    """Restores (state, meta) at `step` onto `abstract_state`'s shardings.

    Args:
      step: the checkpoint step (e.g. `latest_step()`).
      abstract_state: a pytree of `jax.ShapeDtypeStruct` with `sharding` set,
        of the same structure as the saved state.
    """
    out = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        meta=ocp.args.JsonRestore()))
    return out["state"], out["meta"]

  def wait(self):
    """Blocks until pending asynchronous saves are complete."""
    self._manager.wait_until_finished()

  def close(self):
    self._manager.close()


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
  with open(path, "rb") as f, np.load(f, allow_pickle=False) as data:
    flat = {k: _npz_array(data[k]) for k in data.files}
  for prefix in ("params/", "opt/target/"):
    if flat and all(k.startswith(prefix) for k in flat):
      flat = {k[len(prefix):]: v for k, v in flat.items()}
  return _unflatten(flat)


def _load_orbax(path):
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, "checkpoints")):  # A workdir.
    path = os.path.join(path, "checkpoints")
  manager = None
  if not os.path.isdir(os.path.join(path, "state")):  # Dir of step dirs.
    manager = ocp.CheckpointManager(path, item_names=("state", "meta"))
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f"No complete checkpoint in {path}.")
    path = os.path.join(path, str(step))
    manager.close()
  path = os.path.join(path, "state")
  # Only the params (not the optimizer state), as host numpy arrays: the
  # saving run's devices and shardings may differ from this one's (e.g. saved
  # on 2 devices, loaded on 1).
  with ocp.PyTreeCheckpointer() as checkpointer:
    item = {"params": checkpointer.metadata(path).item_metadata.tree["params"]}
    as_numpy = jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
    state = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
        item=item, restore_args=as_numpy, partial_restore=True))
  return state["params"]


def load_params(path):
  """Loads a params tree from a big_vision `.npz` or an orbax checkpoint.

  Args:
    path: a `.npz` file (keys `/`-joined, optional `params/` prefix), or a
      workdir / checkpoints dir / step dir written by this project. A suffix
      `:a/b` selects a subtree, e.g. `siglip.npz:img`.

  Returns:
    A nested dict of numpy arrays.
  """
  subtree = None
  if ":" in os.path.basename(path):
    path, subtree = path.rsplit(":", 1)
  if not os.path.exists(path):
    raise FileNotFoundError(f"load_params: {path} does not exist.")
  params = _load_npz(path) if path.endswith(".npz") else _load_orbax(path)
  for key in (subtree.split("/") if subtree else []):
    if key not in params:
      raise KeyError(f"load_params: {path} has no subtree {subtree!r} "
                     f"(top-level keys: {sorted(params)}).")
    params = params[key]
  return params
