"""The image-text recipes (configs/siglip_b16.py, lit_b16.py) train 2 steps.

Each recipe runs with its real resolution (224px), text length and pp
strings, on mocked TFDS datasets (tests/mock_tfds.py: 6 random examples per
split with the real features) or a tiny JSONL corpus, then runs every
evaluator. Only the towers (width 16, depth 1, 2 heads), the batch and the
number of steps are shrunk. `c4_en` resolves to a small SentencePiece model
in a temp `$BVL_TOKENIZERS`.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from big_vision_like import config as config_lib
from big_vision_like import step as step_lib
from big_vision_like import train
from big_vision_like import tree_util
from big_vision_like.evaluators import imagenet_data
from big_vision_like.pp import tokenizer
from big_vision_like.registry import MODELS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TINY = dict(width=16, depth=1, mlp_dim=32, num_heads=2)
VOCAB = 96
# Test-only: CLIP's 7 prompts, not the recipe's 80 (with the tiny towers and
# a batch of 64, embedding 80,000 prompts per evaluator dominates the test;
# a real run embeds them in batches of 4,096).
TEST_TEMPLATES = "templates=clip_7"
ZEROSHOT_SETS = {  # Evaluator: (TFDS dataset, split, number of classes).
    "zeroshot": ("imagenet2012", "validation", 1000),
    "zeroshot_v2": ("imagenet_v2", "test", 1000),
    "zeroshot_a": ("imagenet_a", "test", 200),
    "zeroshot_r": ("imagenet_r", "test", 200),
    "zeroshot_sketch": ("imagenet_sketch", "test", 1000),
}


load = config_lib.load


@pytest.fixture(name="c4_en")
def _c4_en(tmp_path, monkeypatch):
  """`c4_en` is a VOCAB-piece model trained on ImageNet prompts."""
  folder = tmp_path / "tokenizers"
  folder.mkdir()
  names = imagenet_data.class_names("imagenet")[::10]
  texts = [t.format(c).lower() for c in names
           for t in imagenet_data.templates("clip_7")]
  (folder / "c4_en.model").write_bytes(
      tokenizer.train_sentencepiece(texts, vocab_size=VOCAB))
  monkeypatch.setenv("BVL_TOKENIZERS", str(folder))


def _shrink(cfg, steps=2, batch=8):
  cfg.model.image.update(TINY)
  cfg.model.text.update(TINY, vocab_size=VOCAB)
  cfg.model.out_dim = (None, 16)
  cfg.input.batch_size = batch
  cfg.total_epochs, cfg.total_steps = None, steps
  for ev in cfg.evals.values():
    ev.batch_size = 64  # 6 images; 7,000 prompts of 1,000 classes.
  return cfg


def _flat(tree):
  tree = jax.device_get(tree)
  return dict(zip(tree_util.tree_names(tree), jax.tree.leaves(tree)))


def _check_results(results, evals, retrieval_queries=None):
  assert np.isfinite(results["train/loss"])
  for name in evals:
    if name.startswith("zeroshot"):
      for k in (1, 5):
        assert 0 <= results[f"{name}/prec@{k}"] <= 1, name
    else:
      for k in (1, 5, 10):
        for way in ("i2t", "t2i"):
          value = results[f"{name}/{way}_recall@{k}"]
          assert 0 <= value <= 1, (name, way, k)
          if retrieval_queries:  # A whole number of hits.
            hits = value * retrieval_queries[way]
            assert abs(hits - round(hits)) < 1e-6, (name, way, k)


def _mock_all(mock_tfds, zeroshot=tuple(ZEROSHOT_SETS)):
  """Mocks COCO captions and the zero-shot sets; returns the data dir."""
  for name in zeroshot:
    dataset, split, _ = ZEROSHOT_SETS[name]
    mock_tfds(dataset, splits=(split,))
  return mock_tfds("coco_captions", splits=("train", "restval", "val",
                                            "test"))


def test_siglip_b16_on_coco_with_every_evaluator(tmp_path, mock_tfds, c4_en):
  del c4_en
  data_dir = _mock_all(mock_tfds)
  cfg = _shrink(load("siglip_b16", f"zeroshot=all,{TEST_TEMPLATES},"
                     f"data_dir={data_dir}"))
  assert sorted(cfg.evals) == sorted(
      list(ZEROSHOT_SETS) + ["retrieval", "retrieval_test"])
  for ev in cfg.evals.values():
    assert ev.data.data_dir == data_dir
  state, results = train.train_and_evaluate(cfg, str(tmp_path / "run"))
  assert int(state["step"]) == 2
  params = state["params"]
  assert params["img"]["embedding"]["kernel"].shape == (16, 16, 3, 16)
  assert params["img"]["pos_embedding"].shape == (1, 14 * 14, 16)
  assert params["txt"]["pos_embedding"].shape == (1, 64, 16)
  assert "b" in params and "MAPHead_0" in params["img"]
  _check_results(results, cfg.evals)


def test_siglip_b16_softmax_and_clip_tokens_build(tmp_path):
  bpe = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
  bpe.write_bytes(b"")  # Only its existence is checked when building.
  cfg = load("siglip_b16", f"loss=softmax,tokenizer=clip:{bpe}")
  config_lib.check_and_fill(cfg, train.DEFAULTS)
  assert cfg.loss == "softmax_loss"
  assert cfg.model.temperature_init == pytest.approx(1 / 0.07)
  assert "bias_init" not in cfg.model
  assert cfg.model.text.vocab_size == 49_408 and cfg.model.text.pad_id == 0
  assert 'max_len=77' in cfg.input.pp and "pad_value=0" in cfg.input.pp
  assert cfg.evals.retrieval.pad_id == 0
  sig = load("siglip_b16")
  assert sig.loss == "sigmoid_loss" and sig.loss_kw.implementation == "chunked"
  assert (sig.model.temperature_init, sig.model.bias_init) == (10.0, -10.0)
  assert sig.evals.zeroshot.templates == "clip_80"


COLOURS = {"red": (230, 20, 20), "green": (20, 200, 40),
           "blue": (30, 40, 220), "yellow": (240, 230, 30),
           "black": (5, 5, 5), "white": (250, 250, 250),
           "purple": (140, 30, 160), "orange": (250, 140, 10)}


def _caption_corpus(root, splits=(("train", 40), ("val", 16))):
  """Writes ROOT/SPLIT.jsonl over 8x8 PNGs of one colour, 1-3 captions each.

  Returns the list of every caption, and {split: its number of captions}.
  """
  os.makedirs(root / "imgs")
  names, texts, counts = sorted(COLOURS), [], {}
  for split, n in splits:
    lines = []
    for i in range(n):
      colour = names[i % len(names)]
      pixels = np.full((8, 8, 3), COLOURS[colour], np.uint8)
      pixels[:1 + i % 7] //= 2  # Darker top rows: a split's images differ.
      rel = f"imgs/{split}_{i}.png"
      tf.io.write_file(str(root / rel), tf.io.encode_png(pixels))
      caps = [f"a {colour} picture", f"{colour} with a dark band {i % 7}",
              f"photo number {i} in {colour}"][:1 + i % 3]
      texts += caps
      counts[split] = counts.get(split, 0) + len(caps)
      lines.append(json.dumps({"image": rel, "text": caps}))
    (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
  return texts, counts


def test_siglip_b16_trains_on_jsonl_captions(tmp_path):
  """The JSONL variant, with its own SentencePiece model by path, and
  retrieval on the corpus's val split (the zero-shot evaluators are the
  COCO test's: `zeroshot=none` here, for time)."""
  texts, counts = _caption_corpus(tmp_path / "caps")
  spm = tmp_path / "tiny.model"
  spm.write_bytes(tokenizer.train_sentencepiece(texts, vocab_size=64))
  cfg = load("siglip_b16", f"data=jsonl:{tmp_path / 'caps'},"
             f"tokenizer={spm},vocab=64,batch=16,zeroshot=none")
  assert cfg.input.data.name == f"jsonl:{tmp_path / 'caps'}"
  assert f'model="{spm}"' in cfg.input.pp
  assert sorted(cfg.evals) == ["retrieval"]
  cfg.model.image.update(TINY)
  cfg.model.text.update(TINY)
  cfg.model.out_dim = (None, 16)  # No image head: its width is the embedding.
  cfg.total_epochs, cfg.total_steps = None, 2
  state, results = train.train_and_evaluate(cfg, str(tmp_path / "run"))
  assert int(state["step"]) == 2
  assert state["params"]["txt"]["Embed_0"]["embedding"].shape == (64, 16)
  # Every val image queries once, every real caption once (the captions
  # padded to 5 rows per image are not counted): recalls are fractions of
  # 16 and of 31.
  assert counts["val"] == 31
  _check_results(results, cfg.evals, {"i2t": 16, "t2i": counts["val"]})


def _vit_npz(path, image_kw):
  """Writes a ViT classifier's params (random, 224px) as a big_vision .npz."""
  vit = MODELS.get("vit")(num_classes=10, **image_kw)
  params = vit.init(jax.random.key(7), jnp.zeros((1, 224, 224, 3)))["params"]
  flat = _flat(params)
  np.savez(path, **flat)
  return flat


def test_lit_b16_locks_the_loaded_image_tower(tmp_path, mock_tfds, c4_en):
  del c4_en
  # The evaluators are siglip_b16's (run in the COCO test): retrieval only.
  data_dir = _mock_all(mock_tfds, zeroshot=())
  npz = tmp_path / "vit_b16.npz"
  cfg = _shrink(load("lit_b16", f"img_init={npz},zeroshot=none,"
                            f"data_dir={data_dir}"))
  cfg.wd = 0.0  # Any change of a parameter is a gradient update.
  checkpoint = _vit_npz(npz, cfg.model.image.to_dict())
  assert "cls" in checkpoint and "head/kernel" in checkpoint
  body = {f"img/{k}": v for k, v in checkpoint.items()
          if not k.startswith("head/")}
  state, results = train.train_and_evaluate(cfg, str(tmp_path / "run"))
  final = _flat(state["params"])
  assert {k for k in final if k.startswith("img/")} == set(body)
  for name, value in body.items():  # Locked: exactly what was loaded.
    np.testing.assert_array_equal(final[name], value, err_msg=name)
  # The text tower trained: compare with the trainer's initial params.
  model = step_lib.build_model(cfg.model_name, cfg.model)
  key = jax.random.key(cfg.seed)
  initial = _flat(model.init(
      {"params": key, "dropout": key}, jnp.zeros((1, 224, 224, 3)),
      jnp.zeros((1, 64), jnp.int32), train=False)["params"])
  text = [k for k in final if k.startswith("txt/")]
  assert len(text) > 10
  unchanged = [k for k in text if np.array_equal(final[k], initial[k])]
  assert not unchanged, unchanged
  _check_results(results, cfg.evals)
