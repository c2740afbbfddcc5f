r"""ViT-S/16 train steps, each in its own process: model x host memory x devices.

  python experiments/cpu_speed/own_processes.py --big_vision_dir ~/big_vision
  # The four rows of the host-memory comparison (one CPU device each):
  python experiments/cpu_speed/own_processes.py --big_vision_dir ~/big_vision \
      --rows big_vision:default:1,big_vision:keep:1,ours:default:1,ours:keep:1

Each row `MODEL:HOST_MEMORY:DEVICES` is a step server (`tools/jax_step.py`):
MODEL `big_vision` (google-research/big_vision's ViT, from the checkout) or
`ours`; HOST_MEMORY `default` (glibc's malloc defaults, as big_vision runs)
or `keep` (`host_memory`); DEVICES the CPU devices (`auto` or N,
`cpu_devices`). The servers are timed in turn, one step each, round after
round; no process is the driver's, so none is favoured by the order or by
sharing the driver's memory. Prints examples/s (median) and each row's
ratio to the first. The default rows: big_vision as big_vision runs it, our
step before `host_memory` and `cpu_devices`, with `host_memory` only, and as
the project runs now.
"""

import argparse

from big_vision_like.tools import benchmark

DEFAULT_ROWS = "big_vision:default:1,ours:default:1,ours:keep:1,ours:keep:auto"


def parse_rows(text):
  """"MODEL:HOST_MEMORY:DEVICES,..." -> [(model, host_memory, devices)]."""
  rows = []
  for row in text.split(","):
    parts = row.split(":")
    if (len(parts) != 3 or parts[0] not in ("big_vision", "ours")
        or parts[1] not in ("default", "keep")
        or not (parts[2] == "auto" or parts[2].isdigit())):
      raise ValueError(f"--rows {row!r}: expected MODEL:HOST_MEMORY:DEVICES "
                       "with MODEL big_vision|ours, HOST_MEMORY default|keep, "
                       "DEVICES auto|N.")
    rows.append(tuple(parts))
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--big_vision_dir", default=None)
  parser.add_argument("--variant", default="S/16")
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--rows", default=DEFAULT_ROWS)
  args = parser.parse_args()
  rows = parse_rows(args.rows)
  if any(m == "big_vision" for m, _, _ in rows) and not args.big_vision_dir:
    parser.error("rows of big_vision's model need --big_vision_dir.")
  servers = {}
  try:
    for model, mode, devices in rows:
      spec = ("big_vision:" if model == "big_vision" else "") + (
          f"vit:{args.variant}")
      servers[(model, mode, devices)] = benchmark.jax_step(
          spec, args.batch_size, 224, "float32", model,
          big_vision_dir=args.big_vision_dir, host_memory_mode=mode,
          devices=devices)
    sec = benchmark.time_in_turn([(k, s.run) for k, s in servers.items()],
                                 args.steps)
  finally:
    for s in servers.values():
      s.close()
  rate = {k: args.batch_size / t for k, t in sec.items()}
  first = rate[rows[0]]
  print("| step (own process) | examples/s | / first row |\n|---|---|---|")
  for k, r in rate.items():
    print(f"| {servers[k].name} | {r:.2f} | {r / first:.2f}x |")


if __name__ == "__main__":
  main()
