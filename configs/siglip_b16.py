r"""SigLIP (or CLIP) B/16 at 224px from scratch, on image-text pairs.

The public SigLIP B/16 architecture: image ViT-B/16 with MAP pooling and no
image head (its 768-d pooled output is the embedding), text transformer B
with a 768-d head pooling the last token, 64 tokens of the 32k `c4_en`
SentencePiece vocabulary, text lower-cased, padded with the EOS id 1 after a
"sticky" EOS; sigmoid loss (chunked ring: no device holds the global batch
of texts) with t = log 10 and b = -10 at init. `:loss=softmax` is CLIP's
loss instead: temperature 1/0.07 at init, no bias. AdamW lr 1e-3, b2 0.95,
decoupled wd 1e-4 on kernels, 5% linear warmup then cosine, gradient norm
clipped at 1, parameters sharded over all devices (FSDP).

Data (`:data=`; nothing is downloaded at run time):
- `coco` (default): TFDS `coco_captions`, Karpathy's split (`train+restval`,
  113k images, 5 or more captions each: one drawn per image and step).
  Prepare with `tfds build coco_captions --data_dir=DIR` (downloads COCO
  2014, ~20 GB).
- `jsonl:ROOT`: your own pairs, e.g. COCO or CC12M written as
  `ROOT/train.jsonl` and `ROOT/val.jsonl`, one line per image:
  `{"image": "imgs/000001.jpg", "text": ["a cat on a mat", ...]}` (paths
  relative to ROOT; one caption or a list; see big_vision_like/datasets/own.py).

Evaluators:
- `zeroshot`: ImageNet-1k validation (TFDS `imagenet2012`, built from the
  manually downloaded ILSVRC2012 tars: `tfds build imagenet2012
  --manual_dir=...`), CLIP's 1,000 curated class names and its 80 prompt
  templates (`clip_80`, what this project ships; SigLIP's papers report
  zero-shot with their own prompt set, which is not shipped, so figures are
  not exactly comparable); image resized to 256 and centre-cropped to 224,
  as big_vision's zero-shot evaluations. `:zeroshot=` picks the sets,
  `+`-joined: imagenet (`zeroshot`), imagenet_v2 (`zeroshot_v2`),
  imagenet_a (`zeroshot_a`), imagenet_r (`zeroshot_r`), imagenet_sketch
  (`zeroshot_sketch`) (`all`: the five; `none`: no zero-shot). The 200-class
  sets -A and -R map their 1,000-class TFDS labels onto their classes
  (`label_indices` of the named sets). `:templates=clip_7` is CLIP's
  7-prompt subset.
- `retrieval` (and, for COCO, `retrieval_test`): image<->text Recall@1/5/10
  on the 5k-image `val` (and `test`) split, the first 5 captions of each
  image (COCO's Karpathy protocol: 25k captions).

Tokenizer: `c4_en` is looked up in `$BVL_TOKENIZERS` (else
`<data dir>/tokenizers`) as `c4_en.model` or `cc_en.32000/sentencepiece.model`:
copy there the SentencePiece file of `gs://t5-data/vocabs/cc_en.32000/`
(the vocabulary of the public SigLIP checkpoints). `:tokenizer=PATH` takes
another `.model` file (set `:vocab=` to its size); `:tokenizer=clip:PATH`
takes CLIP's BPE (`bpe_simple_vocab_16e6.txt.gz`: 49,408 ids, 77 tokens,
padded with 0, the text tower's `pad_id=0` so its last-token pooling reads
the end-of-text token).

Commands (`--distributed` on several hosts; the global batch must divide over
the devices):
  BVL_TOKENIZERS=/data/tokenizers python -m big_vision_like.train \
      --config configs/siglip_b16.py:data_dir=/data/tfds \
      --workdir workdirs/siglip_b16
  # CLIP's loss; ImageNet-v2/-A/-R/-Sketch zero-shot too:
  python -m big_vision_like.train --config \
      configs/siglip_b16.py:loss=softmax,zeroshot=all,data_dir=/data/tfds \
      --workdir workdirs/clip_b16
  # CC12M-style JSONL, 5 epochs (12M pairs: ~15k steps at batch 4096):
  python -m big_vision_like.train --config \
      configs/siglip_b16.py:data=jsonl:/cc12m,epochs=5,data_dir=/data/tfds \
      --workdir workdirs/siglip_b16_cc12m

Hardware: batch 4096 is sized for 8 GPUs of 80 GB or a TPU v4-32 (512 or 128
examples a device); fewer or smaller devices: `:batch=N` or
`--config.grad_accum_steps=K` (same batch, K micro-batches), and
`--config.model.image.dtype_mm=bfloat16` (and `.text.`) for bfloat16
matmuls. 40 epochs of COCO are 1,106 steps at batch 4096.

Published target: SigLIP B/16 at 224px reaches 76.0% ImageNet zero-shot
(the public `webli_en_b16_224` checkpoint, trained on WebLI, English, with a
32k batch for 40B examples seen), far beyond what this recipe can reach:
COCO has 113k images, ~0.3% of a single WebLI pass. A COCO-only run gives
low ImageNet zero-shot (for scale: big_vision's LiT `coco_B16B`, with a
locked ImageNet-21k image tower and a pre-trained BERT text tower, gets
20.7%; from scratch it is far less) and is mainly a retrieval model. Runtime
and results of this recipe: not measured (the project's machine has no
accelerator and no copy of COCO or ImageNet).

What the mock test (tests/recipes/test_image_text_recipes.py) shows: every
dataset's features flow through these pp strings at 224px with 64 (77)
tokens, two steps of both losses, and every evaluator runs on 6 random
examples per split, with towers of width 16 and depth 1. It cannot show
throughput, memory at batch 4096, convergence or any accuracy.
"""

from big_vision_like import config as config_lib

# Zero-shot sets: evaluator name -> (TFDS dataset, split, class-name set,
# image pp before value_range). ImageNet-A's objects are often off-centre:
# resized on the short side to 4/3 of the crop, as in big_vision.
ZEROSHOT = {
    "imagenet": ("zeroshot", "imagenet2012", "validation", "imagenet",
                 "resize({r})|central_crop({res})"),
    "imagenet_v2": ("zeroshot_v2", "imagenet_v2", "test", "imagenet_v2",
                    "resize({r})|central_crop({res})"),
    "imagenet_a": ("zeroshot_a", "imagenet_a", "test", "imagenet_a",
                   "resize_small({ra})|central_crop({res})"),
    "imagenet_r": ("zeroshot_r", "imagenet_r", "test", "imagenet_r",
                   "resize({r})|central_crop({res})"),
    "imagenet_sketch": ("zeroshot_sketch", "imagenet_sketch", "test",
                        "imagenet_sketch", "resize({r})|central_crop({res})"),
}
CLIP_VOCAB = 49_408
C4_VOCAB = 32_000
NUM_CAPTIONS = 5  # Retrieval: the first 5 captions of each image.


def text_settings(tokenizer, vocab):
  """(tokenize op template with `{inkey}`/`{outkey}`, text tower kwargs,
  pad id) for a SentencePiece name/path or `clip:PATH`."""
  if tokenizer.startswith("clip"):
    op = (f'tokenize(max_len=77, eos="sticky", model="{tokenizer}", '
          'pad_value=0, inkey="{inkey}", outkey="{outkey}")')
    return op, dict(vocab_size=vocab or CLIP_VOCAB, pad_id=0), 0, 77
  op = (f'tokenize(max_len=64, eos="sticky", model="{tokenizer}", '
        'pad_value=1, inkey="{inkey}", outkey="{outkey}")')
  return op, dict(vocab_size=vocab or C4_VOCAB), 1, 64


def zeroshot_names(spec):
  if spec == "none":
    return []
  names = list(ZEROSHOT) if spec == "all" else spec.split("+")
  unknown = [n for n in names if n not in ZEROSHOT]
  if unknown:
    raise ValueError(f"zeroshot={spec!r}: unknown {unknown}; use `+`-joined "
                     f"names of {list(ZEROSHOT)}, `all` or `none`.")
  return names


def get_config(arg=None):
  """`arg`: data=coco|jsonl:ROOT, loss=sigmoid|softmax, tokenizer=NAME|PATH|
  clip:PATH, vocab=N (0: the tokenizer's), batch=N, epochs=N, res=N,
  zeroshot=NAME+NAME|all|none, templates=clip_80|clip_7, data_dir=DIR (TFDS
  data dir of every dataset; empty: TFDS's default)."""
  arg = config_lib.parse_arg(
      arg, data="coco", loss="sigmoid", tokenizer="c4_en", vocab=0,
      batch=4096, epochs=40, res=224, zeroshot="imagenet",
      templates="clip_80", data_dir="")
  if arg.loss not in ("sigmoid", "softmax"):
    raise ValueError(f"loss={arg.loss!r}: use sigmoid or softmax.")
  coco = arg.data == "coco"
  if not (coco or arg.data.startswith("jsonl:")):
    raise ValueError(f"data={arg.data!r}: use coco or jsonl:ROOT.")
  tfds_dir = {"data_dir": arg.data_dir} if arg.data_dir else {}
  tok, text_kw, pad, length = text_settings(arg.tokenizer, arg.vocab)
  c = config_lib.ml_collections.ConfigDict()
  c.seed = 0
  c.total_epochs = arg.epochs

  name = "coco_captions" if coco else arg.data
  data_kw = tfds_dir if coco else {}
  texts = "captions/text" if coco else "texts"
  pp_img = f"decode|resize({arg.res})|value_range(-1, 1)"
  flatten = "flatten|" if coco else ""
  c.input = dict(
      data=dict(name=name, split="train+restval" if coco else "train",
                **data_kw),
      batch_size=arg.batch,
      shuffle_buffer_size=50_000,
      pp=(f'{flatten}{pp_img}|choice(inkey="{texts}", outkey="text")|'
          + tok.format(inkey="text", outkey="labels")
          + '|keep("image", "labels")'),
  )

  c.model_name = "two_towers"
  c.model_inputs = ("image", "labels")
  c.model = dict(
      image_model="vit", image=dict(variant="B/16", pool_type="map"),
      text_model="text_transformer", text=dict(variant="B", **text_kw),
      out_dim=(None, 768))
  if arg.loss == "sigmoid":
    c.loss = "sigmoid_loss"
    c.loss_kw = dict(implementation="chunked")
    c.model.update(temperature_init=10.0, bias_init=-10.0)
  else:
    c.loss = "softmax_loss"
    c.loss_kw = dict(implementation="all_gather")
    c.model.update(temperature_init=1 / 0.07)

  c.optax_name = "adamw"
  c.optax = dict(b2=0.95)
  c.lr = 1e-3
  c.wd = 1e-4
  c.schedule = dict(decay_type="cosine", warmup_percent=0.05)
  c.grad_clip_norm = 1.0
  c.sharding_rules = [(".*", "fsdp")]

  c.log_training_steps = 50
  c.ckpt_steps = 1000
  c.evals = {}
  pp_txt = tok.format(inkey="texts", outkey="labels")
  for key in zeroshot_names(arg.zeroshot):
    ev_name, dataset, split, classes, crop = ZEROSHOT[key]
    crop = crop.format(r=int(arg.res / 0.875), ra=int(arg.res / 0.75),
                       res=arg.res)
    c.evals[ev_name] = dict(
        type="zeroshot", data=dict(name=dataset, split=split, **tfds_dir),
        pp_fn=f'decode|{crop}|value_range(-1, 1)|keep("image", "label")',
        pp_txt=pp_txt, pp_txt_batched=True, class_names=classes,
        templates=arg.templates, log_percent=0.25)
  pp_retrieval = (
      f'{flatten}{pp_img}|' + tok.format(inkey=texts, outkey="captions")
      + f'|pad_to_shape(({NUM_CAPTIONS}, {length}), pad_value={pad}, '
      'key="captions")|keep("image", "captions")')
  for ev_name, split in (("retrieval", "val"),
                         ("retrieval_test", "test"))[:2 if coco else 1]:
    c.evals[ev_name] = dict(
        type="retrieval", data=dict(name=name, split=split, **data_kw),
        pp_fn=pp_retrieval, pad_id=pad, log_percent=0.25)
  return c
