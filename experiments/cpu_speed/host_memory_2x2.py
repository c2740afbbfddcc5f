r"""ViT-S/16 train steps, model code x host memory, all in their own processes.

  python experiments/cpu_speed/host_memory_2x2.py --big_vision_dir ~/big_vision

Four step servers (`tools/jax_step.py`), timed in turn, one step each, round
after round: google-research/big_vision's ViT and ours, each with glibc's
malloc defaults (as big_vision runs) and with `host_memory`'s options. No
process is the driver's, so none is favoured by the order or by sharing the
driver's memory. Prints examples/s (median) and the ratios.
"""

import argparse

from big_vision_like.tools import benchmark


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--big_vision_dir", required=True)
  parser.add_argument("--variant", default="S/16")
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--steps", type=int, default=8)
  args = parser.parse_args()
  servers = {}
  try:
    for model in ("big_vision", "ours"):
      for mode in ("default", "keep"):
        spec = ("big_vision:" if model == "big_vision" else "") + (
            f"vit:{args.variant}")
        servers[(model, mode)] = benchmark.jax_step(
            spec, args.batch_size, 224, "float32", f"{model} {mode}",
            big_vision_dir=args.big_vision_dir, host_memory_mode=mode)
    sec = benchmark.time_in_turn([(k, s.run) for k, s in servers.items()],
                                 args.steps)
  finally:
    for s in servers.values():
      s.close()
  rate = {k: args.batch_size / t for k, t in sec.items()}
  print("| model | host memory | examples/s |\n|---|---|---|")
  for (model, mode), r in rate.items():
    print(f"| {model} | {servers[(model, mode)].name} | {r:.2f} |")
  ours = rate[("ours", "keep")]
  for k in (("big_vision", "default"), ("ours", "default"),
            ("big_vision", "keep")):
    print(f"ours (keep) / {k[0]} ({k[1]}): {ours / rate[k]:.2f}x")


if __name__ == "__main__":
  main()
