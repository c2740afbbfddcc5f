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


def _place(tree, mesh):
  """`tree` on the devices, params FSDP-sharded; and its shardings."""
  sh = sharding.infer_shardings(tree, [("params/.*", "fsdp"),
                                       (".*", "replicate")], mesh)
  return jax.device_put(tree, sh), sh


def _state(mesh, scale=1.0):
  return _place({"params": {"w": jnp.arange(32.0).reshape(8, 4) * scale},
                 "step": jnp.array(3, jnp.int32)}, mesh)


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


# Damaged checkpoints, fallback, mismatches (fingerprints: test_checksums).


def _abstract(state, sh):
  return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      state, sh)


def _damage_largest_file(step_dir, nbytes=48):
  """Overwrites `nbytes` in the middle of the largest file under step_dir."""
  files = [os.path.join(d, f) for d, _, fs in os.walk(step_dir) for f in fs]
  largest = max(files, key=os.path.getsize)
  size = os.path.getsize(largest)
  with open(largest, "r+b") as f:
    f.seek(max(0, size // 2 - nbytes // 2))
    f.write(bytes(range(7, 7 + nbytes)))
  return largest


def _big_state(mesh, scale):
  rng = np.random.default_rng(1)
  return _place({"params": {"w": jnp.asarray(rng.normal(size=(128, 64))
                                             * scale, jnp.float32),
                            "b": jnp.zeros((64,))},
                 "step": jnp.array(3, jnp.int32)}, mesh)


def test_damaged_latest_checkpoint_falls_back_to_previous(tmp_path):
  mesh = sharding.make_mesh()
  ckpt = checkpoint.Checkpointer(tmp_path, keep_last=3)
  states = {}
  for step in (1, 2, 3):
    states[step], sh = _big_state(mesh, scale=float(step))
    ckpt.save(step, states[step], {"step": step})
  ckpt.wait()
  _damage_largest_file(os.path.join(ckpt.directory, "3"))
  with pytest.raises(checkpoint.CheckpointError, match=r"checkpoints/3"):
    checkpoint.load_params(str(tmp_path))  # The latest: an error, no garbage.
  logged = []
  step, restored, meta = ckpt.restore_latest(_abstract(states[3], sh),
                                             log=logged.append)
  assert step == 2 and meta == {"step": 2}
  np.testing.assert_array_equal(restored["params"]["w"],
                                states[2]["params"]["w"])
  assert len(logged) == 1 and "checkpoints/3" in logged[0]
  assert "damaged" in logged[0] or "cannot be restored" in logged[0]
  # Moved aside: the run can write step 3 again, and load_params reads 2.
  assert ckpt.all_steps() == [1, 2]
  assert os.path.isdir(os.path.join(tmp_path, "checkpoints_damaged", "3"))
  ckpt.save(3, states[3], {"step": 3})
  ckpt.close()
  np.testing.assert_array_equal(checkpoint.load_params(str(tmp_path))["w"],
                                states[3]["params"]["w"])


def test_damaged_meta_or_checksums_fall_back(tmp_path):
  mesh = sharding.make_mesh()
  ckpt = checkpoint.Checkpointer(tmp_path, keep_last=3)
  for step in (1, 2, 3):
    state, sh = _big_state(mesh, scale=float(step))
    ckpt.save(step, state, {"step": step, "config": "x" * 50})
  ckpt.wait()
  for step, item in ((3, "meta"), (2, "checksums")):
    with open(os.path.join(ckpt.directory, str(step), item, "metadata"),
              "r+b") as f:
      f.seek(20)
      f.write(b"\xff\xfe\x00garbage")
  logged = []
  step, _, meta = ckpt.restore_latest(_abstract(state, sh), log=logged.append)
  ckpt.close()
  assert step == 1 and meta["step"] == 1
  assert ["checkpoints/3" in logged[0], "checkpoints/2" in logged[1]] == [
      True, True]


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(tmp_path):
  mesh = sharding.make_mesh()
  state, sh = _big_state(mesh, scale=1.0)
  ckpt = checkpoint.Checkpointer(tmp_path)
  ckpt.save(1, state, {"step": 1})
  ckpt.wait()
  _damage_largest_file(os.path.join(ckpt.directory, "1"))
  with pytest.raises(checkpoint.CheckpointError, match=r"steps \[1\]"):
    ckpt.restore_latest(_abstract(state, sh), log=lambda _: None)
  ckpt.close()


def test_restore_into_another_model_names_the_arrays(tmp_path):
  mesh = sharding.make_mesh()
  state, sh = _big_state(mesh, scale=1.0)
  ckpt = checkpoint.Checkpointer(tmp_path)
  ckpt.save(1, state, {"step": 1})
  ckpt.wait()
  other = {"params": {"w": jnp.zeros((128, 32)), "c": jnp.zeros((2,))},
           "step": jnp.array(0, jnp.int32)}
  other_sh = sharding.infer_shardings(other, [(".*", "replicate")], mesh)
  with pytest.raises(checkpoint.CheckpointMismatchError) as e:
    ckpt.restore_latest(_abstract(other, other_sh))
  ckpt.close()
  msg = str(e.value)
  assert "params/w: checkpoint (128, 64) float32, config (128, 32)" in msg
  assert "params/c: not in the checkpoint" in msg
  assert "params/b: only in the checkpoint" in msg
  assert os.path.isdir(os.path.join(tmp_path, "checkpoints", "1"))  # Kept.


@pytest.mark.parametrize("content", [b"hello, this is text\n",
                                     b"PK\x03\x04garbage"])
def test_load_params_on_a_file_that_is_no_npz_names_it(tmp_path, content):
  path = tmp_path / "x.npz"
  path.write_bytes(content)
  with pytest.raises(checkpoint.CheckpointError, match=r"x\.npz") as e:
    checkpoint.load_params(str(path))
  assert "pickle" not in str(e.value)


def test_load_params_on_a_damaged_npz_names_it(tmp_path):
  path = tmp_path / "w.npz"
  np.savez(path, **{"params/w": np.arange(4096, dtype=np.float32)})
  _damage_largest_file(str(tmp_path))
  with pytest.raises(checkpoint.CheckpointError, match=r"w\.npz"):
    checkpoint.load_params(str(path))


def test_load_params_item_reads_the_ema(tmp_path):
  mesh = sharding.make_mesh()
  state, _ = _place({"params": {"w": jnp.ones((8, 4))},
                     "ema": {"w": jnp.full((8, 4), 0.5)},
                     "step": jnp.array(3, jnp.int32)}, mesh)
  ckpt = checkpoint.Checkpointer(tmp_path / "ema")
  ckpt.save(3, state, {"step": 3})
  ckpt.wait()
  ckpt.close()
  np.testing.assert_array_equal(
      checkpoint.load_params(str(tmp_path / "ema"), item="ema")["w"], 0.5)
  np.testing.assert_array_equal(
      checkpoint.load_params(str(tmp_path / "ema"))["w"], 1.0)
  plain, _ = _state(mesh)
  ckpt = checkpoint.Checkpointer(tmp_path / "plain")
  ckpt.save(3, plain, {"step": 3})
  ckpt.wait()
  ckpt.close()
  with pytest.raises(KeyError, match=r"has no 'ema' \(train with config.ema"):
    checkpoint.load_params(str(tmp_path / "plain"), item="ema")
  np.savez(tmp_path / "p.npz", w=np.zeros(2))
  with pytest.raises(ValueError, match="item='ema' is for orbax"):
    checkpoint.load_params(str(tmp_path / "p.npz"), item="ema")
