r"""LiT B/16: a locked ImageNet-21k ViT-B/16, a text tower B trained against it.

"LiT: Zero-Shot Transfer with Locked-image text Tuning" (Zhai et al. 2022):
the image tower is loaded from a classifier's `.npz` and frozen (its
`schedule` rule is None: no gradient, no optimizer state); the text tower B
is trained from scratch, with the temperature and bias, to embed captions
where the locked tower embeds their images. The image embedding is the
tower's pre-logits (class-token pooling, 768-d; the checkpoint's classifier
`head` is not loaded, nor `pre_logits` if it has one), as big_vision's best
public LiT B/16 (`LiT-B16B_2`, no image head). Data, tokenizer (c4_en, 64
tokens), evaluators (ImageNet zero-shot, COCO retrieval) and arguments are
`configs/siglip_b16.py`'s; sigmoid loss (`:loss=softmax`: the LiT paper's
contrastive softmax). AdamW lr 1e-3, b2 0.95, decoupled wd 1e-4, 5k steps
at batch 4096 (the schedule of big_vision's COCO LiT), warmup 3% (at least
100 steps) then cosine, gradient norm clipped at 1.

Image tower (`:img_init=PATH`, a `load_params` path; relative to the working
directory): a ViT-B/16 classifier in big_vision's parameter names with a
learned position embedding of 14x14 patches (another grid is resampled), no
class position in it, pooled by its class token (`cls`), e.g. converted from
the AugReg ImageNet-21k B/16
(`B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz` of
`gs://vit_models/augreg/`, which big_vision's LiT configs use). That file is
in the older vision_transformer layout (`Transformer/posembed_input`, blocks
numbered `LayerNorm_0`, `MultiHeadDotProductAttention_1`, `LayerNorm_2`,
`MlpBlock_3`, the class token's position inside the position embedding):
loading renames it to big_vision's layout (`vit.from_legacy_layout`, the
same function; tested on a file written in that layout, not on the real
release, which this machine cannot download). Images are scaled to [-1, 1], as AugReg's were.

Data to prepare: as configs/siglip_b16.py (`tfds build coco_captions`, or
`data=jsonl:ROOT`; `imagenet2012` for the zero-shot evaluator, or
`zeroshot=none`), and `c4_en.model` in `$BVL_TOKENIZERS`.

Command:
  BVL_TOKENIZERS=/data/tokenizers python -m big_vision_like.train --config \
      configs/lit_b16.py:img_init=/data/vit_b16.npz,data_dir=/data/tfds \
      --workdir workdirs/lit_b16

Hardware: as SigLIP B/16, less: the image tower has no backward pass and no
optimizer state (8 GPUs or a TPU v4-32 for batch 4096).

Published: big_vision's `coco_B16B` (README_lit.md of
google-research/big_vision: AugReg B/16 ImageNet-21k locked, a pre-trained
BERT-base text tower, 16 tokens, COCO captions, 5k steps at batch 4096)
reaches 20.7% ImageNet zero-shot, COCO image->text 47.2% and text->image
32.1% Recall@1; its LiT-B16B_2, trained on CC12M + YFCC100M (60k steps),
73.9% / 51.5% / 31.8%. This recipe's text tower starts from scratch and
reads 64 c4_en tokens, so it is not that run; runtime and results: not
measured (no accelerator, no COCO, ImageNet or AugReg checkpoint here).

What the mock test (tests/recipes/test_image_text_recipes.py) shows: a tiny
ViT `.npz` (patch 16, 224px, class token) loads into the image tower, which
is bit-identical after two steps while the text tower changed, and every
evaluator runs on mocked data. Not the real checkpoint's names (see above),
throughput, or any accuracy.
"""

import os

from big_vision_like import config as config_lib

IMAGE_TOWER = "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz"


def _siglip_config(arg):
  return config_lib.load(os.path.join(os.path.dirname(__file__), "siglip_b16.py"),
                         arg)


def get_config(arg=None):
  """`arg`: img_init=PATH, steps=N, and configs/siglip_b16.py's (data,
  loss, tokenizer, vocab, batch, res, zeroshot, templates, data_dir)."""
  arg = config_lib.parse_arg(arg, lazy=True, img_init=IMAGE_TOWER,
                             steps=5000)
  siglip_arg = ",".join(f"{k}={v}" for k, v in arg.items()
                        if k not in ("img_init", "steps"))
  c = _siglip_config(siglip_arg)
  c.total_epochs = None
  c.total_steps = arg.steps
  c.model.image = dict(variant="B/16", pool_type="tok")
  c.model.out_dim = (None, 768)
  c.model_init = {"img": arg.img_init}
  # Relative to the loaded subtree: the classifier and its pre-logits.
  c.model_load = dict(dont_load=["head/.*", "pre_logits/.*"])
  warmup = max(int(0.03 * arg.steps), min(100, arg.steps))
  del c["schedule"]  # A dict in siglip_b16: replaced by per-param rules.
  c.schedule = [
      ("img/.*", None),  # Locked: exactly the loaded params.
      (".*", dict(decay_type="cosine", warmup_steps=warmup)),
  ]
  return c
