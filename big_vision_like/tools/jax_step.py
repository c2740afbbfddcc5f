r"""Our JAX train step, timed one step per request (`benchmark.py --compare`).

  python -m big_vision_like.tools.jax_step --model vit:S/16 --batch_size 16
  # google-research/big_vision's own ViT in our step, from a checkout:
  python -m big_vision_like.tools.jax_step --model big_vision:vit:S/16 \
      --big_vision_dir ~/big_vision --batch_size 16

The protocol of `tools/torch_step.py`: prints `ready` followed by how this
process holds host memory (`host_memory.STATE`, which the environment's
`BIG_VISION_LIKE_HOST_MEMORY` decides) and its CPU devices (`--cpu_devices`,
"auto" or N, default 1 as JAX's default) once the step has run, then answers
each line read from stdin with the seconds of one more train step
(`benchmark.build_step`: forward, backward, softmax cross-entropy, AdamW).
"""

import argparse
import sys

from big_vision_like import cpu_devices
from big_vision_like import host_memory
from big_vision_like.tools import benchmark


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", required=True,
                      help="name:variant, or big_vision:vit:VARIANT.")
  parser.add_argument("--batch_size", type=int, required=True)
  parser.add_argument("--res", type=int, default=224)
  parser.add_argument("--dtype_mm", default="float32")
  parser.add_argument("--big_vision_dir", default=None)
  parser.add_argument("--attention_impl", default=None)
  parser.add_argument("--cpu_devices", default="1")
  args = parser.parse_args(argv)
  try:
    cpu_devices.configure(cpu_devices.parse(args.cpu_devices),
                          batch_sizes=[args.batch_size])
  except ValueError as e:
    parser.error(str(e))
  spec = args.model
  theirs = spec.startswith("big_vision:")
  name, _, variant = spec.removeprefix("big_vision:").partition(":")
  if theirs and name != "vit":
    parser.error(f"--model {spec}: big_vision's model here is its ViT "
                 "(big_vision:vit:VARIANT).")
  kw = {"attention_impl": args.attention_impl} if args.attention_impl else {}
  if theirs:
    kw = {"model": benchmark.big_vision_vit(variant, args.dtype_mm,
                                            args.big_vision_dir)}
  run, _flops = benchmark.build_step(name, variant or None, args.res,
                                     args.batch_size, args.dtype_mm, **kw)
  print(f"ready host memory {host_memory.STATE}; CPU devices "
        f"{cpu_devices.STATE}", flush=True)
  for _line in sys.stdin:
    print(run(), flush=True)


if __name__ == "__main__":
  main()
