"""Tests for orbax checkpoints (sharded, atomic, retention) and load_params."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_like import checkpoint
from big_vision_like import sharding


def _state(mesh, scale=1.0):
  tree = {"params": {"w": jnp.arange(32.0).reshape(8, 4) * scale},
          "step": jnp.array(3, jnp.int32)}
  sh = sharding.infer_shardings(tree, [("params/.*", "fsdp"),
                                       (".*", "replicate")], mesh)
  return jax.device_put(tree, sh), sh


def test_save_restore_with_shardings(tmp_path):
  mesh = sharding.make_mesh()
  state, sh = _state(mesh)
  ckpt = checkpoint.Checkpointer(tmp_path)
  ckpt.save(3, state, {"step": 3, "examples_seen": 12})
  ckpt.wait()
  assert ckpt.latest_step() == 3
  abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      state, sh)
  restored, meta = ckpt.restore(3, abstract)
  ckpt.close()
  assert meta == {"step": 3, "examples_seen": 12}
  np.testing.assert_array_equal(restored["params"]["w"], state["params"]["w"])
  assert restored["params"]["w"].sharding == sh["params"]["w"]


def test_retention_keeps_last_k_and_every_m(tmp_path):
  mesh = sharding.make_mesh()
  state, _ = _state(mesh)
  ckpt = checkpoint.Checkpointer(tmp_path, keep_last=2, keep_every=4)
  for step in range(1, 10):
    ckpt.save(step, state, {"step": step})
  ckpt.wait()
  assert ckpt.all_steps() == [4, 8, 9]
  ckpt.close()


def test_incomplete_checkpoint_is_ignored(tmp_path):
  mesh = sharding.make_mesh()
  state, _ = _state(mesh)
  ckpt = checkpoint.Checkpointer(tmp_path)
  ckpt.save(1, state, {"step": 1})
  ckpt.wait()
  ckpt.close()
  # What a process killed mid-save leaves behind: a temporary directory.
  tmp = os.path.join(tmp_path, "checkpoints", "2.orbax-checkpoint-tmp-123")
  os.makedirs(os.path.join(tmp, "state"))
  assert checkpoint.Checkpointer(tmp_path).latest_step() == 1


def test_load_params_npz_big_vision_conventions(tmp_path):
  bf16 = np.array([1.5, -2.0], dtype=jnp.bfloat16)
  path = tmp_path / "ckpt.npz"
  np.savez(path, **{
      "params/img/embedding/kernel": np.ones((2, 2), np.float32),
      "params/img/head/bias": bf16.view(np.dtype("V2")),
      "params/t": np.array([2.3], np.float32)})
  params = checkpoint.load_params(str(path))
  assert set(params) == {"img", "t"}
  assert params["img"]["head"]["bias"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(params["img"]["head"]["bias"].astype(np.float32),
                                [1.5, -2.0])
  img = checkpoint.load_params(f"{path}:img")
  assert set(img) == {"embedding", "head"}
  with pytest.raises(KeyError, match="no subtree 'txt'"):
    checkpoint.load_params(f"{path}:txt")
  with pytest.raises(FileNotFoundError, match="missing.npz"):
    checkpoint.load_params(str(tmp_path / "missing.npz"))


def test_load_params_from_workdir(tmp_path):
  mesh = sharding.make_mesh()
  state, _ = _state(mesh, scale=2.0)
  ckpt = checkpoint.Checkpointer(tmp_path)
  ckpt.save(5, state, {"step": 5})
  ckpt.wait()
  ckpt.close()
  for path in (tmp_path, tmp_path / "checkpoints",
               tmp_path / "checkpoints" / "5"):
    params = checkpoint.load_params(str(path))
    np.testing.assert_array_equal(params["w"], np.arange(32.0).reshape(8, 4) * 2)


def test_load_params_reads_only_the_params(tmp_path, monkeypatch):
  """The optimizer state (here a big `opt` leaf) is not restored."""
  state, _ = _state(sharding.make_mesh(), scale=2.0)
  state["opt"] = {"mu": jnp.ones((64, 64))}
  ckpt = checkpoint.Checkpointer(tmp_path)
  ckpt.save(1, state, {"step": 1})
  ckpt.close()
  restored = []
  real_restore = checkpoint.ocp.PyTreeCheckpointer.restore

  def spy(self, *args, **kwargs):
    out = real_restore(self, *args, **kwargs)
    restored.append(out)
    return out

  monkeypatch.setattr(checkpoint.ocp.PyTreeCheckpointer, "restore", spy)
  params = checkpoint.load_params(str(tmp_path))
  np.testing.assert_array_equal(params["w"], np.arange(32.0).reshape(8, 4) * 2)
  assert [sorted(tree) for tree in restored] == [["params"]]


def test_load_params_saved_on_other_devices(tmp_path):
  """A checkpoint saved sharded over 8 devices loads in a 1-device process."""
  state, _ = _state(sharding.make_mesh(), scale=3.0)
  ckpt = checkpoint.Checkpointer(tmp_path)
  ckpt.save(2, state, {"step": 2})
  ckpt.close()
  code = ("import jax, numpy as np; from big_vision_like import checkpoint; "
          f"w = checkpoint.load_params({str(tmp_path)!r})['w']; "
          "print(jax.device_count(), type(w).__name__, float(np.sum(w)))")
  env = {**os.environ,
         "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                       capture_output=True, text=True).stdout.split()
  assert out[-3:] == ["1", "ndarray", str(3.0 * sum(range(32)))]
