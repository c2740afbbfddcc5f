r"""LiT: a locked image tower, a text tower trained against it, on shapes.

"LiT: Zero-Shot Transfer with Locked-image text Tuning" (Zhai et al. 2022):
the image tower is loaded from a checkpoint and frozen (no gradient is
computed for it and it has no optimizer state); the text tower, the
temperature and the bias learn, with the sigmoid loss. What is locked is
exactly what was loaded; `img_head` says where the image embedding comes
from:

- `img_head=load` (default): the tower's head is part of the checkpoint and
  locked with it, as in the `img` subtree of a two-tower checkpoint. By
  default that is the SigLIP demo's (`make demo`, workdir
  `workdirs/demo_siglip_shapes`), whose 64-d image head is its projection.
- `img_head=none`: no image head; the image embedding is the tower's
  pre-logits (its width, 128 here) and the text head has that size. For a
  ViT classifier's checkpoint, whose `head` (the classifier) is not loaded.
  This is the LiT paper's and big_vision's default.
- `img_head=train`: a fresh 64-d image head on the locked pre-logits,
  trained with the text tower; the checkpoint's `head`, if any, is not
  loaded. Also for a classifier's checkpoint.

A checkpoint that lacks any other parameter of the image tower is an error
(`merge_params` names the missing parameters).

Command:
  python -m big_vision_like.train --config configs/lit_shapes.py \
      --workdir workdirs/lit_shapes
  python -m big_vision_like.train --config \
      configs/lit_shapes.py:img_init=path/to/vit_classifier.npz,img_head=none \
      --workdir workdirs/lit_shapes_vit

Runtime: 500 steps (batch 256, lr 2e-3), 66 s of training on a 2-core CPU
(the image tower's backward pass is skipped), 2026-11-27. Result, image
tower from `make demo` (94.5% zero-shot itself): zero-shot top-1 94.9% over
the 24 classes, image-to-text Recall@1 95.1% (identical captions
de-duplicated). `img_head=none` and `train` have not been measured.
"""

import os

from big_vision_like import config as config_lib

IMG_HEADS = ("load", "none", "train")


def _siglip_config(arg):
  return config_lib.load(os.path.join(os.path.dirname(__file__), "siglip_shapes.py"),
                         arg)


def get_config(arg=None):
  """`arg`: img_init=PATH (a `load_params` path of the image tower),
  img_head=load|none|train, steps=N, short."""
  arg = config_lib.parse_arg(
      arg, img_init="workdirs/demo_siglip_shapes:img", img_head="load",
      steps=500, short=False)
  if arg.img_head not in IMG_HEADS:
    raise ValueError(f"img_head={arg.img_head!r}: use one of {IMG_HEADS}.")
  c = _siglip_config("short" if arg.short else f"steps={arg.steps}")
  c.input.batch_size = 32 if arg.short else 256
  c.lr = 2e-3
  c.model_init = {"img": arg.img_init}
  # Names are relative to the loaded subtree: "head/.*" is img/head. With
  # `load`, every image-tower parameter comes from the checkpoint.
  c.model_load = dict(dont_load=[] if arg.img_head == "load"
                      else ["head/.*"])
  if arg.img_head == "none":
    c.model.out_dim = (None, c.model.image.width)
  schedule = dict(c.schedule.to_dict(), warmup_steps=2 if arg.short else 150)
  del c["schedule"]
  rules = [
      ("img/.*", None),  # Locked: exactly the loaded params.
      (".*", schedule),
  ]
  if arg.img_head == "train":  # First match wins: the new head trains.
    rules.insert(0, ("img/head/.*", schedule))
  c.schedule = rules
  return c
