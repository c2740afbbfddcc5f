r"""Our ViT train step as an earlier revision of this repository ran it.

  git archive 65e8951 big_vision_like | tar -x -C /tmp/rev
  PYTHONPATH=/tmp/rev python experiments/cpu_speed/step_at_revision.py \
      --variant S/16 --batch_size 16 [--dtype_mm bfloat16]

`own_processes.py` starts it for rows `ours@REV:default:N`. It speaks the
step-server protocol of `tools/jax_step.py` (prints `ready`, then the
seconds of one more step per line read), but builds the step from the
modules on PYTHONPATH with only what every revision since the trainer's
`step` module has (registry, optim, sharding, step): the revision's
benchmark module may lack `build_step`, and the present one imports modules
the revision lacks. The step is the benchmark's: the trainer's
`make_train_step`, softmax cross-entropy, AdamW, state replicated, batch
split over the devices.
"""

import argparse
import sys
import time

import jax
import jax.numpy as jnp

import big_vision_like
from big_vision_like import optim
from big_vision_like import sharding
from big_vision_like import step as step_lib
from big_vision_like.registry import LOSSES
from big_vision_like.registry import MODELS


def build(variant, batch_size, dtype_mm="float32", res=224):
  """`run()`: seconds of one more ViT train step, as `benchmark.build_step`."""
  mesh = sharding.make_mesh()
  model = MODELS.get("vit")(num_classes=1000, variant=variant,
                            dtype_mm=dtype_mm)
  images = jnp.zeros((batch_size, res, res, 3), jnp.float32)
  labels = jax.nn.one_hot(jnp.arange(batch_size) % 1000, 1000)
  params = jax.jit(model.init, static_argnames="train")(
      jax.random.key(0), images[:1], train=False)["params"]
  tx, scheds = optim.make_optimizer(
      {"optax_name": "adamw", "lr": 1e-3, "wd": 1e-4,
       "schedule": {"decay_type": "cosine", "warmup_steps": 10}},
      params, total_steps=1000, batch_size=batch_size)
  state = {"params": params, "opt": tx.init(params),
           "step": jnp.zeros([], jnp.int32)}
  state_sh = sharding.infer_shardings(state, [(".*", "replicate")], mesh)
  batch_sh = sharding.batch_sharding(mesh)
  box = [jax.device_put(state, state_sh), None]
  batch = jax.device_put({"image": images, "labels": labels}, batch_sh)
  step = jax.jit(
      step_lib.make_train_step(model, LOSSES.get("softmax_xent"), tx,
                               scheds[0][1], model_inputs=("image",), seed=0),
      in_shardings=(state_sh, batch_sh),
      out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=0)

  def run():
    t0 = time.perf_counter()
    box[:] = step(box[0], batch)
    jax.block_until_ready(box[1])
    return time.perf_counter() - t0

  run()  # Compiles.
  return run


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--variant", default="S/16")
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--dtype_mm", default="float32")
  args = parser.parse_args(argv)
  run = build(args.variant, args.batch_size, args.dtype_mm)
  tree = big_vision_like.__path__[0]
  try:  # An editable install may lend a module the revision lacks.
    from big_vision_like import host_memory  # pylint: disable=g-import-not-at-top
    has = host_memory.__file__.startswith(tree)
  except ImportError:
    has = False
  memory = (f"host memory {host_memory.STATE}" if has else
            "glibc's malloc defaults (no host_memory at this revision)")
  print(f"ready {memory}; {jax.device_count()} CPU device(s); package from "
        f"{tree}", flush=True)
  for _line in sys.stdin:
    print(run(), flush=True)


if __name__ == "__main__":
  main()
