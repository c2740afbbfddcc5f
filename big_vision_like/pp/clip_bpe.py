"""CLIP's byte-level BPE tokenizer (OpenAI CLIP / open_clip), in plain Python.

`ClipTokenizer(path)` reads the vocabulary `bpe_simple_vocab_16e6.txt.gz`
(the file OpenAI CLIP and open_clip publish; any path `fs` reads) and gives,
through the pp op

    tokenize(77, eos="sticky", model="clip:PATH", pad_value=0)

the ids of open_clip's `tokenize(texts)`: start-of-text (49406), the BPE ids
of the cleaned text, end-of-text (49407), truncated to 77 with the last kept
position set to end-of-text, then zero padding. 49,408 ids in all.

Encoding a text:
1. cleaning: `ftfy.fix_text` (mojibake, curly quotes, ligatures, full-width
   characters, control characters; when ftfy is installed, see below), then
   `html.unescape` twice, surrounding whitespace stripped, every run of
   whitespace replaced by one space; then lower-casing (`lower=False` keeps
   the case, as open_clip's `clean="whitespace"`);
2. pre-tokenisation by CLIP's pattern: the special token strings, the
   contractions 's 't 're 've 'm 'll 'd (case-insensitive), runs of letters,
   single digits, runs of other non-space characters;
3. each piece as UTF-8 bytes, each byte a printable character
   (`bytes_to_unicode`), the last one marked as a word end (`</w>`), merged
   by the vocabulary's merge list, lowest rank first.

Optional dependencies (`pip install big_vision_like[clip]`): `ftfy` and
`regex`. Without ftfy the ftfy step is skipped (a warning is logged once):
ids still match open_clip for text ftfy leaves unchanged (plain text, HTML
entities, accents in NFC form, emoji, CJK) and differ for text it repairs.
Without regex the pattern's Unicode classes (letters \\p{L}, numbers \\p{N})
are built from Python's `unicodedata`, the same apart from characters
assigned in a newer Unicode version than Python's.

In tf.data the tokenizer runs as a `tf.numpy_function` (`to_int_tf_op`):
Python code under the GIL, in the process running the pipeline; words are
cached, so repeated vocabulary costs one dictionary lookup.
"""

import functools
import gzip
import html
import logging
import sys
import unicodedata

import numpy as np

from big_vision_like import fs
from big_vision_like.pp import tokenizer as tok_lib

try:
  import ftfy  # pylint: disable=g-import-not-at-top
except ImportError:  # pragma: no cover (depends on the install)
  ftfy = None

try:
  import regex  # pylint: disable=g-import-not-at-top
except ImportError:  # pragma: no cover (depends on the install)
  regex = None

SOT, EOT = "<start_of_text>", "<end_of_text>"
NUM_MERGES = 49152 - 256 - 2  # Lines of the vocabulary file that are used.
_WORD_END = "</w>"
_CONTRACTIONS = r"'s|'t|'re|'ve|'m|'ll|'d"
_LOG = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def bytes_to_unicode():
  """{byte: printable character}, in vocabulary order.

  The 188 printable bytes map to themselves and come first (in byte order);
  the others (controls, space, ...) follow, mapped to chr(256), chr(257),
  ... in byte order. Ids 0..255 are these characters in this order, ids
  256..511 the same with the word-end mark.
  """
  kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
          *range(ord("®"), ord("ÿ") + 1)]
  others = [b for b in range(256) if b not in kept]
  table = {b: chr(b) for b in kept}
  table.update({b: chr(256 + n) for n, b in enumerate(others)})
  return table


@functools.lru_cache(maxsize=None)
def _unicode_classes():
  """Regex classes of letters (\\p{L}) and numbers (\\p{N}) for `re`."""
  def ranges(prefix):
    out, start, prev = [], None, None
    for cp in range(sys.maxunicode + 1):
      if unicodedata.category(chr(cp)).startswith(prefix):
        if start is None:
          start = cp
        prev = cp
      elif start is not None:
        out.append((start, prev))
        start = None
    if start is not None:
      out.append((start, prev))
    return "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in out)
  return ranges("L"), ranges("N")


@functools.lru_cache(maxsize=None)
def pretokenize_pattern(use_regex=True):
  """CLIP's pre-tokenisation pattern (compiled with `regex`, else `re`)."""
  specials = f"{SOT}|{EOT}"
  if use_regex and regex is not None:
    return regex.compile(
        rf"{specials}|{_CONTRACTIONS}|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+",
        regex.IGNORECASE)
  import re  # pylint: disable=g-import-not-at-top
  letters, numbers = _unicode_classes()
  # Case-insensitive for the fixed strings only (as the regex version, whose
  # letter/number classes are closed under case).
  return re.compile(rf"(?i:{specials}|{_CONTRACTIONS})|[{letters}]+|"
                    rf"[{numbers}]|[^\s{letters}{numbers}]+")


@functools.lru_cache(maxsize=1)
def _warn_no_ftfy():
  _LOG.warning("ftfy is not installed: CLIP text is tokenised without "
                  "ftfy.fix_text, so text it would repair (mojibake, curly "
                  "quotes, ...) gets other ids than open_clip's. "
                  "pip install ftfy (or big_vision_like[clip]).")


def clean(text, lower=True):
  """open_clip's text cleaning: ftfy, HTML entities, whitespace, case."""
  if ftfy is not None:
    text = ftfy.fix_text(text)
  else:
    _warn_no_ftfy()
  text = html.unescape(html.unescape(text)).strip()
  text = " ".join(text.split())
  return text.lower() if lower else text


def read_merges(path):
  """The merge list [(left, right), ...] of a (gzipped) vocabulary file."""
  data = fs.read_bytes(path)
  if data[:2] == b"\x1f\x8b":
    data = gzip.decompress(data)
  lines = data.decode("utf-8").split("\n")[1:NUM_MERGES + 1]
  merges = [tuple(line.split()) for line in lines]
  if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
    raise ValueError(f"{path}: not a CLIP BPE vocabulary (expected "
                     f"{NUM_MERGES} merge lines after the header).")
  return merges


class ClipTokenizer(tok_lib.TextTokenizer):
  """CLIP's BPE: text <-> ids, eagerly and as a TF op (see module doc)."""

  cleans_text = True  # The `tokenize` op must not lower-case before.

  def __init__(self, vocab_path, *, add_eos=False):
    """Reads the vocabulary.

    Args:
      vocab_path: `bpe_simple_vocab_16e6.txt.gz` (gzipped or not).
      add_eos: default of `to_int(..., eos=)`: append end-of-text.
    """
    self.model_path = str(vocab_path)
    self.add_eos = add_eos
    self._byte_char = bytes_to_unicode()
    self._char_byte = {c: b for b, c in self._byte_char.items()}
    merges = read_merges(vocab_path)
    chars = list(self._byte_char.values())
    pieces = (chars + [c + _WORD_END for c in chars] +
              ["".join(m) for m in merges] + [SOT, EOT])
    self._ids = {p: i for i, p in enumerate(pieces)}
    self._pieces = pieces
    self._ranks = {m: i for i, m in enumerate(merges)}
    self._words = {SOT: [self._ids[SOT]], EOT: [self._ids[EOT]]}
    self._pattern = pretokenize_pattern()

  @property
  def vocab_size(self):
    return len(self._pieces)

  @property
  def sot_token(self):
    """Id of start-of-text (49406), first in every encoded text."""
    return self._ids[SOT]

  @property
  def eos_token(self):
    """Id of end-of-text (49407)."""
    return self._ids[EOT]

  @property
  def pad_token(self):
    """-1: the vocabulary has no padding piece (open_clip pads with 0)."""
    return -1

  def piece_to_id(self, piece):
    """Id of a piece (e.g. "a</w>", "<end_of_text>")."""
    if piece not in self._ids:
      hint = (" CLIP has no padding piece; open_clip pads with id 0: pass "
              "pad_value=0." if piece == "<pad>" else "")
      raise ValueError(f"Piece {piece!r} is not in {self.model_path}.{hint}")
    return self._ids[piece]

  def to_piece(self, idx):
    return self._pieces[int(idx)]

  def _bpe(self, word):
    """Ids of one pre-token (cached)."""
    ids = self._words.get(word)
    if ids is not None:
      return ids
    chars = "".join(self._byte_char[b] for b in word.encode("utf-8"))
    parts = [*chars[:-1], chars[-1] + _WORD_END]
    while len(parts) > 1:
      ranked = [(self._ranks.get(pair, NUM_MERGES), k)
                for k, pair in enumerate(zip(parts, parts[1:]))]
      rank, k = min(ranked)
      if rank == NUM_MERGES:
        break
      left, right = parts[k], parts[k + 1]
      merged, i = parts[:k], k  # Merge every occurrence, left to right.
      while i < len(parts):
        if i + 1 < len(parts) and parts[i] == left and parts[i + 1] == right:
          merged.append(left + right)
          i += 2
        else:
          merged.append(parts[i])
          i += 1
      parts = merged
    ids = [self._ids[p] for p in parts]
    self._words[word] = ids
    return ids

  def encode_text(self, text, lower=True):
    """BPE ids of a text, without start/end tokens."""
    if isinstance(text, bytes):
      text = text.decode("utf-8")
    ids = []
    for word in self._pattern.findall(clean(text, lower)):
      ids.extend(self._bpe(word))
    return ids

  def _encode(self, text, eos, lower=True):
    end = [self.eos_token] if eos else []
    return [self.sot_token] + self.encode_text(text, lower) + end

  def _decode(self, ids, stop_at_eos):
    ids = [int(i) for i in ids]
    if stop_at_eos and self.eos_token in ids:
      ids = ids[:ids.index(self.eos_token)]
    chars = "".join(self._pieces[i] for i in ids
                    if i not in (self.sot_token, self.eos_token))
    text = bytes(self._char_byte[c] for c in chars).decode(
        "utf-8", errors="replace")  # "</w>" is plain ASCII here.
    return text.replace(_WORD_END, " ").strip()

  def tokenize(self, texts, context_length=77):
    """open_clip's `tokenize`: an int32 array [N, context_length].

    Start, text, end; truncated keeping end-of-text last; zero padding.
    """
    texts = [texts] if isinstance(texts, (str, bytes)) else texts
    out = np.zeros((len(texts), context_length), np.int32)
    for row, text in zip(out, texts):
      ids = self._encode(text, eos=True)[:context_length]
      ids[-1] = self.eos_token
      row[:len(ids)] = ids
    return out
