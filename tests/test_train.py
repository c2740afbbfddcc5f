"""End-to-end tests of the trainer: 8 devices, resume, several processes.

Every run uses the digits config with a few steps of a tiny ViT. Faults
(SIGTERM, SIGKILL, damaged checkpoints) are in test_faults.py.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from big_vision_like import checkpoint
from big_vision_like import train
from big_vision_like.metrics import read_jsonl
from big_vision_like.tools import trace_summary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "vit_digits.py")


def tiny_config(arg="short,tune", **overrides):
  """The digits config, shrunk: 12 steps, width 16, depth 1."""
  cfg = _load_config(arg)
  cfg.total_steps = 12
  cfg.input.batch_size = 32
  cfg.model = dict(num_classes=10, patch_size=(4, 4), width=16, depth=1,
                   mlp_dim=32, num_heads=2, pool_type="gap")
  cfg.log_training_steps = 4
  cfg.ckpt_steps = 6
  cfg.evals.validation.log_steps = 6
  if "validation_ema" in cfg.evals:
    cfg.evals.validation_ema.log_steps = 6
  for key, value in overrides.items():
    cfg[key] = value
  return cfg


def _load_config(arg):
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("vit_digits", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _params_np(state, key="params"):
  return jax.tree.map(np.asarray, jax.device_get(state[key]))


def _assert_trees_close(a, b, **kw):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **kw), a, b)


def test_train_evaluate_and_resume_on_8_devices(tmp_path):
  """With 2 micro-batches a step and a weight EMA, evaluated too."""
  assert jax.device_count() == 8
  arg = "short,tune,ema=0.9,grad_accum=2"
  state, results = train.train_and_evaluate(tiny_config(arg),
                                            str(tmp_path / "a"))
  assert int(state["step"]) == 12
  assert 0 <= results["validation/prec@1"] <= 1 and np.isfinite(results["train/loss"])
  assert results["validation_ema/prec@1"] != results["validation/prec@1"] or (
      results["validation_ema/loss"] != results["validation/loss"])
  logged = read_jsonl(os.path.join(tmp_path, "a", "metrics.jsonl"))
  assert [r["step"] for r in logged if "train/loss" in r] == [4, 8, 12]
  assert any("compile_sec" in r for r in logged)
  assert any("validation/prec@1" in r and r["step"] == 6 for r in logged)
  assert os.listdir(os.path.join(tmp_path, "a", "tensorboard"))

  # Interrupted after the step-6 checkpoint: resume must give the same end.
  workdir = str(tmp_path / "b")
  train.train_and_evaluate(tiny_config(arg), workdir)
  ckpt = checkpoint.Checkpointer(workdir)
  assert ckpt.all_steps() == [6, 12]
  ckpt.close()
  os.system(f"rm -rf {workdir}/checkpoints/12")
  resumed, _ = train.train_and_evaluate(tiny_config(arg), workdir)
  assert int(resumed["step"]) == 12
  for key in ("params", "ema"):
    _assert_trees_close(_params_np(resumed, key), _params_np(state, key),
                        rtol=1e-5, atol=1e-6)


def test_fsdp_rules_match_replicated_training(tmp_path):
  cfg = tiny_config(sharding_rules=[(".*", "fsdp")], total_steps=4)
  cfg.evals = {}
  fsdp, _ = train.train_and_evaluate(cfg, str(tmp_path / "fsdp"))
  kernel = fsdp["params"]["Transformer"]["encoderblock_0"]["MlpBlock_0"][
      "Dense_0"]["kernel"]
  assert kernel.sharding.spec != jax.sharding.PartitionSpec()
  cfg.sharding_rules = [(".*", "replicate")]
  repl, _ = train.train_and_evaluate(cfg, str(tmp_path / "repl"))
  _assert_trees_close(_params_np(fsdp), _params_np(repl), rtol=1e-4,
                      atol=1e-5)


@pytest.mark.parametrize("mutate,error,match", [
    (lambda c: c.__setitem__("lrr", 1.0), KeyError, r"config\.lrr.*config\.lr"),
    (lambda c: c.input.__setitem__("shuffle_buffer", 1), KeyError,
     r"config\.input\.shuffle_buffer"),
    (lambda c: c.input.data.__setitem__("skip_bad", True), KeyError,
     r"config\.input\.data options \['skip_bad'\]"),
    (lambda c: c.input.data.__delitem__("split"), KeyError,
     r"config\.input\.data needs `split`"),
    (lambda c: c.model.__setitem__("widht", 8), KeyError,
     r"widht.*config\.model.*Did you mean \['width'\]"),
    (lambda c: c.__setitem__("loss_kw", {"smoothing": 0.1}), KeyError,
     r"config\.loss_kw.*smoothing.*label_smoothing"),
    (lambda c: c.__setitem__("loss", "softmax_xnet"), KeyError,
     r"Unknown loss 'softmax_xnet'"),
    (lambda c: c.evals.validation.__setitem__("toplk", 3), KeyError,
     r"toplk.*config\.evals\.validation"),
    (lambda c: c.__setitem__("total_epochs", 2), ValueError,
     r"total_steps, total_epochs"),
])
def test_bad_configs_name_the_problem(tmp_path, mutate, error, match):
  cfg = tiny_config()
  with cfg.unlocked():
    mutate(cfg)
  with pytest.raises(error, match=match):
    train.train_and_evaluate(cfg, str(tmp_path))


def test_mixup_and_cutmix_in_the_train_step(tmp_path):
  cfg = tiny_config(total_steps=4, mixup=dict(p=0.4), cutmix=dict(alpha=1.0))
  cfg.evals = {}
  state, results = train.train_and_evaluate(cfg, str(tmp_path / "mix"))
  assert int(state["step"]) == 4 and np.isfinite(results["train/loss"])
  plain, _ = train.train_and_evaluate(
      tiny_config(total_steps=4, evals={}), str(tmp_path / "plain"))
  # Mixing changes the training trajectory.
  assert not np.allclose(_params_np(state)["head"]["bias"],
                         _params_np(plain)["head"]["bias"])
  cfg.mixup = dict(alpha=0.4)
  with pytest.raises(ValueError, match=r"config\.mixup.*alpha"):
    train.train_and_evaluate(cfg, str(tmp_path / "bad"))


def test_non_finite_loss_stops_with_the_step(tmp_path):
  cfg = tiny_config(optax_name="sgd", lr=1e30, grad_clip_norm=None,
                    total_steps=8)
  cfg.schedule = dict(decay_type="constant", warmup_steps=0)
  with pytest.raises(FloatingPointError, match=r"step \d+"):
    train.train_and_evaluate(cfg, str(tmp_path))


def test_profiled_steps_and_their_hlo_sum_by_kind(tmp_path):
  cfg = tiny_config(total_steps=4, evals={},
                    profile=dict(first_step=2, num_steps=2))
  train.train_and_evaluate(cfg, str(tmp_path))
  profile = str(tmp_path / "profile")
  assert os.path.exists(os.path.join(profile, "train_step.hlo.txt"))
  with open(os.path.join(profile, "train_step.hlo.txt")) as f:
    hlo = f.read()
  kinds, _, _, _ = trace_summary.summarize(
      trace_summary.newest(profile, "*.trace.json.gz"), hlo, steps=2)
  # Per device (8 devices, 4 images each), in MACs per image: the stem
  # (16 patches of 4x4x1 pixels to width 16), then q/k/v/out projections,
  # attention's two [16,16]x[16,16] products, the MLP (16->32->16) and the
  # 10-way head; a step is 2x the stem (no image gradient) + 3x the rest.
  stem, rest = 16 * 16 * 16, 4 * 16**3 + 2 * 16**3 + 2 * 16 * 16 * 32 + 160
  assert kinds["matmul"]["flops"] == pytest.approx(4 * 2 * (2 * stem
                                                            + 3 * rest))
  assert kinds["collective"]["count"] >= 1  # The gradients' all-reduce.


# Subprocess tests: a clean environment with 1 CPU device per process.


def _env(devices=1):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["PYTHONPATH"] = ROOT
  return env


def _cmd(workdir, *extra, arg="short,tune"):
  return [sys.executable, "-m", "big_vision_like.train",
          f"--config={CONFIG}:{arg}", f"--workdir={workdir}",
          "--config.input.batch_size=32", "--config.model.width=16",
          "--config.model.depth=1", "--config.model.mlp_dim=32",
          "--config.model.num_heads=2", *extra]


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


CPU_DEVICES = """
import sys, jax
sys.path.insert(0, {root!r})
from tests.test_train import tiny_config
from big_vision_like import train
train.train_and_evaluate(tiny_config(total_steps=2, log_training_steps=1,
                                     evals={{}}, cpu_devices=2), {wd!r})
print("devices", jax.device_count())
"""


def test_the_trainer_splits_a_cpu_host_into_the_devices_asked_for(tmp_path):
  """config.cpu_devices sets the count before JAX starts (no XLA_FLAGS)."""
  env = {k: v for k, v in _env().items() if k != "XLA_FLAGS"}
  out = subprocess.run(
      [sys.executable, "-c", CPU_DEVICES.format(root=ROOT, wd=str(tmp_path))],
      env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
      check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "Devices: 2 x cpu (cpu_devices: 2 (requested))" in out.stdout
  assert out.stdout.strip().endswith("devices 2")
  assert [r["step"] for r in read_jsonl(str(tmp_path / "metrics.jsonl"))
          if "train/loss" in r] == [1, 2]


def test_command_line_sets_keys_the_config_file_leaves_to_defaults(tmp_path):
  # vit_digits.py (without :bf16) has no param_dtype and no ema: the
  # trainer's defaults; the command line sets both, a literal dict included.
  out = subprocess.run(
      _cmd(tmp_path, "--config.total_steps=2", "--config.param_dtype=bfloat16",
           "--config.ema={'decay': 0.5}"),
      env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=300,
      check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  params = checkpoint.load_params(str(tmp_path))
  assert {np.asarray(p).dtype.name for p in jax.tree.leaves(params)} == {
      "bfloat16"}
  ema = checkpoint.load_params(str(tmp_path), item="ema")
  assert jax.tree.structure(ema) == jax.tree.structure(params)


WORKER = """
import sys, json, numpy as np, jax
jax.distributed.initialize("127.0.0.1:{port}", num_processes=2,
                           process_id=int(sys.argv[1]))
sys.path.insert(0, {root!r})
from tests.test_train import tiny_config
from big_vision_like import train
state, results = train.train_and_evaluate(tiny_config(**{kw}), {wd!r})
from jax.experimental import multihost_utils
local = [np.asarray(a).tolist() for a in jax.tree.leaves(
    multihost_utils.process_allgather(state["params"], tiled=True))]
json.dump({{"params": local, "devices": jax.device_count(),
           "loss": results["train/loss"]}},
          open({wd!r} + f"/proc{{jax.process_index()}}.json", "w"))
"""

# One process on 2 devices, fed the global batches the two processes make:
# process i's share of each batch goes to device i, as in the 2-process run.
ONE_PROCESS_SAME_BATCHES = """
import sys, json, numpy as np, jax, tensorflow as tf
sys.path.insert(0, {root!r})
from tests.test_train import tiny_config
from big_vision_like import train

real = train._Setup.train_dataset

def two_shares(self, start_step, **overrides):
  shares = [real(self, start_step, process_index=i, process_count=2,
                 **overrides) for i in range(2)]
  return tf.data.Dataset.zip(tuple(shares)).map(
      lambda a, b: {{k: tf.concat([a[k], b[k]], 0) for k in a}})

train._Setup.train_dataset = two_shares
state, _ = train.train_and_evaluate(tiny_config(**{kw}), {wd!r})
json.dump({{"params": [np.asarray(a).tolist()
                      for a in jax.tree.leaves(state["params"])],
           "devices": jax.device_count()}}, open({wd!r} + "/one.json", "w"))
"""


@pytest.mark.slow
def test_two_processes_train_as_one_process_on_the_same_batches(tmp_path):
  """Also: model_init into params that FSDP spreads over both processes,
  and a profile of steps 2-3: each process's trace, read together."""
  pre = str(tmp_path / "pre")
  train.train_and_evaluate(tiny_config(total_steps=2, evals={}), pre)
  kw = dict(total_steps=6, sharding_rules=[(".*", "fsdp")], model_init=pre,
            profile=dict(first_step=2, num_steps=2))
  workdir, ref = str(tmp_path / "two"), str(tmp_path / "one")
  os.makedirs(workdir)
  script = WORKER.format(port=_free_port(), root=ROOT, wd=workdir, kw=kw)
  procs = [subprocess.Popen([sys.executable, "-c", script, str(i)],
                            env=_env(), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  procs.append(subprocess.Popen(
      [sys.executable, "-c", ONE_PROCESS_SAME_BATCHES.format(
          root=ROOT, wd=ref, kw=kw)],
      env=_env(devices=2), cwd=ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True))
  outs = [p.communicate(timeout=300)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  r0, r1 = (json.load(open(f"{workdir}/proc{i}.json")) for i in range(2))
  one = json.load(open(f"{ref}/one.json"))
  assert r0["devices"] == r1["devices"] == one["devices"] == 2
  assert r0["params"] == r1["params"]
  assert np.isfinite(r0["loss"])
  for a, b in zip(r0["params"], one["params"]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # Same host name, so without a folder per process one trace would
  # overwrite the other; read together they hold both devices' matmuls.
  found = trace_summary.traces(f"{workdir}/profile")
  assert len(found) == 2 and "process_1" in found[1], found
  with open(f"{workdir}/profile/train_step.hlo.txt") as f:
    kinds, _, _, _ = trace_summary.summarize(found, f.read(), steps=2)
  assert kinds["matmul"]["count"] > 0 and kinds["collective"]["count"] > 0


def test_model_init_transfers_params_except_the_head(tmp_path):
  cfg = tiny_config(total_steps=4, evals={})
  trained, _ = train.train_and_evaluate(cfg, str(tmp_path / "pre"))
  cfg = tiny_config(total_steps=1, evals={}, lr=0.0,
                    model_init=str(tmp_path / "pre"),
                    model_load=dict(dont_load=["head/.*"]))
  cfg.model["num_classes"] = 12  # A new head of another size.
  cfg.input.pp = cfg.input.pp.replace("onehot(10", "onehot(12")
  moved, _ = train.train_and_evaluate(cfg, str(tmp_path / "transfer"))
  before, after = _params_np(trained), _params_np(moved)
  np.testing.assert_array_equal(after["embedding"]["kernel"],
                                before["embedding"]["kernel"])
  assert after["head"]["kernel"].shape == (16, 12)
  cfg.model_load = dict(dont_load=[])
  with pytest.raises(ValueError, match="head/kernel"):
    train.train_and_evaluate(cfg, str(tmp_path / "bad"))


def test_weighted_mixture_trains_and_resumes(tmp_path):
  cfg = tiny_config(total_steps=6, evals={}, ckpt_steps=3)
  with cfg.unlocked():
    cfg.input.data = {}
    cfg.input.mixture = [dict(name="bvl_digits", split="train", weight=3.0),
                         dict(name="bvl_digits", split="validation",
                              weight=1.0)]
  state, results = train.train_and_evaluate(cfg, str(tmp_path / "a"))
  assert int(state["step"]) == 6 and np.isfinite(results["train/loss"])
  workdir = str(tmp_path / "b")
  train.train_and_evaluate(cfg, workdir)
  os.system(f"rm -rf {workdir}/checkpoints/6")
  resumed, _ = train.train_and_evaluate(cfg, workdir)
  _assert_trees_close(_params_np(resumed), _params_np(state), rtol=1e-5,
                      atol=1e-6)


@pytest.mark.slow
def test_bfloat16_training_of_the_digits_vit(tmp_path):
  """bf16 params, matmuls and Adam first moment still learn the digits.

  On one device, in a subprocess: with 8 simulated devices on 2 cores, the
  bf16 step's all-reduce can miss XLA:CPU's 40 s rendezvous timeout. With
  XLA's optimisations: unoptimised bf16 code is several times slower.
  """
  env = {**os.environ,
         "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  overrides = dict(total_steps=100, log_training_steps=100, ckpt_steps=100)
  overrides.update({"schedule.warmup_steps": 10,
                    "evals.validation.log_steps": 100})
  subprocess.run(
      [sys.executable, "-m", "big_vision_like.train",
       "--config", f"{CONFIG}:tune,bf16", "--workdir", str(tmp_path)]
      + [f"--config.{k}={v}" for k, v in overrides.items()],
      env=env, check=True, capture_output=True, timeout=600)
  final = [r for r in read_jsonl(str(tmp_path / "metrics.jsonl"))
           if "validation/prec@1" in r][-1]
  assert final["step"] == 100
  assert final["validation/prec@1"] >= 0.4, final  # 52.2% here; chance 10%
  params = checkpoint.load_params(str(tmp_path))
  assert {np.asarray(p).dtype.name for p in jax.tree.leaves(params)} == {
      "bfloat16"}
