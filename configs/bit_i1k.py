r"""BiT-ResNet trained from scratch on ImageNet-1k (big_vision's `bit_i1k`).

The upstream recipe of big_vision's `configs/bit_i1k.py` ("Big Transfer
(BiT)", Kolesnikov et al. 2020): a ResNet-50x1 with GroupNorm and weight
standardisation (`bit`, ResNet-v1; `:model=bit_paper` for the
pre-activation ResNet-v2 of the released BiT weights), 90 epochs at batch
4096 on `train[:99%]` (`train[99%:]` held out as minival), Inception crop
+ left-right flip at 224px, softmax cross-entropy, SGD with momentum 0.9
(bfloat16 accumulator, big_vision's `momentum_hp`), lr 0.1 x batch / 256
with 1,000 warmup steps then cosine decay, decoupled weight decay
1e-4 x batch / 256 (not multiplied by the lr, as big_vision), global-norm
clipping at 1.0. Evaluated on the ImageNet validation set (resize 256,
central crop 224). (The BiT paper's own BiT-S schedule used step decay;
this is big_vision's version.)

Needs TFDS `imagenet2012` prepared beforehand (the manual download; then
`--config.input.data.data_dir=DIR` and the same for the evals). The raw
cache (`cache_raw`, as big_vision) needs up to ~120 GB of host RAM;
`:cache=False` reads from disk each epoch.

Command (written for a TPU v3-128 slice, or 8+ GPUs with a smaller
`:batch=`, whose lr and wd follow the linear scaling rule; add
--distributed on several hosts):
  python -m big_vision_like.train --config configs/bit_i1k.py \
      --workdir workdirs/bit_i1k
  python -m big_vision_like.train \
      --config configs/bit_i1k.py:depth=101,width=3,model=bit_paper ...

Published: big_vision's config trains the R50x1 in ~32 min on TPU v3-128
and states no accuracy; the BiT paper's BiT-S models (this kind of
upstream run on ILSVRC-2012, then fine-tuned) reach 81.3% top-1 with
R152x4 (paper Table 1). Not measured with this project (its machine has
no accelerator and no copy of ImageNet).
"""

from big_vision_like import config as config_lib


def get_config(arg=None):
  """`arg`: model=bit|bit_paper, depth=50, width=1, epochs=90, batch=4096,
  cache=True."""
  arg = config_lib.parse_arg(arg, model="bit", depth=50, width=1.0,
                             epochs=90, batch=4096, cache=True)
  c = config_lib.ml_collections.ConfigDict()
  c.seed = 0
  c.total_epochs = arg.epochs

  labels = ('onehot(1000, key="label", key_result="labels")|'
            'keep("image", "labels")')
  c.input = dict(
      data=dict(name="imagenet2012", split="train[:99%]"),
      batch_size=arg.batch,
      shuffle_buffer_size=250_000,
      cache_raw=arg.cache,
      pp=("decode_jpeg_and_inception_crop(224)|flip_lr|value_range(-1, 1)|"
          f"{labels}"),
  )
  pp_eval = ("decode|resize_small(256)|central_crop(224)|value_range(-1, 1)|"
             f"{labels}")

  c.model_name = arg.model
  width = int(arg.width) if float(arg.width).is_integer() else arg.width
  c.model = dict(num_classes=1000, depth=arg.depth, width=width)
  c.loss = "softmax_xent"

  c.optax_name = "sgd"
  c.optax = dict(momentum=0.9, accumulator_dtype="bfloat16")
  c.grad_clip_norm = 1.0
  c.lr = 0.1 * arg.batch / 256  # Linear scaling rule.
  c.wd = 1e-4 * arg.batch / 256
  c.schedule = dict(decay_type="cosine", warmup_steps=1000)

  c.log_training_steps = 50
  c.ckpt_steps = 1000
  evals = {"minival": "train[99%:]", "val": "validation"}
  c.evals = {name: dict(type="classification",
                        data=dict(name="imagenet2012", split=split),
                        pp_fn=pp_eval, log_steps=1000)
             for name, split in evals.items()}
  return c
