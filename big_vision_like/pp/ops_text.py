"""Text pp ops, with big_vision's names and semantics.

- `tokenize(max_len, eos, model)`: text -> int32 ids of length `max_len`
  (SentencePiece, or CLIP's BPE with `model="clip:PATH"`).
- `choice(n)`: picks one (or `n`) of several entries, e.g. of the captions.
- `lower`: lower-cases strings.
- `strfmt(template)`: builds a string from features, e.g. "{label}".
- `pad_to_shape(shape)`: pads (and truncates) a tensor to a static shape.

The SigLIP text input of a dataset with several captions per image:

    choice(inkey="texts", outkey="text")|
    tokenize(64, "sticky", model="bvl_shapes", pad_value=1, inkey="text")

`choice` is random: it draws from the op's stateless seed (`data["_rng"]`),
so a pipeline gives the same pick for the same example seed.
"""

import string

import tensorflow as tf

from big_vision_like.pp import tokenizer as tok_lib
from big_vision_like.pp import utils
from big_vision_like.registry import PP_OPS

EOS_MODES = ("none", "yes", "sticky")


def fit_to_length(tokens, max_len, *, pad_value, sticky_eos=None):
  """Truncates/pads each row of a ragged [N, None] tensor to [N, max_len].

  Args:
    tokens: an int `tf.RaggedTensor` [N, None].
    max_len: the output length.
    pad_value: fills the positions after the tokens.
    sticky_eos: if not None, rows longer than `max_len` end in this id (their
      last kept token is replaced by it).

  Returns:
    A dense tensor [N, max_len] of the tokens' dtype.
  """
  out = tokens.to_tensor(default_value=tf.cast(pad_value, tokens.dtype),
                         shape=[None, max_len])
  if sticky_eos is not None:
    cut = tokens.row_lengths() > max_len
    last = tf.range(max_len) == max_len - 1
    out = tf.where(cut[:, None] & last[None, :],
                   tf.cast(sticky_eos, out.dtype), out)
  return out


def _pad_id(tokenizer, pad_value):
  if isinstance(pad_value, str):
    return tokenizer.piece_to_id(pad_value)
  return int(pad_value)


@PP_OPS.register("tokenize")
def get_tokenize(max_len, eos, model, lower=True, pad_value="<pad>", *,
                 key=None, inkey=None, outkey=None):
  """Tokenizes text into int32 ids of length `max_len` (big_vision semantics).

  With max_len=3, id("</s>")=1 and id("a")=2 (with pad_value 0):

  - eos="none":   "a" -> [2, 0, 0], "aa" -> [2, 2, 0], "aaaa" -> [2, 2, 2]
  - eos="yes":    "a" -> [2, 1, 0], "aa" -> [2, 2, 1], "aaaa" -> [2, 2, 2]
  - eos="sticky": "a" -> [2, 1, 0], "aa" -> [2, 2, 1], "aaaa" -> [2, 2, 1]

  "yes" lets a truncated text end without EOS (for generative models);
  "sticky" always keeps the EOS, and with `pad_value=1` (= the EOS id) is the
  SigLIP / LiT convention for text towers pooling the last token.

  CLIP's BPE (`model="clip:PATH"`, see clip_bpe.py): every text starts with
  the start-of-text id, and `tokenize(77, "sticky", model="clip:PATH",
  pad_value=0)` gives exactly open_clip's `tokenize()` ids. It has no
  `<pad>` piece, so `pad_value` must be given; `lower` is applied inside the
  tokenizer, after its text cleaning.

  Args:
    max_len: output length (texts are truncated or padded to it).
    eos: "none", "yes" or "sticky" (see above).
    model: tokenizer name ("bvl_shapes", "c4_en", ...), SentencePiece model
      path, or "clip:PATH" (`tokenizer.get_tokenizer`).
    lower: lower-case the text first.
    pad_value: padding id, or a piece whose id pads (default "<pad>", id 0 in
      the built-in and c4_en models).
    key: reads and writes `key` (overridden by `inkey` / `outkey`).
    inkey: the text feature (default "texts"); a scalar string gives
      [max_len], a string tensor of shape S gives [*S, max_len].
    outkey: where the ids go (default "labels").

  Returns:
    The op.
  """
  if eos not in EOS_MODES:
    raise ValueError(f"eos must be one of {EOS_MODES}, got {eos!r}.")
  tokenizer = tok_lib.get_tokenizer(model)
  pad = _pad_id(tokenizer, pad_value)
  src = inkey or key or "texts"
  dst = outkey or key or "labels"
  sticky = tokenizer.eos_token if eos == "sticky" else None
  # CLIP's BPE cleans the text (ftfy, HTML) before lower-casing it itself.
  encode_kw = {"lower": lower} if tokenizer.cleans_text else {}
  tf_lower = lower and not tokenizer.cleans_text

  def _tokenize(data):
    data = dict(data)
    text = tf.convert_to_tensor(data[src])
    if tf_lower:
      text = tf.strings.lower(text, encoding="utf-8")
    flat = tf.reshape(text, [-1])
    ids = tokenizer.to_int_tf_op(flat, eos=eos != "none", **encode_kw)
    ids = fit_to_length(ids, max_len, pad_value=pad, sticky_eos=sticky)
    out = tf.reshape(ids, tf.concat([tf.shape(text), [max_len]], axis=0))
    data[dst] = tf.ensure_shape(out, text.shape.concatenate([max_len]))
    return data

  return _tokenize


@PP_OPS.register("lower")
@utils.keyed("text")
def get_lower():
  """Lower-cases a string tensor (UTF-8 aware)."""
  return lambda text: tf.strings.lower(text, encoding="utf-8")


def _as_list(keys):
  return [keys] if isinstance(keys, str) else list(keys)


def _draw_indices(n, nitems, seed):
  """Sorted random indices, without repeats: n (int) or [lo, hi] of them."""
  order = tf.argsort(tf.random.stateless_uniform(
      [nitems], seed=tf.random.experimental.stateless_fold_in(seed, 0)))
  if isinstance(n, int):
    count = tf.minimum(n, nitems)
  else:
    count = tf.random.stateless_uniform(
        [], seed=tf.random.experimental.stateless_fold_in(seed, 1),
        minval=n[0], maxval=n[1] + 1, dtype=tf.int32)
    count = tf.minimum(count, nitems)
  return tf.sort(order[:count])  # Keep the original order of the entries.


@PP_OPS.register("choice")
def get_choice(n="single", key=None, fewer_ok=False, inkey=None,
               outkey=None):
  """Picks random entries (along axis 0), the same ones for all keys.

  Args:
    n: "single" picks one entry and drops the leading axis; an int picks that
      many distinct entries (in their original order); [lo, hi] picks a
      random number between lo and hi (inclusive).
    key: a key or list of keys, read and written (default "texts").
    fewer_ok: allow fewer than `n` (or `lo`) entries (then all are kept and
      the leading axis has no static size); else that fails at run time.
    inkey: key(s) to read (default `key`).
    outkey: key(s) to write (default `inkey`); may contain "{key}", replaced
      by the matching inkey (e.g. "{key}_choice").

  Returns:
    The op.
  """
  if not (n == "single" or isinstance(n, int) or (
      isinstance(n, (list, tuple)) and len(n) == 2)):
    raise ValueError(f'n must be "single", an int or [min, max]; got {n!r}.')
  inkeys = _as_list(inkey or key or "texts")
  outkeys = _as_list(outkey or inkey or key or "texts")
  if len(inkeys) != len(outkeys):
    raise ValueError(f"{len(inkeys)} inkeys but {len(outkeys)} outkeys.")
  outkeys = [ok.format(key=ik) for ik, ok in zip(inkeys, outkeys)]
  min_n = 1 if n == "single" else n if isinstance(n, int) else n[0]

  def _choice(data):
    data = dict(data)
    values = [tf.convert_to_tensor(data[k]) for k in inkeys]
    nitems = tf.shape(values[0])[0]
    checks = [tf.debugging.assert_equal(
        tf.shape(v)[0], nitems, message=f"choice: {k} has another length")
              for k, v in zip(inkeys[1:], values[1:])]
    if not fewer_ok or n == "single":
      checks.append(tf.debugging.assert_greater_equal(
          nitems, min_n, message=f"choice: fewer than {min_n} entries"))
    with tf.control_dependencies(checks):
      nitems = tf.identity(nitems)
    seed = utils.get_rng(data)
    if n == "single":
      index = tf.random.stateless_uniform([], seed=seed, minval=0,
                                          maxval=nitems, dtype=tf.int32)
      picked = [tf.gather(v, index) for v in values]
    else:
      indices = _draw_indices(n, nitems, seed)
      picked = [tf.gather(v, indices) for v in values]
      if isinstance(n, int) and not fewer_ok:
        picked = [tf.ensure_shape(p, [n] + p.shape[1:].as_list())
                  for p in picked]
    data.update(zip(outkeys, picked))
    return data

  return _choice


@PP_OPS.register("strfmt")
def get_strfmt(template, outkey="text"):
  """Formats `template` with features, e.g. strfmt("a photo of {name}.").

  Fields are feature names (no format specs or conversions); non-string
  features are printed with `tf.strings.format` (e.g. 3 -> "3").

  Args:
    template: a `str.format` template naming features.
    outkey: where the scalar string goes.

  Returns:
    The op.
  """
  parts = list(string.Formatter().parse(template))
  for _, field, spec, conversion in parts:
    if field is not None and (spec or conversion or not field):
      raise ValueError(f"strfmt supports plain {{feature}} fields only, got "
                       f"{template!r}.")

  def _strfmt(data):
    data = dict(data)
    pieces = []
    for literal, field, _, _ in parts:
      pieces.append(tf.constant(literal))
      if field is not None:
        value = tf.convert_to_tensor(data[field])
        if value.dtype != tf.string:
          value = tf.strings.format("{}", value, summarize=-1)
        pieces.append(value)
    data[outkey] = tf.strings.join(pieces)
    return data

  return _strfmt


def _fit_dim(x, axis, size, where, pad_value):
  """Truncates, then pads, axis `axis` of `x` to `size` entries."""
  rank = x.shape.rank
  cur = tf.shape(x)[axis]
  extra = tf.maximum(cur - size, 0)
  begin, sizes = [0] * rank, [-1] * rank
  begin[axis] = {"after": 0, "before": extra, "both": extra // 2}[where]
  sizes[axis] = tf.minimum(cur, size)
  x = tf.slice(x, begin, sizes)
  missing = size - sizes[axis]
  paddings = [[0, 0]] * rank
  paddings[axis] = {"after": [0, missing], "before": [missing, 0],
                    "both": [missing // 2, missing - missing // 2]}[where]
  return tf.pad(x, paddings, constant_values=tf.constant(pad_value, x.dtype))


@PP_OPS.register("pad_to_shape")
@utils.keyed("image")
def get_pad_to_shape(shape, pad_value=0, where="after"):
  """Pads (or truncates) a tensor to the static `shape`.

  Args:
    shape: the target shape, one entry per axis; None keeps that axis.
    pad_value: the value padded in.
    where: "after", "before" or "both" (centred): where padding goes, and
      which end truncation keeps ("after" keeps the start).

  Returns:
    The tensor function.
  """
  if where not in ("after", "before", "both"):
    raise ValueError(f'where must be "after", "before" or "both", got '
                     f"{where!r}.")
  shape = list(shape)

  def _pad_to_shape(x):
    if x.shape.rank != len(shape):
      raise ValueError(f"pad_to_shape{tuple(shape)}: tensor has rank "
                       f"{x.shape.rank}.")
    static = x.shape
    for axis, size in enumerate(shape):
      if size is not None:
        x = _fit_dim(x, axis, size, where, pad_value)
    return tf.ensure_shape(x, [s if s is not None else d
                               for s, d in zip(shape, static)])

  return _pad_to_shape
