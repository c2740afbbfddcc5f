r"""Fine-tunes a pretrained checkpoint on a transfer dataset (BiT-HyperRule).

Any `load_params` checkpoint (a big_vision `.npz`, `path.npz:subtree`, an
orbax workdir) of a registered classifier (`model=vit:B/16` (default),
`bit:R50x1`, `bit_paper:R50x1` for the BiT releases, `convnext:T`) is loaded
with its `head` re-initialised at zero for the new classes (`model_load.
dont_load`); a ViT's position embedding is resampled to the new patch grid
on load (`models.common.load_into`). Then it is fine-tuned with the
BiT-HyperRule of "Big Transfer (BiT)" (Kolesnikov et al. 2020), as in the
released `bit_hyperrule.py`:

- SGD, momentum 0.9, lr 0.003, batch 512, no weight decay, no clipping;
- length by training-set size: < 20k examples 500 steps, 20k..500k 10k
  steps, >= 500k 20k steps; linear warmup of 100 / 500 / 500 steps; lr
  divided by 10 at steps 200/300/400 (of 500), at 30%, 60% and 90% of the
  10k and 20k schedules (the paper's text says 30/60/90% for all three);
- mixup (alpha 0.1) only with >= 20k training examples;
- random crop + random left-right flip. Resolution by model family:
  * `bit`, `bit_paper`, `convnext` (the BiT rule): images smaller than 96x96
    px (CIFAR) are resized to 160 and randomly cropped to 128; larger ones
    resized to 448 and cropped to 384 (the paper; the released code uses
    512/480); evaluated resized to the crop size, as the BiT code does;
  * `vit` (big_vision's ViT transfer, `configs/transfer.py` there): every
    dataset resize_small(448) then a random 384 crop (`crop=inception`: an
    Inception crop instead), evaluated resize_small(448) + central 384.
  `res=R` crops R (and resizes to R times the rule's resize/crop ratio).

`rule=big_vision` switches to big_vision's ViT transfer settings instead
(the ones of its published AugReg figures): cosine decay after the same
warmup and length, global-norm clipping at 1.0, no mixup, bfloat16 momentum.
`frozen` trains the head only (same rule), so the frozen-feature
evaluators below score the loaded checkpoint's own features.

Datasets (`DATASETS`; splits as big_vision's transfer config where it has
the dataset: 2% / 10% of train held out as minival):

  dataset=           classes  train / minival / test             train size
  cifar10            10       train[:98%] / train[98%:] / test   49,000
  cifar100           100      train[:98%] / train[98%:] / test   49,000
  oxford_iiit_pet    37       train[:90%] / train[90%:] / test   3,312
  oxford_flowers102  102      train[:90%] / train[90%:] / test   918
  dtd                47       train / validation / test          1,880

(Pets' TFDS `train` is the official trainval; DTD is not in big_vision's
config: its own TFDS splits, partition 1.) `dataset=imagefolder:DIR` reads
your own `DIR/SPLIT/CLASS/*.jpg` tree (`datasets/own.py`): `train` is
required; `val` or `validation` is the minival (else `train[90%:]`, and
train is `train[:90%]`); `test` is evaluated when present. Its classes and
training examples are counted from the folder when the config is built, and
the resolution bucket (for the BiT rule) is decided by the first training
image's size.

Evaluators: `minival` and `test` classification (prec@1/5, loss) every 10%
of training, and at the end the frozen-feature suite on the model's
`pre_logits` (train split as the memory / training set, test split queried):
`fewshot` (ridge regression, 1/5/10/25 shots, 3 seeds), `knn` (k=10, 20)
and `linear_probe` (L2 chosen on minival). Without `frozen` these are the
fine-tuned features.

Data: `tfds build cifar10` (or cifar100, oxford_iiit_pet, oxford_flowers102,
dtd) beforehand; pass `:data_dir=DIR` (every split of the run) or set
TFDS_DATA_DIR. Nothing is downloaded at run time.

Hardware: written for one host with 8 accelerators (GPUs with 40+ GB or
a TPU v3-8; add --distributed on several hosts); batch 512 at 384px does
not fit fewer: use `--config.grad_accum_steps=K`, or `batch=128,lr=0.001`,
with which the big_transfer README reports the same CIFAR results on 8
V100s. Runtime not measured (this project's machine has no accelerator).

Commands:

  # ViT-B/16 (AugReg i21k weights in this project's layout, see below)
  python -m big_vision_like.train --workdir workdirs/transfer_cifar10 \
      --config configs/transfer.py:dataset=cifar10,init=vit_b16_i21k.npz
  # AugReg ViT-B/32 with big_vision's settings (its published 98.55%)
  python -m big_vision_like.train --workdir workdirs/transfer_cifar10_b32 \
      --config configs/transfer.py:dataset=cifar10,model=vit:B/32,\
init=vit_b32_i21k.npz,rule=big_vision,data_dir=/data/tfds
  # BiT-M R50x1 (the BiT release file, renamed on load by `bit_paper`)
  python -m big_vision_like.train --workdir workdirs/transfer_pets_bit \
      --config configs/transfer.py:dataset=oxford_iiit_pet,\
model=bit_paper:R50x1,init=BiT-M-R50x1.npz
  # Own images, head only: the frozen-feature suite on the checkpoint
  python -m big_vision_like.train --workdir workdirs/transfer_own \
      --config configs/transfer.py:dataset=imagefolder:/data/own,\
init=ckpt.npz,frozen

Checkpoints: the AugReg release `.npz` files (gs://vit_models/augreg/...)
use the older ViT layout (`Transformer/posembed_input`, a class-token entry
in the position embedding, `MultiHeadDotProductAttention_1` / `MlpBlock_3`
names), which loading renames to big_vision's (`vit.from_legacy_layout`;
tested on a file written in that layout, not on the real release). timm's
copy of those weights (e.g. `vit_base_patch16_224.augreg_in21k`) converts
too,

  python -m big_vision_like.tools.convert --from timm_vit --to npz \
      model.safetensors vit_b16_i21k.npz --variant B/16

and pass the model kwargs it prints as `--config.model.KEY=VALUE`. ViTs
are built with `pool_type="tok"` (AugReg's class token); override
`--config.model.pool_type=gap` (and `posemb=sincos2d`, `rep_size=...`) to
match other checkpoints.

Published (not measured here: this project's machine has no accelerator
and none of these datasets):
- big_vision, AugReg ViT-B/32 (i21k) with `rule=big_vision`: CIFAR-10
  98.55% (lr 0.003), CIFAR-100 91.35% (lr 0.01), Pets 93.78% and Flowers
  99.43% (Inception crop, lr 0.003), test, mean of 5 runs.
- big_transfer README, BiT-M-R50x1, HyperRule at batch 128 / lr 0.001,
  median of 5+ runs in its TF2 / JAX / PyTorch code: CIFAR-10 97.2-97.4%,
  CIFAR-100 86.4-86.6% (BiT-M-R101x3: 98.4-98.6%, 90.8-91.2%).
- BiT paper Table 1, BiT-M R152x4, from memory (check before quoting):
  CIFAR-10 98.9%, CIFAR-100 92.2%, Pets 94.5%, Flowers 99.3%.

What the mock test (tests/recipes/test_transfer_recipe.py) shows: the
config builds for every dataset with the right classes and schedule; an
`.npz` loads with a fresh head; train and every evaluator run at the real
resolutions and pp strings on 6 random examples per split. It cannot show
accuracy, speed, memory at batch 512, or the real checkpoints' layouts.
"""

import dataclasses

from big_vision_like import config as config_lib


@dataclasses.dataclass(frozen=True)
class Task:
  """A transfer dataset: TFDS splits, classes, training size, image size."""
  classes: int
  train: str
  minival: str
  test: str | None
  train_size: int  # Examples of `train`: the HyperRule's schedule bucket.
  small: bool  # Images smaller than 96x96 px.


DATASETS = {
    "cifar10": Task(10, "train[:98%]", "train[98%:]", "test", 49_000, True),
    "cifar100": Task(100, "train[:98%]", "train[98%:]", "test", 49_000, True),
    "oxford_iiit_pet": Task(37, "train[:90%]", "train[90%:]", "test", 3_312,
                            False),
    "oxford_flowers102": Task(102, "train[:90%]", "train[90%:]", "test", 918,
                              False),
    "dtd": Task(47, "train", "validation", "test", 1_880, False),
}
# How each model family is fed: the BiT rule's resolutions, or big_vision's
# ViT transfer (resize_small 448, crop 384).
FAMILIES = {"vit": "vit", "bit": "bit", "bit_paper": "bit", "convnext": "bit"}
RULES = ("hyperrule", "big_vision")
CROPS = ("resmall", "inception")
SMALL_AREA = 96 * 96  # Below: the HyperRule's low resolution.


def hyperrule_schedule(train_size):
  """(steps, warmup, [lr /10 steps]) of bit_hyperrule.get_schedule."""
  if train_size < 20_000:
    return 500, 100, (200, 300, 400)
  if train_size < 500_000:
    return 10_000, 500, (3_000, 6_000, 9_000)
  return 20_000, 500, (6_000, 12_000, 18_000)


def hyperrule_mixup(train_size):
  """The mixup alpha of bit_hyperrule.get_mixup (0: none)."""
  return 0.0 if train_size < 20_000 else 0.1


def hyperrule_resolution(small):
  """(resize, crop) of the BiT paper: 160/128 below 96x96 px, else 448/384."""
  return (160, 128) if small else (448, 384)


def _imagefolder_task(name, data_dir):
  """The `Task` of `imagefolder:DIR`, counted from the folder."""
  # Imported here: the TFDS datasets need neither TF nor the folder.
  from big_vision_like.datasets import core  # pylint: disable=C0415
  source = core.get_source(name, data_dir=data_dir)
  splits = source.splits
  if "train" not in splits:
    raise ValueError(f"dataset={name!r}: the folder {source.root} needs a "
                     f"`train` split directory; it has {splits}.")
  held_out = [s for s in ("val", "validation", "minival") if s in splits]
  train, minival = (("train", held_out[0]) if held_out
                    else ("train[:90%]", "train[90%:]"))
  num_train = source.num_examples(train)
  if not num_train:
    raise ValueError(f"dataset={name!r}: no training images in "
                     f"{source.root}/train/CLASS/.")
  small = _first_image_area(source.root) < SMALL_AREA
  return Task(len(source.class_names), train, minival,
              "test" if "test" in splits else None, num_train, small)


def _first_image_area(root):
  """Pixels of the first image of `root/train` (cheap: one file decoded)."""
  import tensorflow as tf  # pylint: disable=C0415
  from big_vision_like import fs  # pylint: disable=C0415
  from big_vision_like.datasets import own  # pylint: disable=C0415
  train = fs.join(root, "train")
  for cls in sorted(tf.io.gfile.listdir(train)):
    cls_dir = fs.join(train, cls.rstrip("/"))
    if not tf.io.gfile.isdir(cls_dir):
      continue
    for name in sorted(tf.io.gfile.listdir(cls_dir)):
      if name.lower().endswith(own.IMAGE_EXTENSIONS):
        image = tf.io.decode_image(tf.io.read_file(fs.join(cls_dir, name)),
                                   expand_animations=False)
        return int(image.shape[0]) * int(image.shape[1])
  return SMALL_AREA  # Images only in sub-folders: taken as large.


def _task(dataset, data_dir):
  if dataset.startswith("imagefolder:"):
    return _imagefolder_task(dataset, data_dir)
  if dataset not in DATASETS:
    raise ValueError(f"Unknown dataset={dataset!r}; known: {sorted(DATASETS)}"
                     " or imagefolder:DIR.")
  return DATASETS[dataset]


def _model(spec, classes):
  """(model_name, model kwargs, family) of `model=NAME:VARIANT`."""
  name, _, variant = spec.partition(":")
  if name not in FAMILIES:
    raise ValueError(f"Unknown model={spec!r}; known model names: "
                     f"{sorted(FAMILIES)}, e.g. vit:B/16 or bit:R50x1.")
  if not variant:
    raise ValueError(f"model={spec!r} needs a variant, e.g. {name}:"
                     f"{'B/16' if name == 'vit' else 'R50x1'}.")
  model = dict(num_classes=classes, variant=variant, head_zeroinit=True)
  if name == "vit":
    model["pool_type"] = "tok"  # AugReg; --config.model.pool_type=gap else.
  return name, model, FAMILIES[name]


def _pp(family, task, res, crop, classes):
  """(train pp, eval pp, frozen-feature pp) strings."""
  if family == "vit":
    size, cropped = 448, 384
  else:
    size, cropped = hyperrule_resolution(task.small)
  if res:
    size, cropped = int(round(res * size / cropped)), res
  if crop == "inception":
    train = f"decode|inception_crop({cropped})"
  elif family == "vit":
    train = f"decode|resize_small({size})|random_crop({cropped})"
  else:
    train = f"decode|resize({size})|random_crop({cropped})"
  evaluate = (f"decode|resize_small({size})|central_crop({cropped})"
              if family == "vit" else f"decode|resize({cropped})")
  evaluate += "|value_range(-1, 1)"
  labels = (f'onehot({classes}, key="label", key_result="labels")|'
            'keep("image", "labels")')
  return (f"{train}|flip_lr|value_range(-1, 1)|{labels}",
          f"{evaluate}|{labels}", f'{evaluate}|keep("image", "label")')


def _schedule(rule, task, steps):
  """(total steps, schedule dict, mixup alpha) of the transfer rule."""
  default, warmup, decays = hyperrule_schedule(task.train_size)
  total = steps or default
  scale = lambda s: int(round(s * total / default))  # noqa: E731
  if rule == "big_vision":
    return total, dict(decay_type="cosine", warmup_steps=scale(warmup)), 0.0
  schedule = dict(decay_type="stair", warmup_steps=scale(warmup),
                  steps=[scale(s) for s in decays], mults=[0.1, 0.01, 0.001])
  return total, schedule, hyperrule_mixup(task.train_size)


def get_config(arg=None):
  """`arg`: dataset=, model=NAME:VARIANT, init=, rule=, crop=, frozen,
  batch=, lr=, steps= (0: the rule's), res= (0: the family's), data_dir=."""
  arg = config_lib.parse_arg(
      arg, dataset="cifar10", model="vit:B/16", init="", rule="hyperrule",
      crop="resmall", frozen=False, batch=512, lr=0.003, steps=0, res=0,
      data_dir="")
  for key, known in (("rule", RULES), ("crop", CROPS)):
    if arg[key] not in known:
      raise ValueError(f"Unknown {key}={arg[key]!r}; known: {known}.")
  for key in ("batch", "steps", "res"):
    if arg[key] < 0 or (key == "batch" and not arg[key]):
      raise ValueError(f"{key}={arg[key]} must be > 0 (steps, res: 0 for "
                       "the rule's).")
  data_dir = arg.data_dir or None
  task = _task(arg.dataset, data_dir)
  c = config_lib.ml_collections.ConfigDict()
  c.seed = 0

  c.model_name, c.model, family = _model(arg.model, task.classes)
  c.model_init = arg.init or None  # None: from scratch (a smoke run only).
  c.model_load = dict(dont_load=("head/.*",))  # A new, zero-init head.

  pp_train, pp_eval, pp_features = _pp(family, task, arg.res, arg.crop,
                                       task.classes)
  data = lambda split: dict(name=arg.dataset, split=split,  # noqa: E731
                            data_dir=data_dir)
  c.input = dict(data=data(task.train), batch_size=arg.batch, pp=pp_train,
                 shuffle_buffer_size=50_000,
                 cache_raw=not arg.dataset.startswith("imagefolder:"))

  c.total_steps, schedule, mixup = _schedule(arg.rule, task, arg.steps)
  c.schedule = ([("head/.*", schedule), (".*", None)] if arg.frozen
                else schedule)
  c.mixup = dict(p=mixup) if mixup else None  # p: the Beta(p, p) alpha.
  c.optax_name = "sgd"
  c.optax = dict(momentum=0.9)
  c.lr = arg.lr
  c.wd = 0.0
  if arg.rule == "big_vision":
    c.optax.accumulator_dtype = "bfloat16"
    c.grad_clip_norm = 1.0

  c.log_training_steps = 10
  c.ckpt_steps = 1000
  # Evaluated splits are not cached: at 384px they would not fit in RAM.
  held_out = {"minival": task.minival, "test": task.test}
  c.evals = {name: dict(type="classification", data=data(split),
                        pp_fn=pp_eval, log_percent=0.1, cache=False)
             for name, split in held_out.items() if split}
  # The frozen-feature suite, once at the end, on `pre_logits`: trained on
  # the train split, tested on test (without one: on minival, and the probe
  # holds out part of train to choose its L2).
  query = task.test or task.minival
  c.evals.fewshot = dict(
      type="fewshot", datasets={"transfer": (arg.dataset, task.train, query)},
      pp_fn=pp_features, data_dir=data_dir, cache=False)
  c.evals.knn = dict(type="knn", data=data(query), memory=data(task.train),
                     pp_fn=pp_features, cache=False)
  c.evals.linear_probe = dict(
      type="linear_probe", train_data=data(task.train), data=data(query),
      val_data=data(task.minival) if task.test else None, pp_fn=pp_features,
      cache=False)
  return c
