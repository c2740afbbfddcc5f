r"""NFNet-F0 (to F7) on ImageNet-1k: the recipe of Brock et al. 2021.

"High-Performance Large-Scale Image Recognition Without Normalization"
(Brock, De, Smith, Simonyan 2021), as DeepMind's reference trains it
(`nfnets/experiment_nfnets.py`): the normaliser-free ResNet `nfnet` of the
variant (its dropout before the head, 0.2 for F0 .. 0.5 for F7, from the
model's variant table; stochastic depth 0.25), 360 epochs at batch 4096 on
all of `train`, trained at the variant's train resolution and evaluated at
its test resolution (F0: 192 / 256; `nfnet.resolutions`). Train pp:
Inception crop (8-100% of the area, bicubic) + left-right flip +
RandAugment with 4 layers at magnitude 5 (F0), 10 (F1, F2) or 15 (F3+),
ImageNet mean/std normalisation; on device, mixup (Beta(0.2, 0.2)) or
CutMix (uniform area). Softmax cross-entropy with label smoothing 0.1.
SGD with Nesterov momentum 0.9, lr 0.1 x batch / 256 with 5 warmup epochs
then cosine decay to 0; unit-wise adaptive gradient clipping (AGC) at 0.01
(eps 1e-3), not applied to the final linear layer (`head`); weight decay
2e-5 on the weights (not on gains and biases); bfloat16 matmuls; an
exponential moving average of the weights (decay 0.99999, with the
reference's warmup min(decay, (1 + t) / (10 + t))), which every evaluator
scores (`pred_params="ema"`). Eval pp: resize to (test + 32)^2 (bicubic),
central crop of the test size (the reference's `resize_crop_32`).

Differences from the reference: the weight decay here is decoupled (added
after the momentum, not multiplied by the lr); the reference adds
2e-5 * w to the gradient before Nesterov momentum 0.9, which scales a
slowly varying term by 1 / (1 - 0.9), so the same shrinkage per step is
config.wd = lr * 2e-5 / (1 - 0.9). Mixup and CutMix alternate per step
(one of the two on the whole batch) instead of each on half of every
batch; RandAugment runs before mixing, not after; the resize keeps uint8
(big_vision's truncation) where the reference keeps bicubic overshoots in
float; this project's Inception crop tries 100 boxes and falls back to the
whole image (the reference: 10 tries, min_object_covered 0.1, then a
central crop).

Data: TFDS `imagenet2012` (the manual download of ILSVRC-2012 into
`<data_dir>/downloads/manual`, then `tfds build imagenet2012
--data_dir=<data_dir>`), and for the extra evals `imagenet2012_real`,
`imagenet_v2`, `imagenet_a`, `imagenet_r`, `imagenet_sketch` (`tfds build`
each; `:evals=val+real` keeps only those). `:data_dir=DIR` points every
dataset there.

Command (written for a TPU v3-32 or larger slice, or 32+ GPUs; F0 is
112,600 steps of batch 4096; add --distributed on several hosts):
  python -m big_vision_like.train \
      --config configs/nfnet_i1k.py:variant=F0,data_dir=DIR \
      --workdir workdirs/nfnet_f0_i1k
  (`:batch=N` scales the lr (and so the weight decay) linearly.)

Published (the paper; ImageNet val top-1 at the test resolution): F0
83.6% ... F5 86.0% (F6 with SAM: 86.5%). DeepMind's
README gives 73 ms per F0 train step on TPU v3 (its own set-up). Not
measured with this project (its machine has no accelerator and no copy of
ImageNet).

What the test (tests/recipes/test_imagenet_recipes.py) shows: the config
builds and trains 2 steps at the real resolutions (192 train, 256 test)
with the real pp strings, AGC, EMA, mixup/CutMix and label smoothing,
through a one-block-per-stage NFNet of 1/16 width on mocked random TFDS
examples of each dataset, and every evaluator scores the EMA with finite
metrics in range. It cannot show accuracy, speed, memory at batch 4096, or
that the real TFDS builds (manual download) work.
"""

from big_vision_like import config as config_lib
from big_vision_like.evaluators import imagenet_data
from big_vision_like.models import nfnet

# RandAugment (layers, magnitude) of each variant, DeepMind's "405".."415".
RANDAUG = {"F0": (4, 5), "F1": (4, 10), "F2": (4, 10), "F3": (4, 15),
           "F4": (4, 15), "F5": (4, 15), "F6": (4, 15), "F7": (4, 15)}
EVALS = "val+real+v2+a+r+sketch"  # `imagenet_data.CLASSIFICATION_EVALS`.
MOMENTUM = 0.9


def get_config(arg=None):
  """`arg`: variant=F0 (F0..F7, F0+..F7+), epochs=360, batch=4096,
  cache=False, data_dir=DIR, evals=val+real+v2+a+r+sketch."""
  arg = config_lib.parse_arg(arg, variant="F0", epochs=360, batch=4096,
                             cache=False, data_dir="", evals=EVALS)
  train_res, test_res = nfnet.resolutions(arg.variant)
  layers, magnitude = RANDAUG[arg.variant.removesuffix("+")]
  c = config_lib.ml_collections.ConfigDict()
  c.seed = 0
  c.total_epochs = arg.epochs

  data_dir = {"data_dir": arg.data_dir} if arg.data_dir else {}
  c.input = dict(
      data=dict(name="imagenet2012", split="train", **data_dir),
      batch_size=arg.batch,
      shuffle_buffer_size=250_000,
      cache_raw=arg.cache,
      pp=(f"decode_jpeg_and_inception_crop({train_res}, area_min=8, "
          f"method='bicubic')|flip_lr|randaug({layers}, {magnitude})|"
          'vgg_value_range|onehot(1000, key="label", key_result="labels")|'
          'keep("image", "labels")'),
  )

  c.model_name = "nfnet"
  c.model = dict(variant=arg.variant, num_classes=1000, drop_path=0.25,
                 dtype_mm="bfloat16")
  c.loss = "softmax_xent"
  c.loss_kw = dict(label_smoothing=0.1)
  c.mixup = dict(p=0.2)
  c.cutmix = dict(alpha=1.0)

  c.optax_name = "sgd"
  c.optax = dict(momentum=MOMENTUM, nesterov=True)
  c.lr = 0.1 * arg.batch / 256
  c.wd = c.lr * 2e-5 / (1 - MOMENTUM)  # See the module docstring.
  c.schedule = dict(decay_type="cosine", warmup_epochs=5)
  c.agc = dict(clip=0.01, eps=1e-3, exclude=r"^head/")
  c.grad_clip_norm = None
  c.ema = dict(decay=0.99999, warmup=True)

  c.log_training_steps = 50
  c.ckpt_steps = 1000
  c.evals = imagenet_data.classification_evals(
      f"decode|resize({test_res + 32}, method='bicubic')|"
      f"central_crop({test_res})|vgg_value_range",
      arg.evals.split("+"), data_dir=arg.data_dir or None, log_steps=2500,
      pred_params="ema")
  return c
