r"""MLP-Mixer-B/16 trained from scratch on ImageNet-1k (big_vision's recipe).

The recipe of big_vision's `configs/mlp_mixer_i1k.py`: Mixer-B/16 at 224px
with stochastic depth 0.1, sigmoid cross-entropy with the head bias
initialised to -6.9 (~ -log 1000), batch 4096, Adam (`scale_by_adam`,
global-norm clipping at 1.0) with lr 1e-3, 10k warmup steps then linear
decay to 1e-5, decoupled weight decay 1e-4, mixup (p=0.5), Inception crop +
flip + RandAugment(2, 15) for 300 epochs, trained on `train[:99%]` with
`train[99%:]` held out as minival.

Needs TFDS `imagenet2012` prepared beforehand (the manual download; then
`--config.input.data.data_dir=DIR` and the same for the evals). The raw
cache (`cache_raw`, as big_vision) needs up to ~120 GB of host RAM;
`:cache=False` reads from disk each epoch.

Command (a TPU v3-128 slice or 8+ GPUs; add --distributed on several hosts):
  python -m big_vision_like.train --config configs/mixer_i1k.py \
      --workdir workdirs/mixer_i1k
  (`:epochs=60` for big_vision's shorter regression run.)

Published result (big_vision, TPU v3-128): 76.3% top-1 on the ImageNet
validation set in 2h11m with 300 epochs; 60 epochs: 70.5% in 27m. Not
measured with this project (its machine has no accelerator and no copy of
ImageNet).
"""

from big_vision_like import config as config_lib


def get_config(arg=None):
  """`arg`: variant=B/16, epochs=300, batch=4096, cache=True."""
  arg = config_lib.parse_arg(arg, variant="B/16", epochs=300, batch=4096,
                             cache=True)
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
      pp=("decode_jpeg_and_inception_crop(224)|flip_lr|randaug(2, 15)|"
          f"value_range(-1, 1)|{labels}"),
  )
  pp_eval = ("decode|resize_small(256)|central_crop(224)|value_range(-1, 1)|"
             f"{labels}")

  c.model_name = "mlp_mixer"
  c.model = dict(variant=arg.variant, num_classes=1000, stoch_depth=0.1,
                 head_bias_init=-6.9)
  c.loss = "sigmoid_xent"
  c.mixup = dict(p=0.5)

  c.optax_name = "scale_by_adam"
  c.grad_clip_norm = 1.0
  c.lr = 1e-3
  c.wd = 1e-4
  c.schedule = dict(decay_type="linear", warmup_steps=10_000,
                    linear_end=1e-5)

  c.log_training_steps = 50
  c.ckpt_steps = 1000
  evals = {"minival": "train[99%:]", "val": "validation"}
  c.evals = {name: dict(type="classification",
                        data=dict(name="imagenet2012", split=split),
                        pp_fn=pp_eval, log_steps=2500)
             for name, split in evals.items()}
  return c
