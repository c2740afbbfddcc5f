"""Prints the held-out accuracy table of the digits runs in a directory."""

import glob
import os
import sys

from big_vision_like.metrics import read_jsonl


def main(out):
  print("| run | split evaluated | prec@1 at 500 / 1000 / 1500 steps | "
        "training seconds |")
  print("|---|---|---|---|")
  for path in sorted(glob.glob(os.path.join(out, "*", "metrics.jsonl"))):
    rows = read_jsonl(path)
    split = "validation" if any("validation/prec@1" in r for r in rows) else "test"
    accs = {r["step"]: r[f"{split}/prec@1"] for r in rows
            if f"{split}/prec@1" in r}
    secs = max(r.get("elapsed_sec", 0) for r in rows)
    accs = " / ".join(f"{100 * accs[s]:.1f}%" for s in (500, 1000, 1500)
                      if s in accs)
    name = os.path.basename(os.path.dirname(path))
    print(f"| {name} | {split} | {accs} | {secs:.0f} |")


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else "workdirs/experiments/digits_vit")
