r"""LiT: a locked image tower, a text tower trained against it, on shapes.

"LiT: Zero-Shot Transfer with Locked-image text Tuning" (Zhai et al. 2022):
the image tower is loaded from a checkpoint and frozen (no gradient is
computed for it and it has no optimizer state); only the text tower, the
temperature and the bias learn, with the sigmoid loss. By default the image
tower comes from the SigLIP demo (`make demo`, workdir
`workdirs/demo_siglip_shapes`); any `load_params` path with an `img` subtree,
or a ViT classifier's checkpoint (`img_init=vit.npz`, head not loaded), works.

Command:
  python -m big_vision_like.train --config configs/lit_shapes.py \
      --workdir workdirs/lit_shapes
  python -m big_vision_like.train \
      --config configs/lit_shapes.py:img_init=path/to/ckpt.npz:img ...

Runtime: 500 steps (batch 256, lr 2e-3), 66 s of training on a 2-core CPU
(the image tower's backward pass is skipped), 2026-11-27. Result, image
tower from `make demo` (94.5% zero-shot itself): zero-shot top-1 94.9% over
the 24 classes, image-to-text Recall@1 95.1% (identical captions
de-duplicated).
"""

import importlib.util
import os

from big_vision_like import config as config_lib


def _siglip_config(arg):
  path = os.path.join(os.path.dirname(__file__), "siglip_shapes.py")
  spec = importlib.util.spec_from_file_location("siglip_shapes", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def get_config(arg=None):
  """`arg`: img_init=PATH (a `load_params` path of the image tower), short."""
  arg = config_lib.parse_arg(
      arg, img_init="workdirs/demo_siglip_shapes:img", steps=500, short=False)
  c = _siglip_config("short" if arg.short else f"steps={arg.steps}")
  c.input.batch_size = 32 if arg.short else 256
  c.lr = 2e-3
  c.model_init = {"img": arg.img_init}
  c.model_load = dict(dont_load=["head/.*"] if arg.img_init.endswith(".npz")
                      else [])
  schedule = dict(c.schedule.to_dict(), warmup_steps=2 if arg.short else 150)
  del c["schedule"]
  c.schedule = [
      ("img/.*", None),  # Locked.
      (".*", schedule),
  ]
  return c
