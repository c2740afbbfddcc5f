r"""Sigmoid (SigLIP) vs softmax (CLIP) loss across batch sizes, same budget.

  .venv/bin/python experiments/siglip_batch_size/run.py \
      [--out workdirs/experiments/siglip_batch_size] \
      [--batch_sizes 32,128,512] [--examples 393216] [--seeds 0,1,2]

Trains `configs/siglip_shapes.py` (both towers from scratch on the built-in
`bvl_shapes` captions) with each loss and each global batch size for the same
number of training examples (so a smaller batch takes more, smaller steps),
the demo's recipe, and the demo's share of warmup steps, then reports the
zero-shot top-1 over the 24 colour x shape classes and the de-duplicated
image-to-text Recall@1 on the 1,000 test images. Runs that already finished
in `--out` are reused (the trainer resumes). Writes `results.json`, prints a
markdown table and saves `zeroshot_vs_batch.png` (with matplotlib, from the
`notebooks` extra) next to this file.
"""

import argparse
import json
import os

from big_vision_like import config as config_lib
from big_vision_like import train

HERE = os.path.dirname(os.path.abspath(__file__))
LOSSES = ("sigmoid", "softmax")


def _config(loss, batch_size, examples, seed):
  c = config_lib.load("siglip_shapes", f"loss={loss}")
  c.seed = seed
  # The demo's recipe (learning rate, towers, optimizer); only the batch size
  # and the step count change, and the warmup keeps the demo's share of the
  # steps (600 of 3,100).
  demo_steps, demo_warmup = c.total_steps, c.schedule.warmup_steps
  c.total_steps = max(1, examples // batch_size)
  c.input.batch_size = batch_size
  c.schedule.warmup_steps = max(1, c.total_steps * demo_warmup // demo_steps)
  c.log_training_steps = max(1, c.total_steps // 10)
  c.ckpt_steps = c.total_steps
  for ev in c.evals.values():
    ev.log_steps = c.total_steps  # Only at the end.
  return c


def run_all(out, batch_sizes, examples, seeds):
  """Trains every (loss, batch size, seed); returns a list of result rows."""
  rows = []
  for seed in seeds:
    for batch_size in batch_sizes:
      for loss in LOSSES:
        name = f"{loss}_b{batch_size}_s{seed}"
        config = _config(loss, batch_size, examples, seed)
        _, res = train.train_and_evaluate(config, os.path.join(out, name))
        rows.append({
            "loss": loss, "batch_size": batch_size, "seed": seed,
            "steps": config.total_steps,
            "zeroshot": res["zeroshot/prec@1"],
            "i2t_r1": res["retrieval/dedup_i2t_recall@1"],
            "train_sec": res.get("elapsed_sec"),
        })
        print(json.dumps(rows[-1]), flush=True)
  return rows


def _cell(values):
  """Mean over seeds, with the range when there are several: 89.0% (88.6-89.4)."""
  if not values:
    return "-"
  mean = f"{100 * sum(values) / len(values):.1f}%"
  if len(values) == 1:
    return mean
  return f"{mean} ({100 * min(values):.1f}-{100 * max(values):.1f})"


def table(rows):
  """Markdown table: zero-shot / Recall@1 per batch size and loss, each cell
  the mean over seeds and their range."""
  seeds = len({r["seed"] for r in rows})
  lines = [f"Mean over {seeds} seed{'s' if seeds > 1 else ''} (range):", "",
           "| batch | steps | sigmoid zero-shot | softmax zero-shot | "
           "sigmoid i2t R@1 | softmax i2t R@1 |", "|---|---|---|---|---|---|"]
  for b in sorted({r["batch_size"] for r in rows}):
    get = lambda loss, k: [r[k] for r in rows  # noqa: E731
                           if r["batch_size"] == b and r["loss"] == loss]
    steps = get("sigmoid", "steps") or get("softmax", "steps")
    lines.append(
        f"| {b} | {steps[0]} | {_cell(get('sigmoid', 'zeroshot'))} | "
        f"{_cell(get('softmax', 'zeroshot'))} | "
        f"{_cell(get('sigmoid', 'i2t_r1'))} | {_cell(get('softmax', 'i2t_r1'))} |")
  return "\n".join(lines)


def plot(rows, path):
  """Zero-shot top-1 vs batch size: per loss the mean over seeds (line) and
  each seed (dots). Needs matplotlib."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("matplotlib missing (pip install -e .[notebooks]): no plot.")
    return
  fig, ax = plt.subplots(figsize=(5, 3.5))
  seeds = len({r["seed"] for r in rows})
  for loss, color in zip(LOSSES, ("C0", "C1")):
    runs = [r for r in rows if r["loss"] == loss]
    sizes = sorted({r["batch_size"] for r in runs})
    means = [100 * sum(r["zeroshot"] for r in runs if r["batch_size"] == b) /
             sum(1 for r in runs if r["batch_size"] == b) for b in sizes]
    ax.plot(sizes, means, "o-", color=color,
            label=f"{loss} (mean of {seeds} seed{'s' if seeds > 1 else ''})")
    ax.scatter([r["batch_size"] for r in runs],
               [100 * r["zeroshot"] for r in runs], s=12, color=color,
               alpha=0.5)
  ax.set_xscale("log", base=2)
  ax.set_xticks(sorted({r["batch_size"] for r in rows}))
  ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
  ax.set_xlabel("global batch size (same number of examples)")
  ax.set_ylabel("zero-shot top-1 (%)")
  ax.set_title("bvl_shapes, two towers from scratch")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  print(f"Plot: {path}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="workdirs/experiments/siglip_batch_size")
  parser.add_argument("--batch_sizes", default="32,128,512")
  parser.add_argument("--examples", type=int, default=393216)
  parser.add_argument("--seeds", default="0,1,2")
  args = parser.parse_args()
  rows = run_all(args.out, [int(b) for b in args.batch_sizes.split(",")],
                 args.examples, [int(s) for s in args.seeds.split(",")])
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(rows, f, indent=1)
  print(table(rows))
  plot(rows, os.path.join(HERE, "zeroshot_vs_batch.png"))


if __name__ == "__main__":
  main()
