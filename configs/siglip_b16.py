r"""SigLIP B/16 at 224px on COCO captions (TFDS) or your own JSONL captions.

The public SigLIP B/16 architecture (image B/16 with MAP pooling and no image
head, text B with a 768-d head, 64 tokens, the 32k c4_en SentencePiece
vocabulary, sigmoid loss with t = log 10 and b = -10 at init), trained with
the chunked sigmoid loss, so the batch can grow with the number of devices
without any device holding the global batch of texts.

Needs, prepared beforehand (nothing is downloaded at run time):
- the data: TFDS `coco_captions` (`tfds build coco_captions --data_dir=DIR`,
  then `--config.input.data.data_dir=DIR`), or JSONL captions (`data=jsonl:ROOT`
  with `ROOT/train.jsonl`, `ROOT/val.jsonl`, see the README);
- a SentencePiece model: `tokenizer=/path/to/c4_en.model` (the one the
  public SigLIP checkpoints use), or any `.model` file (set `vocab`).

Command (a GPU/TPU machine; add --distributed on several hosts):
  python -m big_vision_like.train \
      --config configs/siglip_b16_coco.py:tokenizer=/data/c4_en.model \
      --workdir workdirs/siglip_b16_coco
  python -m big_vision_like.train \
      --config configs/siglip_b16_coco.py:data=jsonl:/data/caps,tokenizer=... ...

Runtime and result: not measured yet (the project's machine has no
accelerator and no copy of COCO). `:short` gives the same recipe with tiny
towers, for smoke runs. The JSONL variant's pipeline and evaluator run two
steps in `tests/test_configs.py` (a corpus of 56 tiny images, tiny towers,
`res=32`); the COCO variant's `flatten` of `captions/text` is not run there.
"""

from big_vision_like import config as config_lib


def get_config(arg=None):
  """`arg`: data=coco|jsonl:ROOT, tokenizer=PATH, vocab=N, batch=N, epochs=N,
  res=N (image side), short."""
  arg = config_lib.parse_arg(arg, data="coco", tokenizer="", vocab=32_000,
                             batch=4096, epochs=40, res=224, short=False)
  coco = arg.data == "coco"
  c = config_lib.ml_collections.ConfigDict()
  c.seed = 0
  c.total_epochs = arg.epochs

  tok = (f'tokenize(max_len=64, eos="sticky", model="{arg.tokenizer}", '
         'pad_value=1, inkey="text", outkey="labels")')
  pp_img = (f"decode|resize({arg.res})|value_range(-1, 1)")
  texts = "captions/text" if coco else "texts"
  c.input = dict(
      data=dict(name="coco_captions" if coco else arg.data, split="train"),
      batch_size=arg.batch,
      shuffle_buffer_size=50_000,
      pp=(f'{"flatten|" if coco else ""}{pp_img}|'
          f'choice(inkey="{texts}", outkey="text")|{tok}|'
          'keep("image", "labels")'),
  )

  c.model_name = "two_towers"
  c.model_inputs = ("image", "labels")
  width = dict(width=64, depth=2, mlp_dim=128, num_heads=2) if arg.short else {}
  c.model = dict(
      image_model="vit",
      image=dict(variant="B/16", pool_type="map", **width),
      text_model="text_transformer",
      text=dict(variant="B", vocab_size=arg.vocab, **width),
      out_dim=(None, 64 if arg.short else 768),
      temperature_init=10.0, bias_init=-10.0)
  c.loss = "sigmoid_loss"
  c.loss_kw = dict(implementation="chunked")

  c.optax_name = "adamw"
  c.optax = dict(b2=0.95)
  c.lr = 1e-3
  c.wd = 1e-4
  c.schedule = dict(decay_type="cosine", warmup_percent=0.05)
  c.grad_clip_norm = 1.0
  c.sharding_rules = [(".*", "fsdp")]

  c.log_training_steps = 50
  c.ckpt_steps = 1000
  c.evals = dict(
      retrieval=dict(
          type="retrieval",
          data=dict(name=c.input.data.name, split="val"),
          pp_fn=(f'{"flatten|" if coco else ""}{pp_img}|' +
                 tok.replace('inkey="text"', f'inkey="{texts}"').replace(
                     '"labels"', '"captions"') +
                 '|pad_to_shape((7, 64), pad_value=1, key="captions")'
                 '|keep("image", "captions")'),
          pad_id=1, log_percent=0.25),
  )
  return c
