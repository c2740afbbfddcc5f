r"""ViT-S/16 train steps, each in its own process: model x host memory x devices.

  python experiments/cpu_speed/own_processes.py --big_vision_dir ~/big_vision
  # The four rows of the host-memory comparison (one CPU device each):
  python experiments/cpu_speed/own_processes.py --big_vision_dir ~/big_vision \
      --rows big_vision:default:1,big_vision:keep:1,ours:default:1,ours:keep:1
  # Against the step as the project ran it when the speed issue was filed,
  # and timm's (the `torch` extra), all in one run:
  python experiments/cpu_speed/own_processes.py \
      --rows ours@65e8951:default:1,ours:keep:auto,timm:default:auto --steps 30

Each row `MODEL:HOST_MEMORY:DEVICES` is a step server (`tools/jax_step.py`):
MODEL `big_vision` (google-research/big_vision's ViT, from the checkout),
`ours`, `ours@REV`: this repository's package at git revision REV
(exported with `git archive` to a temporary folder and run by
`step_at_revision.py`: the model, optimizer and step of that revision, with
this process's jax), or `timm` (timm's model of the same size in eager
PyTorch, `tools/torch_step.py`, on all of torch's threads: DEVICES `auto`);
HOST_MEMORY `default` (glibc's malloc defaults, as
big_vision runs), `keep` or `keep_arenas` (`host_memory`; at a revision
without it, glibc's defaults whatever the row says, and the row's name says
so); DEVICES the CPU devices (`auto` or N, `cpu_devices`; N only for
`ours@REV`). The servers are timed in turn, one step each, round after
round; no process is the driver's, so none is favoured by the order or by
sharing the driver's memory; the first `--warmup` rounds are not counted (a
process's first steps after compiling are slower). `--dtype_mm bfloat16`
times every row with bfloat16 matmuls. Prints examples/s (median) and each
row's ratio to the first: the ratio of the medians, and the median and
range of the ratios of the steps of one round (the machine's speed drifts
between rounds, less within one).

The default rows: big_vision as big_vision runs it, our step before
`host_memory` and `cpu_devices`, with `host_memory` only, and as the
project runs now.
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

from big_vision_like import cpu_devices
from big_vision_like import host_memory
from big_vision_like.tools import benchmark

DEFAULT_ROWS = "big_vision:default:1,ours:default:1,ours:keep:1,ours:keep:auto"


def parse_rows(text):
  """"MODEL:HOST_MEMORY:DEVICES,..." -> [(model, host_memory, devices)]."""
  rows = []
  for row in text.split(","):
    parts = row.split(":")
    if (len(parts) != 3
        or not (parts[0] in ("big_vision", "ours", "timm")
                or parts[0].startswith("ours@") and len(parts[0]) > 5)
        or parts[1] not in host_memory.MODES[1:]
        or not (parts[2] == "auto" or parts[2].isdigit())
        or parts[0].startswith("ours@") and not parts[2].isdigit()
        or parts[0] == "timm" and parts[2] != "auto"):
      raise ValueError(f"--rows {row!r}: expected MODEL:HOST_MEMORY:DEVICES "
                       "with MODEL big_vision|ours|ours@REV|timm, HOST_MEMORY "
                       "default|keep|keep_arenas, DEVICES auto|N (N for "
                       "ours@REV, auto for timm).")
    rows.append(tuple(parts))
  return rows


def export_revision(rev, into):
  """This repository's `big_vision_like/` at git revision `rev`, under `into`."""
  repo = pathlib.Path(__file__).resolve().parents[2]
  archive = subprocess.run(
      ["git", "-C", str(repo), "archive", rev, "big_vision_like"],
      capture_output=True, check=False)
  if archive.returncode:
    raise ValueError(f"ours@{rev}: git archive failed: "
                     f"{archive.stderr.decode().strip()}")
  subprocess.run(["tar", "-x", "-C", into], input=archive.stdout, check=True)
  return into


def revision_step(rev, variant, batch_size, dtype_mm, mode, devices, tmp):
  """A step server of `step_at_revision.py` on the package at `rev`."""
  tree = export_revision(rev, tempfile.mkdtemp(dir=tmp))
  # The caller's other XLA flags stay; the device count is the row's.
  flags = cpu_devices.without_count_flag(os.environ.get("XLA_FLAGS"))
  env = {**os.environ, "PYTHONPATH": tree, host_memory.ENV: mode,
         "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count="
                      f"{devices}".strip()}
  script = pathlib.Path(__file__).with_name("step_at_revision.py")
  return benchmark.StepServer(
      [sys.executable, str(script), "--variant", variant,
       "--batch_size", str(batch_size), "--dtype_mm", dtype_mm],
      f"ours@{rev}", env=env)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--big_vision_dir", default=None)
  parser.add_argument("--variant", default="S/16")
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--dtype_mm", default="float32")
  parser.add_argument("--warmup", type=int, default=2,
                      help="Rounds run first and not counted.")
  parser.add_argument("--rows", default=DEFAULT_ROWS)
  args = parser.parse_args()
  try:
    rows = parse_rows(args.rows)
  except ValueError as e:
    parser.error(str(e))
  if any(m == "big_vision" for m, _, _ in rows) and not args.big_vision_dir:
    parser.error("rows of big_vision's model need --big_vision_dir.")
  servers = {}
  with tempfile.TemporaryDirectory() as tmp:
    try:
      for model, mode, devices in rows:
        if model.startswith("ours@"):
          try:
            server = revision_step(model[5:], args.variant, args.batch_size,
                                   args.dtype_mm, mode, devices, tmp)
          except ValueError as e:
            parser.error(str(e))
        elif model == "timm":
          server = benchmark.timm_step(f"vit:{args.variant}", args.batch_size,
                                       224, args.dtype_mm,
                                       host_memory_mode=mode)
        else:
          spec = ("big_vision:" if model == "big_vision" else "") + (
              f"vit:{args.variant}")
          server = benchmark.jax_step(
              spec, args.batch_size, 224, args.dtype_mm, model,
              big_vision_dir=args.big_vision_dir, host_memory_mode=mode,
              devices=devices)
        servers[(model, mode, devices)] = server
      runners = [(k, s.run) for k, s in servers.items()]
      benchmark.times_in_turn(runners, args.warmup)
      times = benchmark.times_in_turn(runners, args.steps)
    finally:
      for s in servers.values():
        s.close()
  first = np.asarray(times[rows[0]])
  print("| step (own process) | examples/s | / first row | per round: "
        "median [min, max] |\n|---|---|---|---|")
  for k, t in times.items():
    per_round = first / np.asarray(t)
    print(f"| {servers[k].name} | {args.batch_size / np.median(t):.2f} | "
          f"{np.median(first) / np.median(t):.2f}x | "
          f"{np.median(per_round):.2f}x [{per_round.min():.2f}, "
          f"{per_round.max():.2f}] |")


if __name__ == "__main__":
  main()
