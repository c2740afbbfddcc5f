r"""DeiT-S/16 or DeiT-B/16 on ImageNet-1k, with or without distillation.

The recipe of "Training data-efficient image transformers & distillation
through attention" (Touvron et al. 2021, DeiT), 300 epochs at 224px: ViT
with a class token (`pool_type="tok"`), batch 1024, AdamW with lr
5e-4 * batch / 512, weight decay 0.05, 5 warmup epochs then cosine, grad
clipping off, label smoothing 0.1, stochastic depth 0.1, Inception crop +
flip + RandAugment(2, 9), mixup 0.8 / cutmix 1.0 (one of the two per step),
ImageNet mean/std normalisation.

`:distill=True` is DeiT's hard distillation through the distillation token
(DeiT⚗): the ViT gets a second token and head (`dist_token=True`; in train
mode its logits are `aux["dist_logits"]`, at inference the two heads are
averaged), trained on the argmax of a frozen CNN teacher that sees the same
augmented images; objective 0.5 * xent(class head, labels) + 0.5 *
xent(distillation head, teacher argmax) (`config.distill`, loss
"deit_hard"). The paper's teacher is a RegNetY-16GF (82.9%); this project
has no RegNet, so the teacher is the registered NFNet-F0 (83.6% published),
e.g. DeepMind's weights converted with `big_vision_like.tools.convert_nfnet`
(`:teacher_init=PATH` to the .npz or an orbax workdir).

Differences from the paper's recipe: no random erasing (0.25) and no
repeated augmentation (not implemented here); big_vision's RandAugment and
mixup (the mixing weight is min(a, 1 - a), a ~ Beta(0.8, 0.8)).

Needs TFDS `imagenet2012` prepared beforehand (the manual download; then
`--config.input.data.data_dir=DIR` and the same for the evals).

Commands (8+ GPUs or a TPU v3-32 or larger; add --distributed on several
hosts):
  python -m big_vision_like.train --config configs/deit_i1k.py \
      --workdir workdirs/deit_s16_i1k
  python -m big_vision_like.train \
      --config configs/deit_i1k.py:distill=True,teacher_init=nfnet_f0.npz \
      --workdir workdirs/deit_s16_distilled_i1k
  (`:variant=B/16` for DeiT-B, `:epochs=N`.)

Published results (DeiT paper, Table 5; 300 epochs, ImageNet val top-1 at
224px, 8 V100 GPUs; DeiT-S in under 3 days on one node): DeiT-S 79.8%,
DeiT-S⚗ 81.2% (RegNetY-16GF teacher); DeiT-B 81.8%, DeiT-B⚗ 83.4%. The
released checkpoints evaluate to 79.85% / 81.16% (DeiT-S) in the official
repository's README. Not measured with this project (its machine has no
accelerator and no copy of ImageNet); the distillation path is measured
at small scale by configs/distill_digits.py.
"""

from big_vision_like import config as config_lib


def get_config(arg=None):
  """`arg`: variant=S/16, epochs=300, batch=1024, distill=False,
  teacher_init=PATH, cache=False."""
  arg = config_lib.parse_arg(arg, variant="S/16", epochs=300, batch=1024,
                             distill=False, cache=False,
                             teacher_init="workdirs/nfnet_f0_i1k")
  c = config_lib.ml_collections.ConfigDict()
  c.seed = 0
  c.total_epochs = arg.epochs

  labels = ('onehot(1000, key="label", key_result="labels")|'
            'keep("image", "labels")')
  norm = "vgg_value_range"  # ImageNet mean and std, as DeiT.
  c.input = dict(
      data=dict(name="imagenet2012", split="train[:99%]"),
      batch_size=arg.batch,
      shuffle_buffer_size=250_000,
      cache_raw=arg.cache,
      pp=("decode_jpeg_and_inception_crop(224, method='bicubic')|flip_lr|"
          f"randaug(2, 9)|{norm}|{labels}"),
  )
  pp_eval = (f"decode|resize_small(256, method='bicubic')|central_crop(224)|"
             f"{norm}|{labels}")

  c.model_name = "vit"
  c.model = dict(variant=arg.variant, num_classes=1000, pool_type="tok",
                 drop_path=0.1, head_zeroinit=False)
  if arg.distill:
    c.model.dist_token = True  # The DeiT ViT: aux["dist_logits"] in train.
  c.loss = "softmax_xent"
  c.loss_kw = dict(label_smoothing=0.1)
  c.mixup = dict(p=0.8)
  c.cutmix = dict(alpha=1.0)

  c.optax_name = "adamw"
  c.lr = 5e-4 * arg.batch / 512
  c.wd = 0.05 * c.lr  # Decoupled, not multiplied by the lr here.
  c.schedule = dict(decay_type="cosine", warmup_epochs=5)
  c.grad_clip_norm = None

  c.log_training_steps = 50
  c.ckpt_steps = 1000
  evals = {"minival": "train[99%:]", "val": "validation"}
  c.evals = {name: dict(type="classification",
                        data=dict(name="imagenet2012", split=split),
                        pp_fn=pp_eval, log_steps=2500)
             for name, split in evals.items()}
  if arg.distill:
    c.distill = dict(
        teacher=dict(model_name="nfnet", model=dict(variant="F0",
                                                    num_classes=1000),
                     init=arg.teacher_init),
        loss="deit_hard", weight=0.5, task_weight=0.5)
    c.evals["agreement"] = dict(c.evals["minival"].to_dict(),
                                type="distill_agreement",
                                label_key="labels")
  return c
