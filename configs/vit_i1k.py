r"""Plain ViT-S/16 on ImageNet-1k: "Better plain ViT baselines" (big_vision).

The recipe of big_vision's `configs/vit_s16_i1k.py` ("Better plain ViT
baselines for ImageNet-1k", Beyer, Zhai, Kolesnikov 2022): ViT-S/16 with
global average pooling (`pool_type="gap"`), fixed 2-D sin-cos position
embeddings, a tanh pre-logits layer of the model width (`rep_size=True`)
and a zero-initialised head; batch 1024 for 90 epochs on `train[:99%]`
(`train[99%:]` held out as minival); Inception crop 224 + left-right flip +
RandAugment(2, 10), values in [-1, 1], mixup (p=0.2); softmax
cross-entropy; Adam (`scale_by_adam`, bfloat16 first moment), lr 1e-3 with
10k linear warmup steps then cosine decay, decoupled weight decay 1e-4 (not
multiplied by the lr, as big_vision), global-norm clipping at 1.0. No
dropout, no stochastic depth. Evaluated at resize_small(256) +
central_crop(224) on ImageNet val, minival, 2% of train, ReaL, v2, and
(added here) ImageNet-A / -R (top-k among their 200 classes) and Sketch.

Data: TFDS `imagenet2012` (the manual download of ILSVRC-2012 into
`<data_dir>/downloads/manual`, then `tfds build imagenet2012
--data_dir=<data_dir>`), and for the extra evals `imagenet2012_real`,
`imagenet_v2`, `imagenet_a`, `imagenet_r`, `imagenet_sketch` (`tfds build`
each; `:evals=minival+val` keeps only those). `:data_dir=DIR` points every
dataset there. The raw cache (`cache_raw`, as big_vision) needs up to
~120 GB of host RAM; `:cache=False` reads from disk each epoch.

Command (written for a TPU v3-8, or 8 GPUs; add --distributed on several
hosts):
  python -m big_vision_like.train --config configs/vit_i1k.py:data_dir=DIR \
      --workdir workdirs/vit_s16_i1k
  (`:epochs=300` for the longer schedule, `:variant=B/16`, `:batch=N`.)

Published (big_vision's README and config, and the paper; ImageNet val
top-1 at 224px): 90 epochs 76.5% in 6-7 h on a TPU v3-8; 300 epochs ~80%.
The paper also reports ReaL and v2 for these runs. Not measured with this
project (its machine has no accelerator and no copy of ImageNet).

What the test (tests/recipes/test_imagenet_recipes.py) shows: the config
builds and trains 2 steps at the real resolution with the real pp strings
through a one-block, 16-wide ViT on mocked random TFDS examples of each
dataset (real feature structure: ReaL's variable-length `real_label`, the
1,000-class labels of -A / -R), and every evaluator reports finite metrics
in range. It cannot show accuracy, speed, memory at batch 1024, or that the
real TFDS builds (manual download) work.
"""

from big_vision_like import config as config_lib
from big_vision_like.evaluators import imagenet_data

# `imagenet_data.CLASSIFICATION_EVALS` names, joined by "+".
EVALS = "train+minival+val+real+v2+a+r+sketch"


def get_config(arg=None):
  """`arg`: variant=S/16, epochs=90, batch=1024, cache=True, data_dir=DIR,
  evals=train+minival+val+real+v2+a+r+sketch."""
  arg = config_lib.parse_arg(arg, variant="S/16", epochs=90, batch=1024,
                             cache=True, data_dir="", evals=EVALS)
  c = config_lib.ml_collections.ConfigDict()
  c.seed = 0
  c.total_epochs = arg.epochs

  data_dir = {"data_dir": arg.data_dir} if arg.data_dir else {}
  c.input = dict(
      data=dict(name="imagenet2012", split="train[:99%]", **data_dir),
      batch_size=arg.batch,
      shuffle_buffer_size=250_000,
      cache_raw=arg.cache,
      pp=("decode_jpeg_and_inception_crop(224)|flip_lr|randaug(2, 10)|"
          'value_range(-1, 1)|onehot(1000, key="label", key_result="labels")|'
          'keep("image", "labels")'),
  )

  c.model_name = "vit"
  c.model = dict(variant=arg.variant, num_classes=1000, pool_type="gap",
                 posemb="sincos2d", rep_size=True)
  c.loss = "softmax_xent"
  c.mixup = dict(p=0.2)

  c.optax_name = "scale_by_adam"
  c.optax = dict(mu_dtype="bfloat16")
  c.grad_clip_norm = 1.0
  c.lr = 1e-3
  c.wd = 1e-4  # Decoupled, not multiplied by the lr.
  c.schedule = dict(decay_type="cosine", warmup_steps=10_000)

  c.log_training_steps = 50
  c.ckpt_steps = 1000
  c.evals = imagenet_data.classification_evals(
      "decode|resize_small(256)|central_crop(224)|value_range(-1, 1)",
      arg.evals.split("+"), data_dir=arg.data_dir or None, log_steps=2500)
  return c
