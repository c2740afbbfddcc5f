"""Faults a long run meets: exit codes, SIGTERM, SIGKILL, damaged checkpoints.

Each run is the tiny digits ViT of `test_train._cmd` in a subprocess with
one CPU device (two processes under `jax.distributed` for the multi-process
case); every rerun must end with the params of an uninterrupted run.
"""

import os
import signal
import subprocess
import time

import pytest

from big_vision_like import checkpoint
from big_vision_like import train
from big_vision_like.datasets import core as datasets_core
from big_vision_like.metrics import read_jsonl
from big_vision_like.registry import EVALUATORS
from tests.test_train import _assert_trees_close
from tests import test_train
from tests.test_train import _env
from tests.test_train import _free_port
from tests.test_train import _params_np
from tests.test_train import ROOT
from tests.test_train import tiny_config

# 300 steps (a few seconds of training): long enough to be interrupted. With
# a weight EMA (and its evaluator), which must resume exactly too.
ARG = "short,tune,ema=0.99"
EXTRA = ("--config.total_steps=300", "--config.log_training_steps=10",
         "--config.evals.validation.log_steps=150",
         "--config.evals.validation_ema.log_steps=150")
FATAL = ("Fatal Python error", "terminate called", "exception not rethrown")
# The tests of the reference run go to one pytest-xdist worker (`--dist
# loadgroup`), so that it is made once.
same_worker = pytest.mark.xdist_group("faults_reference")


def _cmd(workdir, *extra):
  return test_train._cmd(workdir, *extra, arg=ARG)  # pylint: disable=W0212


def _params_and_ema(workdir):
  return (checkpoint.load_params(workdir),
          checkpoint.load_params(workdir, item="ema"))


def _run(workdir, *extra, timeout=300):
  out = subprocess.run(_cmd(workdir, *EXTRA, *extra), env=_env(), cwd=ROOT,
                       capture_output=True, text=True, timeout=timeout)
  assert not any(f in out.stderr for f in FATAL), out.stderr[-3000:]
  return out


def _logged_steps(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  try:
    return [r["step"] for r in read_jsonl(path) if "train/loss" in r]
  except ValueError:  # A line being written.
    return []


def _wait_for(predicate, proc, what, timeout=240):
  deadline = time.time() + timeout
  while not predicate():
    assert proc.poll() is None, f"the run ended before {what}"
    assert time.time() < deadline, f"no {what} within {timeout}s"
    time.sleep(0.02)


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
  """Params and EMA of an uninterrupted 300-step run. Session-scoped: a
  module fixture is torn down (and its run made again) whenever the worker
  runs a test of another module between two of these."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  out = _run(workdir, "--config.ckpt_steps=100")
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir, _params_and_ema(workdir)


@same_worker
def test_a_rerun_of_a_finished_run_exits_0(reference):
  """(Finished and resumed runs exit 0: the reference and the tests below.)"""
  ref_dir, _ = reference
  out = _run(ref_dir)
  assert out.returncode == 0 and "Training already complete" in out.stdout


@same_worker
def test_sigterm_saves_the_step_in_flight_and_resumes_exactly(reference,
                                                              tmp_path):
  workdir = str(tmp_path / "term")
  no_ckpt = "--config.ckpt_steps=0"  # No periodic checkpoint.
  proc = subprocess.Popen(_cmd(workdir, *EXTRA, no_ckpt), env=_env(),
                          cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  _wait_for(lambda: 20 in _logged_steps(workdir), proc, "step 20")
  proc.send_signal(signal.SIGTERM)
  t0 = time.time()
  stdout, stderr = proc.communicate(timeout=60)
  assert time.time() - t0 < 60
  assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
  assert not any(f in stderr for f in FATAL), stderr[-3000:]
  steps = [int(s) for s in os.listdir(os.path.join(workdir, "checkpoints"))]
  assert len(steps) == 1 and 20 <= steps[0] < 300
  assert f"Stopped by SIGTERM after step {steps[0]}" in stdout
  out = _run(workdir, no_ckpt)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"Resumed from {workdir}/checkpoints/{steps[0]}" in out.stdout
  _assert_trees_close(_params_and_ema(workdir), reference[1],
                      rtol=1e-5, atol=1e-6)
  assert _logged_steps(workdir) == list(range(10, 301, 10))


@same_worker
def test_sigkill_mid_run_then_rerun_matches_uninterrupted(reference,
                                                          tmp_path):
  workdir = str(tmp_path / "killed")
  extra = ("--config.ckpt_steps=20",)
  proc = subprocess.Popen(_cmd(workdir, *EXTRA, *extra), env=_env(),
                          cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  _wait_for(lambda: os.path.isdir(os.path.join(workdir, "checkpoints", "40")),
            proc, "checkpoint 40")
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert max(_logged_steps(workdir)) < 300, "finished before it was killed"
  out = _run(workdir, *extra)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "Resumed from" in out.stdout
  _assert_trees_close(_params_and_ema(workdir), reference[1],
                      rtol=1e-5, atol=1e-6)
  # Records logged after the last checkpoint by the killed run are dropped.
  assert _logged_steps(workdir) == list(range(10, 301, 10))


def test_damaged_latest_checkpoint_resumes_from_the_previous(tmp_path,
                                                              capsys):
  cfg = tiny_config(ckpt_steps=4, keep_ckpt=3, evals={})
  state, _ = train.train_and_evaluate(cfg, str(tmp_path / "ref"))
  workdir = str(tmp_path / "damaged")
  train.train_and_evaluate(cfg, workdir)
  ckpts = os.path.join(workdir, "checkpoints")
  os.system(f"rm -rf {ckpts}/12")
  for name in ("state", "meta"):  # Overwrite bytes in its largest files.
    files = [os.path.join(d, f) for d, _, fs in
             os.walk(os.path.join(ckpts, "8", name)) for f in fs]
    largest = max(files, key=os.path.getsize)
    with open(largest, "r+b") as f:
      f.seek(os.path.getsize(largest) // 3)
      f.write(b"\x13" * 48)
  capsys.readouterr()
  resumed, _ = train.train_and_evaluate(cfg, workdir)
  out = capsys.readouterr()
  assert f"{ckpts}/8" in out.err and "Falling back" in out.err
  assert f"Resumed from {ckpts}/4" in out.out
  _assert_trees_close(_params_np(resumed), _params_np(state), rtol=1e-5,
                      atol=1e-6)
  assert os.path.isdir(os.path.join(workdir, "checkpoints_damaged", "8"))


def _distributed_cmds(workdir, port, *extra):
  return [_cmd(workdir, *EXTRA, "--config.total_steps=100", "--distributed",
               f"--coordinator_address=127.0.0.1:{port}",
               "--num_processes=2", f"--process_id={i}", *extra)
          for i in range(2)]


def _start(cmds):
  return [subprocess.Popen(c, env=_env(), cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True) for c in cmds]


def _finish(procs, timeout=300):
  try:
    return [p.communicate(timeout=timeout) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()


@pytest.mark.slow
def test_two_processes_sigterm_to_one_agree_on_the_step(tmp_path):
  """SIGTERM reaches one of two processes: both save the same step, stop."""
  datasets_core.get_source("bvl_digits")  # Prepare it before the processes.
  ref = str(tmp_path / "ref")
  procs = _start(_distributed_cmds(ref, _free_port()))
  for p, (_, err) in zip(procs, _finish(procs)):
    assert p.returncode == 0, err[-3000:]
  workdir = str(tmp_path / "term")
  procs = _start(_distributed_cmds(workdir, _free_port(),
                                   "--config.ckpt_steps=0"))
  try:
    _wait_for(lambda: 20 in _logged_steps(workdir), procs[0], "step 20")
    procs[1].send_signal(signal.SIGTERM)
  finally:
    outs = _finish(procs, timeout=60)
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert not any(f in err for f in FATAL), err[-3000:]
  steps = [int(s) for s in os.listdir(os.path.join(workdir, "checkpoints"))]
  assert len(steps) == 1 and 20 <= steps[0] < 100
  assert f"Stopped by SIGTERM after step {steps[0]}" in outs[0][0]
  procs = _start(_distributed_cmds(workdir, _free_port()))
  for p, (_, err) in zip(procs, _finish(procs)):
    assert p.returncode == 0, err[-3000:]
  _assert_trees_close(_params_and_ema(workdir), _params_and_ema(ref),
                      rtol=1e-5, atol=1e-6)
  assert _logged_steps(workdir) == list(range(10, 101, 10))


class _CrashingEvaluator:
  """An evaluator that fails, as a buggy user evaluator would."""

  def __init__(self, predict_fn, *, mesh, batch_size):
    del predict_fn, mesh, batch_size

  def run(self, train_state):
    del train_state
    raise RuntimeError("evaluator bug")


def test_a_crashing_final_evaluator_loses_no_checkpoint_or_log(tmp_path):
  if "bvl_test_crash" not in EVALUATORS:
    EVALUATORS.register("bvl_test_crash", _CrashingEvaluator)
  cfg = tiny_config(total_steps=8, ckpt_steps=0, log_training_steps=4)
  cfg.evals = {"crash": dict(type="bvl_test_crash", log_steps=8)}
  with pytest.raises(RuntimeError, match="evaluator bug"):
    train.train_and_evaluate(cfg, str(tmp_path))
  assert os.listdir(os.path.join(tmp_path, "checkpoints")) == ["8"]
  assert _logged_steps(str(tmp_path)) == [4, 8]  # Flushed and closed.
  cfg.evals = {}
  state, _ = train.train_and_evaluate(cfg, str(tmp_path))  # Nothing to redo.
  assert int(state["step"]) == 8
