r"""Sigmoid (SigLIP) vs softmax (CLIP) loss across batch sizes, same budget.

  .venv/bin/python experiments/siglip_batch_size/run.py \
      [--out workdirs/experiments/siglip_batch_size] \
      [--batch_sizes 32,128,512] [--examples 131072] [--seeds 0]

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
import importlib.util
import json
import os

from big_vision_like import train

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LOSSES = ("sigmoid", "softmax")


def _config(loss, batch_size, examples, seed):
  spec = importlib.util.spec_from_file_location(
      "siglip_shapes", os.path.join(ROOT, "configs", "siglip_shapes.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(f"loss={loss}")
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


def table(rows):
  """Markdown table: zero-shot / Recall@1 per batch size and loss."""
  lines = ["| batch | steps | sigmoid zero-shot | softmax zero-shot | "
           "sigmoid i2t R@1 | softmax i2t R@1 |", "|---|---|---|---|---|---|"]
  for b in sorted({r["batch_size"] for r in rows}):
    get = lambda loss, k: [r[k] for r in rows  # noqa: E731
                           if r["batch_size"] == b and r["loss"] == loss]
    mean = lambda v: f"{100 * sum(v) / len(v):.1f}%" if v else "-"  # noqa: E731
    steps = get("sigmoid", "steps") or get("softmax", "steps")
    lines.append(
        f"| {b} | {steps[0]} | {mean(get('sigmoid', 'zeroshot'))} | "
        f"{mean(get('softmax', 'zeroshot'))} | "
        f"{mean(get('sigmoid', 'i2t_r1'))} | {mean(get('softmax', 'i2t_r1'))} |")
  return "\n".join(lines)


def plot(rows, path):
  """Zero-shot top-1 vs batch size, one line per loss (needs matplotlib)."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("matplotlib missing (pip install -e .[notebooks]): no plot.")
    return
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for loss in LOSSES:
    pts = sorted((r["batch_size"], r["zeroshot"]) for r in rows
                 if r["loss"] == loss)
    ax.plot([b for b, _ in pts], [100 * z for _, z in pts], "o-", label=loss)
  ax.set_xscale("log", base=2)
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
  parser.add_argument("--examples", type=int, default=131072)
  parser.add_argument("--seeds", default="0")
  args = parser.parse_args()
  rows = run_all(args.out, [int(b) for b in args.batch_sizes.split(",")],
                 args.examples, [int(s) for s in args.seeds.split(",")])
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(rows, f, indent=1)
  print(table(rows))
  plot(rows, os.path.join(HERE, "zeroshot_vs_batch.png"))


if __name__ == "__main__":
  main()
