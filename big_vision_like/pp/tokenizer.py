"""Tokenizers: SentencePiece by model path or name, and CLIP's BPE.

`get_tokenizer(name_or_path)` returns a `Tokenizer` for a `.model` file (a
local path or a bucket URL: any path `fs` reads) or a name registered in
`TOKENIZERS`, whose entries are factories `fn() -> model path`; for
`"clip:PATH"` it returns CLIP's BPE tokenizer (`clip_bpe.py`) of the
vocabulary `PATH` (`bpe_simple_vocab_16e6.txt.gz`), and for `"clip"` that
file from the tokenizer directory or the installed open_clip package.

Named vocabularies (big_vision's names; nothing is downloaded): "c4_en",
"cc_all", "t5", "mc4", "mt5", "gemma" are files in the tokenizer directory,
`$BVL_TOKENIZERS`, else `<data dir>/tokenizers` (data dir below). Each name
is found as `<name>.model` or under its published path (`NAMED_VOCABS`):
c4_en `cc_en.32000/sentencepiece.model`, cc_all
`cc_all.32000/sentencepiece.model`, t5
`cc_all.32000.100extra/sentencepiece.model`, mc4 and mt5
`mc4.250000.100extra/sentencepiece.model` (the layout of
`gs://t5-data/vocabs/`, so `BVL_TOKENIZERS=gs://t5-data/vocabs` works where
that bucket is reachable), gemma `gemma_tokenizer.model`. A missing file is
an error naming the files and the directory searched.

Built-in tokenizer `"bvl_shapes"`: a byte-pair-encoding SentencePiece model
with `BUILTIN_VOCAB_SIZE` (256) pieces that this package trains, on first
use, on every caption and zero-shot prompt of the `bvl_shapes` dataset (plus
the lower-case letters, digits and common punctuation, so any lower-case
ASCII text encodes without `<unk>`). Training is deterministic (fixed corpus
order, one thread) and takes well under a second; the model is cached as
`<data dir>/tokenizers/bvl_shapes-bpe256-<hash>.model`, where the data dir is
`$BVL_DATA_DIR`, else the TFDS data dir. Nothing is downloaded.

Its ids follow the T5 / c4_en layout used by public SigLIP checkpoints:
`<pad>` = 0, `</s>` (EOS) = 1, `<unk>` = 2, no BOS. Text is expected lower
case (upper-case letters map to `<unk>`). The SigLIP convention, padding
with the EOS id 1 after a "sticky" EOS, is the pp op
`tokenize(..., eos="sticky", pad_value=1)` (see ops_text.py).
"""

import functools
import hashlib
import importlib.util
import io
import os
import string

import numpy as np
import sentencepiece as spm
import tensorflow as tf

from big_vision_like import fs
from big_vision_like import registry

TOKENIZERS = registry.Registry("tokenizer")

BUILTIN_VOCAB_SIZE = 256
DATA_DIR_ENV = "BVL_DATA_DIR"  # Same variable as datasets/core.py.
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
_EXTRA_TEXTS = (" ".join(string.ascii_lowercase), " ".join(string.digits),
                " ".join(".,;:!?'\"-()/&"))


class TextTokenizer:
  """Base of the tokenizers: batching, the TF op and decoding of batches.

  Subclasses define `_encode(text, eos, **kw) -> [ids]`,
  `_decode(ids, stop_at_eos) -> str`, `eos_token`, `piece_to_id` and
  `add_eos`. `cleans_text` says whether the tokenizer cleans and lower-cases
  text itself (CLIP's BPE), so the `tokenize` op must not lower-case first.
  """

  cleans_text = False
  add_eos = False

  def to_int(self, text, *, eos=None, **kw):
    """Token ids of a string, or a list of lists for a list of strings.

    Args:
      text: a string (or bytes), or a list/tuple of them.
      eos: append the EOS id; None means the constructor's `add_eos`.
      **kw: options of the subclass's encoder (CLIP: `lower`).

    Returns:
      A list of ints, or a list of such lists.
    """
    eos = self.add_eos if eos is None else eos
    if isinstance(text, (str, bytes)):
      return self._encode(text, eos, **kw)
    return [self._encode(t, eos, **kw) for t in text]

  def _encode_flat(self, texts, eos, **kw):
    texts = np.asarray(texts, dtype=object).reshape(-1)  # Scalars: bytes.
    ids = [self._encode(t, eos, **kw) for t in texts]
    lengths = np.array([len(x) for x in ids], np.int64)
    values = np.fromiter((i for x in ids for i in x), np.int32,
                         count=int(lengths.sum()))
    return values, lengths

  def to_int_tf_op(self, text, *, eos=None, **kw):
    """`to_int` as a TF op (usable in tf.data; encodes in Python).

    The op is a `tf.numpy_function`: it runs the Python encoder under the
    GIL, in the process that runs the tf.data pipeline, and cannot be
    serialised into a SavedModel.

    Args:
      text: a string tensor of statically known rank.
      eos: append the EOS id; None means the constructor's `add_eos`.
      **kw: options of the subclass's encoder (CLIP: `lower`).

    Returns:
      For a scalar, an int32 tensor [num_tokens]; for a tensor of shape
      [d0, ..., dk], an int32 `tf.RaggedTensor` [d0, ..., dk, None].
    """
    eos = self.add_eos if eos is None else eos
    text = tf.convert_to_tensor(text, tf.string)
    values, lengths = tf.numpy_function(
        functools.partial(self._encode_flat, eos=eos, **kw), [text],
        [tf.int32, tf.int64], stateful=False, name="tokenizer_encode")
    values.set_shape([None])
    if text.shape.rank == 0:
      return values
    lengths.set_shape([text.shape.num_elements()])
    out = tf.RaggedTensor.from_row_lengths(values, lengths, validate=False)
    for k in range(text.shape.rank - 1, 0, -1):
      out = tf.RaggedTensor.from_uniform_row_length(
          out, tf.shape(text, out_type=tf.int64)[k], validate=False)
    return out

  def to_str(self, tokens, *, stop_at_eos=True):
    """Inverse of `to_int`: the text of ids, or a list for nested ids.

    Args:
      tokens: ids (list, numpy array, tensor) or a batch of them ([N, L]
        array or list of lists).
      stop_at_eos: drop everything from the first EOS on.

    Returns:
      A string, or a list of strings.
    """
    if isinstance(tokens, (tf.Tensor, tf.RaggedTensor)):
      tokens = tokens.numpy() if isinstance(tokens, tf.Tensor) else (
          tokens.to_list())
    if _is_batch(tokens):
      return [self._decode(t, stop_at_eos) for t in tokens]
    return self._decode(tokens, stop_at_eos)


class Tokenizer(TextTokenizer):
  """A SentencePiece model: text <-> token ids, eagerly and as TF ops."""

  def __init__(self, model_path, *, add_eos=False):
    """Loads the model.

    Args:
      model_path: path of a SentencePiece `.model` file (local or a bucket
        URL: read with `fs`).
      add_eos: default of `to_int(..., eos=)`: append the EOS id.
    """
    self._sp = spm.SentencePieceProcessor(
        model_proto=fs.read_bytes(model_path))
    self.model_path = os.fspath(model_path)
    self.add_eos = add_eos

  @property
  def vocab_size(self):
    """Number of pieces (ids are 0 .. vocab_size - 1)."""
    return self._sp.get_piece_size()

  @property
  def pad_token(self):
    """Id of `<pad>` (-1 if the model has none)."""
    return self._sp.pad_id()

  @property
  def eos_token(self):
    """Id of `</s>`."""
    return self._sp.eos_id()

  @property
  def unk_token(self):
    """Id of `<unk>`."""
    return self._sp.unk_id()

  def piece_to_id(self, piece):
    """Id of `piece` (e.g. "<pad>"); raises ValueError if unknown."""
    idx = self._sp.piece_to_id(piece)
    if idx == self.unk_token and piece != self._sp.id_to_piece(idx):
      raise ValueError(f"Piece {piece!r} is not in {self.model_path}.")
    return idx

  def to_piece(self, idx):
    """The piece of id `idx`."""
    return self._sp.id_to_piece(int(idx))

  def _encode(self, text, eos):
    if isinstance(text, bytes):
      text = text.decode("utf-8")
    return self._sp.encode(text) + ([self.eos_token] if eos else [])

  def _decode(self, ids, stop_at_eos):
    ids = [int(i) for i in ids]
    if stop_at_eos and self.eos_token in ids:
      ids = ids[:ids.index(self.eos_token)]
    return self._sp.decode(ids)  # Control ids (<pad>, </s>) decode to "".


def _is_batch(tokens):
  if isinstance(tokens, np.ndarray):
    return tokens.ndim > 1
  return bool(len(tokens)) and isinstance(tokens[0],
                                          (list, tuple, np.ndarray))


def train_sentencepiece(texts, vocab_size, model_type="bpe"):
  """Trains a SentencePiece model on `texts`; returns the serialized model.

  Deterministic for a given `texts` order: one thread, every sentence used.
  Ids: `<pad>` 0, `</s>` 1, `<unk>` 2, no BOS.

  Args:
    texts: an iterable of training sentences.
    vocab_size: number of pieces.
    model_type: "bpe" or "unigram" (SentencePiece model types).

  Returns:
    The model, as bytes (what a `.model` file holds).
  """
  buf = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(list(texts)), model_writer=buf,
      model_type=model_type, vocab_size=vocab_size, character_coverage=1.0,
      pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
      num_threads=1, input_sentence_size=0, minloglevel=2)
  return buf.getvalue()


def default_data_dir():
  """`$BVL_DATA_DIR`, else the TFDS data dir (where built-in data lives)."""
  if os.environ.get(DATA_DIR_ENV):
    return os.environ[DATA_DIR_ENV]
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.core.constants.DATA_DIR


def builtin_corpus():
  """The training sentences of the built-in `bvl_shapes` tokenizer."""
  # pylint: disable-next=g-import-not-at-top
  from big_vision_like.datasets import shapes
  return shapes.caption_corpus() + list(_EXTRA_TEXTS)


def train_builtin_tokenizer(data_dir=None, *, vocab_size=BUILTIN_VOCAB_SIZE):
  """Trains (once) and caches the `bvl_shapes` tokenizer; returns its path.

  Args:
    data_dir: cache root (default `default_data_dir()`); the model is written
      to `<data_dir>/tokenizers/`.
    vocab_size: number of pieces.

  Returns:
    The path of the `.model` file.
  """
  corpus = builtin_corpus()
  digest = hashlib.sha256(
      "\n".join(corpus + [str(vocab_size)]).encode()).hexdigest()[:10]
  folder = fs.join(data_dir or default_data_dir(), "tokenizers")
  path = fs.join(folder, f"bvl_shapes-bpe{vocab_size}-{digest}.model")
  if not fs.exists(path):
    fs.write_atomic(path, train_sentencepiece(corpus, vocab_size))
  return path


TOKENIZERS.register("bvl_shapes", train_builtin_tokenizer)


# Named vocabularies (big_vision's names): file names looked up in the
# tokenizer directory, first a flat `<name>.model`, then the path under
# `gs://t5-data/vocabs/` (or `gs://big_vision/`) the files are published at,
# so a copy of that bucket folder (or the bucket itself) serves as the
# directory.
NAMED_VOCABS = {
    "c4_en": ("c4_en.model", "cc_en.32000/sentencepiece.model"),  # 32k.
    "cc_all": ("cc_all.model", "cc_all.32000/sentencepiece.model"),  # 32k.
    "t5": ("t5.model", "cc_all.32000.100extra/sentencepiece.model"),
    "mc4": ("mc4.model", "mc4.250000.100extra/sentencepiece.model"),  # 250k.
    "mt5": ("mt5.model", "mc4.250000.100extra/sentencepiece.model"),
    "gemma": ("gemma.model", "gemma_tokenizer.model"),  # 256k (SigLIP 2).
}
TOKENIZER_DIR_ENV = "BVL_TOKENIZERS"
CLIP_PREFIX = "clip"
CLIP_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"


def tokenizer_dir():
  """`$BVL_TOKENIZERS`, else `<data dir>/tokenizers` (see module doc)."""
  if os.environ.get(TOKENIZER_DIR_ENV):
    return os.environ[TOKENIZER_DIR_ENV]
  return fs.join(default_data_dir(), "tokenizers")


def find_named_file(name, candidates):
  """The first of `candidates` (file names) that exists in `tokenizer_dir()`.

  Raises:
    FileNotFoundError: naming the files and the directory searched.
  """
  folder = tokenizer_dir()
  for candidate in candidates:
    path = fs.join(folder, candidate)
    if fs.exists(path):
      return path
  setting = (f"${TOKENIZER_DIR_ENV}" if os.environ.get(TOKENIZER_DIR_ENV)
             else f"<data dir>/tokenizers; set ${TOKENIZER_DIR_ENV} to "
             "choose another directory")
  raise FileNotFoundError(
      f"Tokenizer {name!r}: none of {list(candidates)} is in {folder!r} "
      f"({setting}). Copy the vocabulary file there.")


def _named_vocab(name):
  return find_named_file(name, NAMED_VOCABS[name])


for _name in NAMED_VOCABS:
  TOKENIZERS.register(_name, functools.partial(_named_vocab, _name))


def model_path(name_or_path):
  """The `.model` path of a registered tokenizer name, or the path itself."""
  if name_or_path in TOKENIZERS:
    return TOKENIZERS.get(name_or_path)()
  if not fs.exists(name_or_path):
    raise ValueError(
        f"Tokenizer {name_or_path!r} is neither a registered name "
        f"{TOKENIZERS.names()} nor an existing SentencePiece model file.")
  return name_or_path


def clip_vocab_path(spec):
  """The BPE vocabulary of `"clip"` or `"clip:PATH"`.

  `"clip"` alone: `bpe_simple_vocab_16e6.txt.gz` in `tokenizer_dir()`, else
  the copy inside the installed open_clip package (found without importing
  it).
  """
  path = spec[len(CLIP_PREFIX) + 1:]
  if path:
    if not fs.exists(path):
      raise FileNotFoundError(f"Tokenizer {spec!r}: no file {path!r}.")
    return path
  try:
    return find_named_file(spec, (CLIP_VOCAB_FILE,))
  except FileNotFoundError:
    spec_oc = importlib.util.find_spec("open_clip")
    if spec_oc is None or not spec_oc.submodule_search_locations:
      raise
    path = fs.join(list(spec_oc.submodule_search_locations)[0],
                   CLIP_VOCAB_FILE)
    if not fs.exists(path):
      raise
    return path


def _is_clip(name_or_path):
  return name_or_path == CLIP_PREFIX or name_or_path.startswith(
      CLIP_PREFIX + ":")


def get_tokenizer(name_or_path, *, add_eos=False):
  """Returns the (cached) tokenizer of a name, a model path or a CLIP spec.

  Args:
    name_or_path: a registered name ("bvl_shapes", "c4_en", ...: looked up in
      `tokenizer_dir()`), a SentencePiece `.model` path, or `"clip:PATH"` /
      `"clip"` for CLIP's BPE vocabulary (`clip_bpe.ClipTokenizer`).
    add_eos: the tokenizer's default for appending EOS in `to_int`.

  Returns:
    A `Tokenizer` (or `clip_bpe.ClipTokenizer`).
  """
  if _is_clip(os.fspath(name_or_path)):
    return _load_clip(clip_vocab_path(os.fspath(name_or_path)), add_eos)
  return _load(model_path(name_or_path), add_eos)


@functools.lru_cache(maxsize=None)
def _load(path, add_eos):
  return Tokenizer(path, add_eos=add_eos)


@functools.lru_cache(maxsize=None)
def _load_clip(path, add_eos):
  # pylint: disable-next=g-import-not-at-top
  from big_vision_like.pp import clip_bpe
  return clip_bpe.ClipTokenizer(path, add_eos=add_eos)
