"""Tests of CLIP's BPE tokenizer against open_clip, and of named vocabularies.

open_clip imports torch, which can crash a process that imported TensorFlow
first (see tests/tools/test_convert.py), so one subprocess without TF runs
`_REFERENCE` (texts in as JSON, open_clip's `tokenize()` ids out as JSON,
and those of its case-keeping `clean="whitespace"` tokenizer).
"""

import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys

import pytest
import tensorflow as tf

from big_vision_like.pp import builder as pp_builder
from big_vision_like.pp import clip_bpe
from big_vision_like.pp import tokenizer

HAVE_OPEN_CLIP = importlib.util.find_spec("open_clip") is not None
needs_open_clip = pytest.mark.skipif(not HAVE_OPEN_CLIP,
                                     reason="needs open_clip")

TEXTS = [
    "a photo of a cat.",
    "A Photo Of A CAT!",
    "Hello, world!!! ... ?! (really) [sic] {braces}",
    "It's, isn't, we're, they've, I'm, you'll, he'd",
    "IT'S WE'RE THEY'VE YOU'LL",
    "don't stop believin' 'quoted' rock'n'roll",
    "café naïve résumé Ångström façade",
    "cafe\u0301 with a combining accent",
    "Tom &amp; Jerry &lt;3 &quot;quoted&quot; &#39;single&#39;",
    "&amp;amp; double escaped &amp;lt;tag&amp;gt;",
    "<b>html tags</b> &nbsp; entity&nbsp;here",
    "emoji 🐶🐱 👍🏽 ❤️ 🇫🇷 family 👨‍👩‍👧‍👦",
    "The Mona Lisa doesnâ€™t have eyebrows.",
    "Ã©tÃ© en franÃ§ais",
    "3.14159 and 1,000,000 and 2024-01-01 at 12:30pm",
    "1st 2nd 3rd 100th 0x1F",
    "",
    "   \t\n  ",
    "multiple    spaces\tand\nnewlines\r\nand more",
    "中文 日本語の文章です。 한국어 텍스트",
    "Ελληνικά και Русский текст",
    "العربية עברית हिन्दी ภาษาไทย",
    "curly “quotes” and ‘apostrophes’ — dashes – and… ellipsis",
    "ﬁnancial ﬂow ligatures",
    "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ １２３",
    "non\u00a0breaking\u2009thin\u3000ideographic spaces",
    "x² ½ ⅓ Ⅻ ① ٣ ૪",
    "ǅ titlecase İstanbul ß ẞ ﬀ",
    "control\x07chars and \u200bzero\u200dwidth",
    "a-b_c/d\\e|f~g`h^i@j#k$l%m",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "<start_of_text> literal specials <end_of_text>",
    "the quick brown fox jumps over the lazy dog " * 12,
    "a " * 75,  # 75 tokens: exactly 77 with start and end.
    "a " * 76,  # One too many: truncated, end token kept.
    "漢字" * 60,
    "itap of a goldfish.",
]
CONTEXT = 77


_REFERENCE = """
import json, sys
import open_clip
from open_clip import tokenizer as oc_tok
folder, context = sys.argv[1], int(sys.argv[2])
with open(folder + "/texts.json", encoding="utf-8") as f:
  texts = json.load(f)
keep_case = oc_tok.SimpleTokenizer(clean="whitespace")
out = {"lower": open_clip.tokenize(texts, context).tolist(),
       "keep_case": keep_case(texts, context).tolist(),
       "vocab": oc_tok.default_bpe()}
with open(folder + "/ids.json", "w", encoding="utf-8") as f:
  json.dump(out, f)
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """open_clip's ids of TEXTS (one subprocess for the module)."""
  if not HAVE_OPEN_CLIP:
    pytest.skip("needs open_clip")
  folder = tmp_path_factory.mktemp("open_clip_tokens")
  (folder / "texts.json").write_text(json.dumps(TEXTS))
  proc = subprocess.run(
      [sys.executable, "-c", _REFERENCE, str(folder), str(CONTEXT)],
      capture_output=True, text=True, timeout=300, check=False)
  if proc.returncode:
    pytest.fail(f"open_clip reference failed:\n{proc.stderr[-3000:]}")
  return json.loads((folder / "ids.json").read_text())


def _vocab_path():
  spec = importlib.util.find_spec("open_clip")
  return os.path.join(list(spec.submodule_search_locations)[0],
                      tokenizer.CLIP_VOCAB_FILE)


@pytest.fixture(scope="module")
def tok():
  if not HAVE_OPEN_CLIP:
    pytest.skip("the vocabulary ships with open_clip")
  return tokenizer.get_tokenizer(f"clip:{_vocab_path()}")


@needs_open_clip
def test_ids_equal_open_clip_eagerly(tok, reference):
  assert reference["vocab"] == tok.model_path
  assert tok.vocab_size == 49408
  assert (tok.sot_token, tok.eos_token) == (49406, 49407)
  got = tok.tokenize(TEXTS, CONTEXT)
  assert got.shape == (len(TEXTS), CONTEXT) and len(TEXTS) >= 30
  for text, want, ids in zip(TEXTS, reference["lower"], got.tolist()):
    assert ids == want, text
  # The cases meant to be hard are in the list and do exercise something.
  assert got[TEXTS.index("a " * 76), -1] == tok.eos_token
  assert got[TEXTS.index("a " * 75), -2:].tolist() == [320, 49407]
  assert got[TEXTS.index("")].tolist()[:3] == [49406, 49407, 0]
  assert got[TEXTS.index("<start_of_text> literal specials <end_of_text>"),
             1] == 49406  # open_clip's pattern matches the special strings.


@needs_open_clip
def test_pp_op_in_tf_data_equals_open_clip(reference):
  pp = pp_builder.get_preprocess_fn(
      f'tokenize({CONTEXT}, "sticky", model="clip:{_vocab_path()}", '
      'pad_value=0, inkey="text", outkey="tokens")')
  ds = tf.data.Dataset.from_tensor_slices({"text": TEXTS}).map(pp)
  got = [x["tokens"].tolist() for x in ds.as_numpy_iterator()]
  assert got == reference["lower"]
  # Eagerly, on a [2, 2] batch of texts, and keeping the case (open_clip's
  # clean="whitespace" tokenizer).
  keep_case = pp_builder.get_preprocess_fn(
      f'tokenize({CONTEXT}, "sticky", model="clip:{_vocab_path()}", '
      'pad_value=0, lower=False)')
  out = keep_case({"texts": tf.constant([TEXTS[:2], TEXTS[2:4]])})["labels"]
  assert out.dtype == tf.int32 and out.shape == (2, 2, CONTEXT)
  assert out.numpy().reshape(4, -1).tolist() == reference["keep_case"][:4]
  ds = tf.data.Dataset.from_tensor_slices({"texts": TEXTS}).map(keep_case)
  assert [x["labels"].tolist() for x in ds.as_numpy_iterator()] == (
      reference["keep_case"])


@needs_open_clip
def test_round_trip_and_padding_error(tok):
  text = "a photo of my dog, 2 years old"
  assert tok.to_str(tok.to_int(text, eos=True) + [0, 0]) == (
      "a photo of my dog , 2 years old")
  assert tok.to_int("") == [49406]  # Start-of-text always, end on request.
  with pytest.raises(ValueError, match="pad_value=0"):
    pp_builder.get_preprocess_fn(
        f'tokenize(8, "sticky", model="clip:{_vocab_path()}")')


@pytest.mark.skipif(clip_bpe.regex is None, reason="needs regex")
def test_pattern_without_regex_splits_the_same():
  fallback = clip_bpe.pretokenize_pattern(use_regex=False)
  pattern = clip_bpe.pretokenize_pattern()
  assert isinstance(fallback, re.Pattern)
  assert not isinstance(pattern, re.Pattern)  # The regex package's.
  for text in TEXTS:
    cleaned = clip_bpe.clean(text)
    assert fallback.findall(cleaned) == pattern.findall(cleaned), text
    kept = clip_bpe.clean(text, lower=False)
    assert fallback.findall(kept) == pattern.findall(kept), text


@needs_open_clip
def test_without_ftfy_only_repaired_text_differs(tok, reference, monkeypatch,
                                                 caplog):
  monkeypatch.setattr(clip_bpe, "ftfy", None)
  clip_bpe._warn_no_ftfy.cache_clear()  # pylint: disable=protected-access
  with caplog.at_level(logging.WARNING):
    got = tok.tokenize(TEXTS, CONTEXT).tolist()
  assert "ftfy is not installed" in caplog.text
  differ = {t for t, g, w in zip(TEXTS, got, reference["lower"]) if g != w}
  assert "The Mona Lisa doesnâ€™t have eyebrows." in differ  # Mojibake.
  assert not differ & {TEXTS[0], TEXTS[8], TEXTS[19]}  # Plain, HTML, CJK.
  assert len(differ) <= 10, differ


# ------------------------------------------------- named vocabularies


@pytest.fixture
def vocab_dir(tmp_path, monkeypatch):
  monkeypatch.setenv(tokenizer.TOKENIZER_DIR_ENV, str(tmp_path))
  return tmp_path


def test_named_vocab_flat_and_published_layout(vocab_dir):
  model = tokenizer.get_tokenizer("bvl_shapes").model_path
  shutil.copy(model, vocab_dir / "c4_en.model")
  nested = vocab_dir / "mc4.250000.100extra"
  nested.mkdir()
  shutil.copy(model, nested / "sentencepiece.model")
  c4 = tokenizer.get_tokenizer("c4_en")
  assert c4.model_path == str(vocab_dir / "c4_en.model")
  assert c4.to_int("red circle") == tokenizer.get_tokenizer(
      "bvl_shapes").to_int("red circle")
  assert tokenizer.model_path("mc4") == str(nested / "sentencepiece.model")
  assert tokenizer.model_path("mt5") == str(nested / "sentencepiece.model")
  pp = pp_builder.get_preprocess_fn('tokenize(4, "sticky", model="c4_en")')
  assert pp({"texts": tf.constant("red")})["labels"].shape == (4,)


def test_missing_named_vocab_names_file_and_directory(vocab_dir):
  with pytest.raises(FileNotFoundError) as err:
    tokenizer.get_tokenizer("c4_en")
  msg = str(err.value)
  assert "c4_en.model" in msg and "cc_en.32000/sentencepiece.model" in msg
  assert str(vocab_dir) in msg and "$BVL_TOKENIZERS" in msg
  with pytest.raises(FileNotFoundError, match="nope.txt.gz"):
    tokenizer.get_tokenizer(f"clip:{vocab_dir}/nope.txt.gz")


def test_default_directory_is_under_the_data_dir(monkeypatch):
  monkeypatch.delenv(tokenizer.TOKENIZER_DIR_ENV, raising=False)
  assert tokenizer.tokenizer_dir() == os.path.join(
      os.environ["BVL_DATA_DIR"], "tokenizers")


@needs_open_clip
def test_clip_by_name_prefers_the_tokenizer_directory(vocab_dir):
  # Not in the directory: the copy inside the open_clip package.
  assert tokenizer.clip_vocab_path("clip") == _vocab_path()
  shutil.copy(_vocab_path(), vocab_dir / tokenizer.CLIP_VOCAB_FILE)
  tok = tokenizer.get_tokenizer("clip")
  assert tok.model_path == str(vocab_dir / tokenizer.CLIP_VOCAB_FILE)
  assert tok.tokenize("a photo of a cat.")[0, :8].tolist() == [
      49406, 320, 1125, 539, 320, 2368, 269, 49407]


def test_not_a_clip_vocabulary_is_refused(tmp_path):
  bad = tmp_path / "bad.txt"
  bad.write_text("#version\na b\n")
  with pytest.raises(ValueError, match="not a CLIP BPE vocabulary"):
    clip_bpe.ClipTokenizer(str(bad))
