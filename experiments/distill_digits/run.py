"""The distill_digits study: a student distilled from a teacher vs alone.

Usage (from the repository root):

  .venv/bin/python experiments/distill_digits/run.py [OUT_DIR] \
      [--steps=1000] [--temperature=1.0] [--task_weight=0.0]

Trains the teacher of configs/distill_digits.py once (`:teacher`, skipped if
OUT_DIR/teacher has finished), then the student with and without the teacher
for seeds 0, 1, 2 under the same budget, in this one process. After each
distilled run it checks that the teacher's params in the final train state
are bitwise those of the teacher's checkpoint, and at the end that the
checkpoint itself is unchanged. Prints the README's table and writes
OUT_DIR/results_<variant>.json. Runs already finished are not retrained
(the trainer resumes them), so a second variant reuses the students alone.
"""

import importlib.util
import json
import os
import sys
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from big_vision_like import checkpoint  # noqa: E402
from big_vision_like import distill  # noqa: E402
from big_vision_like import train  # noqa: E402
from big_vision_like.metrics import read_jsonl  # noqa: E402


def config(arg):
  spec = importlib.util.spec_from_file_location(
      "distill_digits", os.path.join(ROOT, "configs", "distill_digits.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def final(workdir, key):
  rows = [r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))
          if key in r]
  return rows[-1][key] if rows else None


def main(out, steps, temperature, task_weight):
  os.makedirs(out, exist_ok=True)
  teacher_dir = os.path.join(out, "teacher")
  t0 = time.time()
  train.train_and_evaluate(config("teacher"), teacher_dir)
  teacher_sec = final(teacher_dir, "elapsed_sec")
  ckpt = os.path.join(teacher_dir, "checkpoints", "1500")
  before = checkpoint.load_params(ckpt)
  fp_before = distill.fingerprint(before)
  results = {"teacher": {"test_prec@1": final(teacher_dir, "test/prec@1"),
                         "train_sec": teacher_sec, "fingerprint": fp_before},
             "runs": []}
  for seed in (0, 1, 2):
    for distilled in (False, True):
      variant = f"_T{temperature:g}_task{task_weight:g}" if distilled else ""
      name = f"{'distilled' if distilled else 'alone'}{variant}_seed{seed}"
      cfg = config(f"steps={steps},distill={distilled},teacher_init={ckpt},"
                   f"temperature={temperature},task_weight={task_weight}")
      cfg.seed = seed
      workdir = os.path.join(out, f"steps{steps}", name)
      state, _ = train.train_and_evaluate(cfg, workdir)
      row = {"name": name, "seed": seed, "distilled": distilled,
             "test_prec@1": final(workdir, "test/prec@1"),
             "train_sec": final(workdir, "elapsed_sec")}
      if distilled:
        after = jax.device_get(state[distill.TEACHER])
        same = jax.tree.map(lambda a, b: a.dtype == b.dtype and
                            np.array_equal(a, b), before, after)
        row["teacher_bitwise_unchanged"] = all(jax.tree.leaves(same))
        row["agreement"] = final(workdir, "agreement/agreement")
      results["runs"].append(row)
      print(json.dumps(row), flush=True)
  results["teacher"]["checkpoint_unchanged"] = (
      distill.fingerprint(checkpoint.load_params(ckpt)) == fp_before)
  results["wall_sec"] = time.time() - t0
  results["variant"] = dict(steps=steps, temperature=temperature,
                            task_weight=task_weight)
  tag = f"steps{steps}_T{temperature:g}_task{task_weight:g}"
  with open(os.path.join(out, f"results_{tag}.json"), "w") as f:
    json.dump(results, f, indent=1)
  print_table(results)


def print_table(results):
  t, v = results["teacher"], results["variant"]
  steps = v["steps"]
  print(f"Teacher: test prec@1 {100 * t['test_prec@1']:.1f}%, "
        f"{t['train_sec']:.0f} s; checkpoint unchanged: "
        f"{t['checkpoint_unchanged']}.")
  print(f"| student, {steps} steps | seed 0 | seed 1 | seed 2 | mean | "
        "train s (mean) |")
  print("|---|---|---|---|---|---|")
  for distilled in (False, True):
    rows = [r for r in results["runs"] if r["distilled"] == distilled]
    accs = [100 * r["test_prec@1"] for r in rows]
    secs = np.mean([r["train_sec"] for r in rows])
    label = (f"distilled (KL T={v['temperature']:g}, task weight "
             f"{v['task_weight']:g})" if distilled else "alone (labels)")
    print(f"| {label} | " + " | ".join(f"{a:.1f}%" for a in accs)
          + f" | {np.mean(accs):.2f}% | {secs:.0f} |")
  agree = [r["agreement"] for r in results["runs"] if r["distilled"]]
  unchanged = all(r["teacher_bitwise_unchanged"] for r in results["runs"]
                  if r["distilled"])
  print("Student-teacher test agreement: "
        + ", ".join(f"{100 * a:.1f}%" for a in agree)
        + f"; teacher bitwise unchanged after every run: {unchanged}.")


if __name__ == "__main__":
  args = [a for a in sys.argv[1:] if not a.startswith("--")]
  flags = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
  main(args[0] if args else "workdirs/experiments/distill_digits",
       int(flags.get("steps", 1000)), float(flags.get("temperature", 1.0)),
       float(flags.get("task_weight", 0.0)))
