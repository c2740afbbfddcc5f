r"""Fault injection: finished runs' exit codes, and SIGKILL/SIGTERM at random.

  .venv/bin/python experiments/fault_injection/run.py exits --runs 30
  .venv/bin/python experiments/fault_injection/run.py kills --runs 10
  .venv/bin/python experiments/fault_injection/run.py terms --runs 5

Every run is the tiny digits ViT of `tests/test_faults.py` (width 16, depth
1, batch 32, 300 steps, one CPU device) in a subprocess, in a fresh temporary
workdir.

- `exits`: finished runs, cycling through three kinds: a fresh run; a rerun
  of a finished workdir ("already complete", evaluators only); a resume
  (a 150-step run extended to 300). Counts exit codes (any abort at
  interpreter exit shows as 134 / SIGABRT).
- `kills`: a run with a checkpoint every 20 steps is SIGKILLed 0-0.2 s
  after a random logged step in 20..280 (every other one starts a
  checkpoint, so some kills land while one is being written), then rerun
  to the end; the final params must equal an uninterrupted run's (max
  |diff| reported).
- `terms`: as `kills` with SIGTERM and no periodic checkpoint; the run must
  exit 143 within 60 s, leaving a checkpoint of the step it was at.

Prints one line per run and a summary.
"""

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
sys.path.insert(0, ROOT)

from big_vision_like import checkpoint  # noqa: E402  pylint: disable=C0413

ARGS = ["--config=configs/vit_digits.py:short,tune",
        "--config.input.batch_size=32", "--config.model.width=16",
        "--config.model.depth=1", "--config.model.mlp_dim=32",
        "--config.model.num_heads=2", "--config.log_training_steps=10",
        "--config.evals.validation.log_steps=150"]


def _cmd(workdir, steps=300, ckpt_steps=20):
  extra = [f"--config.total_steps={steps}",
           f"--config.ckpt_steps={ckpt_steps}"]
  return [sys.executable, "-m", "big_vision_like.train", *ARGS, *extra,
          f"--workdir={workdir}"]


def _env():
  return {**os.environ, "PYTHONPATH": ROOT,
          "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


def _run(cmd):
  out = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
  return out.returncode, out.stderr


def _max_diff(a, b):
  return max(float(np.max(np.abs(x - y))) for x, y in
             zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def exits(runs, tmp):
  codes = []
  for i in range(runs):
    workdir = os.path.join(tmp, f"exit{i}")
    kind = ("fresh", "rerun-finished", "resume")[i % 3]
    if kind == "rerun-finished":
      _run(_cmd(workdir))
    if kind == "resume":
      _run(_cmd(workdir, steps=150))
    t0 = time.time()
    rc, err = _run(_cmd(workdir))
    codes.append(rc)
    print(f"run {i + 1:2d} {kind:15s} exit {rc} ({time.time() - t0:.0f}s)"
          + ("" if rc == 0 else f"\n{err[-2000:]}"), flush=True)
    shutil.rmtree(workdir)
  print(f"{codes.count(0)} of {runs} finished runs exited 0; others: "
        f"{[c for c in codes if c]}")


def _start(workdir, ckpt_steps):
  """Starts a run; returns (process, seconds until its first step)."""
  t0 = time.time()
  proc = subprocess.Popen(_cmd(workdir, ckpt_steps=ckpt_steps), env=_env(),
                          cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  while not os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    time.sleep(0.01)
  return proc, time.time() - t0


def _wait_for_step(workdir, step, proc):
  path = os.path.join(workdir, "metrics.jsonl")
  while True:
    assert proc.poll() is None, f"the run ended before step {step}"
    with open(path) as f:
      if f'"step": {step},' in f.read():
        return
    time.sleep(0.005)


def interrupts(runs, tmp, sig):
  ref = os.path.join(tmp, "reference")
  proc, _ = _start(ref, 100)
  assert proc.wait() == 0
  want = checkpoint.load_params(ref)
  ckpt_steps = 20 if sig == signal.SIGKILL else 0  # 0: none periodic.
  worst, bad = 0.0, 0
  rng = random.Random(0)
  for i in range(runs):
    workdir = os.path.join(tmp, f"run{i}")
    proc, _ = _start(workdir, ckpt_steps)
    target = rng.randrange(20, 290, 10)  # A logged step; every other one
    _wait_for_step(workdir, target, proc)  # starts a checkpoint (kills).
    delay = rng.uniform(0.0, 0.2)
    time.sleep(delay)
    proc.send_signal(sig)
    t_sig = time.time()
    _, err = proc.communicate(timeout=120)
    exit_s = time.time() - t_sig
    names = (os.listdir(os.path.join(workdir, "checkpoints"))
             if os.path.isdir(os.path.join(workdir, "checkpoints")) else [])
    ckpts = sorted(int(s) for s in names if s.isdigit())
    partial = [s for s in names if not s.isdigit()]  # Being written.
    rc2, err2 = _run(_cmd(workdir, ckpt_steps=ckpt_steps))
    diff = _max_diff(checkpoint.load_params(workdir), want) if rc2 == 0 else -1
    ok = rc2 == 0 and 0 <= diff <= 1e-6 and (
        sig == signal.SIGKILL or (proc.returncode == 128 + sig and exit_s < 60))
    bad += not ok
    worst = max(worst, diff)
    print(f"run {i + 1:2d} {signal.Signals(sig).name} {delay:.2f}s after "
          f"step {target}: exit "
          f"{proc.returncode} after {exit_s:.1f}s, checkpoints {ckpts}"
          f"{' + one being written' if partial else ''}, "
          f"rerun exit {rc2}, max |params - uninterrupted| {diff:.2g}"
          + ("" if ok else f"  FAILED\n{err[-1500:]}\n{err2[-1500:]}"),
          flush=True)
    shutil.rmtree(workdir)
  print(f"{runs - bad} of {runs} interrupted runs resumed to the "
        f"uninterrupted params (worst max |diff| {worst:.2g}).")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("mode", choices=["exits", "kills", "terms"])
  parser.add_argument("--runs", type=int, default=10)
  args = parser.parse_args()
  tmp = tempfile.mkdtemp(prefix="bvl_faults_")
  os.environ.setdefault("BVL_DATA_DIR", os.path.join(tmp, "data"))
  try:
    if args.mode == "exits":
      exits(args.runs, tmp)
    else:
      interrupts(args.runs, tmp, {"kills": signal.SIGKILL,
                                  "terms": signal.SIGTERM}[args.mode])
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
