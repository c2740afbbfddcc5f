r"""Own data as `DataSource`s: an image folder tree, or JSONL index files.

Both are chosen by name alone, e.g. `config.input.data.name =
"imagefolder:/data/pets"` or `"jsonl:/data/captions"`; extra keys of
`config.input.data` (e.g. `skip_bad=True`) are passed to the source. A
relative ROOT is taken relative to `data_dir` when one is given.

`imagefolder:ROOT` reads `ROOT/SPLIT/CLASS/**/*.{jpg,jpeg,png}` (extensions
case-insensitive; other files are ignored). Every subdirectory of ROOT is a
split. The classes are the sorted union of the CLASS directory names over all
splits, so a label means the same class in every split (`class_names`).
Features: `image` (the encoded bytes: pp `decode` them), `label` (int64),
`id` (the path below ROOT, "SPLIT/CLASS/name.jpg": unique over splits),
`filename` (the full path). ROOT may be a bucket URL (`gs://...`): the
index and the images are read with `tf.io.gfile` / tf.data, path strings are
joined with `fs`.

`jsonl:ROOT` reads `ROOT/SPLIT.jsonl`, one JSON object a line (blank lines
are skipped):

    {"image": "imgs/1.jpg", "text": ["a cat", "a cat on a mat"], "label": 3}

`image` (required) is a path relative to ROOT; `text` is a caption or a
non-empty list of captions; `label` a class index >= 0; `id` an optional
string or int (default "SPLIT:LINE"); a line needs `text` or `label`, other
keys are ignored. `ROOT/classnames.txt` (optional, one name a line) becomes
`class_names`, and labels must index it. Features: `image` (encoded bytes),
`texts` (the line's captions, a [num_texts] string vector whose length varies
from line to line: pp must pick from it, e.g. `choice(inkey="texts",
outkey="text")`, or drop it before batching), `texts_padded` (all captions
padded with "" to the split's largest caption count, a fixed-size
[max_texts] vector for retrieval evals), `num_texts` (int32), `label` (int64,
-1 where absent), `id`, `filename`.

Splits use TFDS syntax: "train", "train[:10%]", "train[100:]+val". Examples
are in a fixed pseudo-random order (sorted by a hash of their id), as if
shuffled once when written, so slices are random subsets and shuffle buffers
see all classes. Process `i` of `k` reads a contiguous share of the split,
in split order, as `tfds.even_splits` cuts one: shares of `n // k`
examples, the first `n % k` one larger (with `drop_remainder`, all have
`n // k` and the last `n % k` examples are dropped). So shares put one after
the other in process order are the split in order, which is what evaluators
that gather per-example outputs (`save_predictions`, features for few-shot,
kNN, linear probes) rely on. A split "a+b" is cut as a whole: process 0 reads
the start of "a", the last process the end of "b".

The index (file names, JSONL lines, class names) is read and checked when the
source is built: a JSONL line with a missing or invalid field, or naming an
image that does not exist, is an error naming the file and line.

Images are checked by decoding them (`find_bad_images`: `tf.io.decode_image`,
as the pp `decode` op does, in parallel), once per process, the first time a
split is used:

* by default (`skip_bad=False`), `get_records` / `get_tfdata` decode the
  images of this process's share of the split that were not checked before,
  and raise a `ValueError` naming every file that does not decode (empty,
  truncated, damaged, not an image), with its split, id and JSONL line. This
  costs about one epoch of decoding, once (e.g. 0.2 s for 2,000 32x32 PNGs
  on 2 busy CPU cores), and fails before training instead of in the middle.
  A JPEG whose damage libjpeg accepts (it decodes to wrong pixels and only
  prints "Corrupt JPEG data") cannot be found this way;
* `skip_bad=True` instead decodes every image of the base splits used
  (before they are sliced or shared out between processes, so processes
  agree), drops the undecodable ones, logs how many and which, and keeps
  them in `skipped_files(split)`;
* `check_images=False` (with `skip_bad=False`) skips the check, e.g. for
  huge trees known to be good.

Images are read in tf.data (`tf.io`, so any filesystem TF knows works) and
their first bytes checked again: a file that is not a JPEG/PNG/GIF/BMP/WebP
image (e.g. replaced after the check) is an error naming it.

`datasets.get_source` caches these sources (by resolved root and options) and
reuses one while the files that define its index are unchanged (`is_current`:
the same image file names, the same JSONL/class-name bytes), so a split is
listed and checked once per process however many evaluators read it.
"""

import dataclasses
import hashlib
import json
import threading
import types
from typing import NamedTuple

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from big_vision_like import fs
from big_vision_like import registry

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
CLASSNAMES_FILE = "classnames.txt"
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a",
               b"BM")


@dataclasses.dataclass(frozen=True)
class _Index:
  """Examples of (part of) a split, as numpy arrays in a fixed order."""
  filename: np.ndarray  # [N] str, full paths.
  id: np.ndarray  # [N] str
  label: np.ndarray  # [N] int64
  texts: np.ndarray | None = None  # [N, T] str, "" padded.
  num_texts: np.ndarray | None = None  # [N] int32
  where: np.ndarray | None = None  # [N] str, e.g. "FILE:LINE" (for errors).

  def __len__(self):
    return len(self.filename)

  def take(self, indices):
    """The examples at `indices` (an index array, mask or slice)."""
    return _Index(**{f.name: None if getattr(self, f.name) is None
                     else getattr(self, f.name)[indices]
                     for f in dataclasses.fields(self)})

  @classmethod
  def concatenate(cls, parts):
    return cls(**{f.name: None if getattr(parts[0], f.name) is None
                  else np.concatenate([getattr(p, f.name) for p in parts])
                  for f in dataclasses.fields(cls)})

  def tensors(self):
    """The index as a dict of tensors (string arrays typed as tf.string)."""
    out = {"filename": tf.constant(self.filename, tf.string),
           "id": tf.constant(self.id, tf.string),
           "label": tf.constant(self.label, tf.int64)}
    if self.texts is not None:
      out["texts_padded"] = tf.constant(self.texts, tf.string)
      out["num_texts"] = tf.constant(self.num_texts, tf.int32)
    return out


def _hash_order(keys):
  """A fixed pseudo-random permutation: indices sorted by md5(key)."""
  hashes = [int.from_bytes(hashlib.md5(k.encode()).digest()[:8], "big")
            for k in keys]
  return np.argsort(np.array(hashes, np.uint64), kind="stable")


def _strs(values):
  return np.array(values, dtype=object).reshape(len(values))


def _is_image_file(name):
  return name.lower().endswith(IMAGE_EXTENSIONS)


def _listdir(path):
  return sorted(name.rstrip("/") for name in tf.io.gfile.listdir(path))


def _resolve_root(root, data_dir):
  if not root:
    raise ValueError("Own-data names need a path, e.g. 'jsonl:/data/x'.")
  root = fs.expanduser(root)
  if data_dir is not None and not fs.isabs(root):
    root = fs.join(data_dir, root)
  if not tf.io.gfile.isdir(root):
    raise FileNotFoundError(f"Data directory {root!r} does not exist.")
  return root


def _split_instructions(split, sizes):
  """TFDS split syntax -> [(split name, slice)]; errors list the splits."""
  infos = {name: types.SimpleNamespace(num_examples=n, shard_lengths=[n])
           for name, n in sizes.items()}
  try:
    absolute = tfds.core.ReadInstruction.from_spec(split).to_absolute(infos)
  except (ValueError, AssertionError) as e:
    raise ValueError(f"Bad split {split!r} ({e}); splits: "
                     f"{sorted(sizes)}.") from None
  return [(a.splitname, slice(a.from_, a.to)) for a in absolute]


def _share_indices(n, process_index, process_count, drop_remainder):
  """Positions of process `process_index`'s contiguous share of n examples.

  Cut as `tfds.even_splits` cuts a split: `n // process_count` examples
  each, and one more for the first `n % process_count` processes unless
  `drop_remainder` drops those examples.
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} is not in "
                     f"[0, process_count={process_count}).")
  size, extra = divmod(n, process_count)
  if drop_remainder:
    extra = 0
  start = process_index * size + min(process_index, extra)
  return np.arange(start, start + size + int(process_index < extra))


def image_is_known_format(data):
  """Whether encoded bytes start like a JPEG, PNG, GIF, BMP or WebP file."""
  head = tf.strings.join([tf.strings.substr(data, 0, 12), b"\0" * 12])
  ok = tf.logical_and(tf.equal(tf.strings.substr(head, 0, 4), b"RIFF"),
                      tf.equal(tf.strings.substr(head, 8, 4), b"WEBP"))
  for sig in _SIGNATURES:
    ok = tf.logical_or(ok, tf.equal(tf.strings.substr(head, 0, len(sig)),
                                    sig))
  return ok


def read_image(filename):
  """Reads an image file's bytes; an error names a file of no image format."""
  data = tf.io.read_file(filename)
  check = tf.debugging.Assert(
      image_is_known_format(data),
      ["Bad image file (empty, or not JPEG/PNG/GIF/BMP/WebP):", filename])
  with tf.control_dependencies([check]):
    return tf.identity(data)


def find_bad_images(filenames, num_parallel_calls=tf.data.AUTOTUNE):
  """Returns the sorted indices of `filenames` that cannot be decoded.

  Every file is read and fully decoded (`tf.io.decode_image`, as the pp
  `decode` op does) in parallel, each file once however often it is listed;
  a missing, unreadable or undecodable file counts as bad.

  Args:
    filenames: a sequence of file paths.
    num_parallel_calls: decoding parallelism.

  Returns:
    A sorted int64 numpy array of indices into `filenames`.
  """
  if not len(filenames):  # May be a numpy array.
    return np.zeros([0], np.int64)
  unique, inverse = np.unique(_strs(filenames), return_inverse=True)
  n = len(unique)

  def _decode(i, filename):
    image = tf.io.decode_image(tf.io.read_file(filename),
                               expand_animations=False)
    return i, tf.shape(image)  # Using the shape keeps the decode.

  ds = tf.data.Dataset.from_tensor_slices(
      (tf.range(n, dtype=tf.int64), tf.constant(unique, tf.string)))
  ds = ds.map(_decode, num_parallel_calls=num_parallel_calls,
              deterministic=False).ignore_errors().batch(4096)
  good = np.zeros(n, bool)
  for indices, _ in ds.as_numpy_iterator():
    good[indices] = True
  return np.flatnonzero(~good[inverse.reshape(-1)])


class _FileSource:
  """Base of sources whose examples are image files listed in an index.

  Subclasses implement `_listing()` (a cheap, hashable summary of the files
  that define the index) and `_read_index(listing)` -> {split: `_Index`} (in
  file order; this class puts them in hash order).

  Besides the `DataSource` protocol, these sources read lazily: the input
  pipeline may shuffle and skip the cheap `get_records` (file names and
  labels) and `load` the files afterwards, so resuming reads no images.
  """

  def __init__(self, root, *, data_dir=None, skip_bad=False,
               check_images=True):
    """Indexes the source at `root` (relative to `data_dir`)."""
    self.class_names = None  # Subclasses' _read_index may set them.
    self.root = _resolve_root(root, data_dir)
    self.skip_bad = skip_bad
    self.check_images = check_images
    self._listed = self._listing()
    self._indexes = {name: index.take(_hash_order(index.id))
                     for name, index in self._read_index(self._listed).items()}
    self._skipped = {}  # Base split -> files dropped (skip_bad).
    self._checked = {}  # Base split -> [N] bool, images known to decode.
    self._lock = threading.RLock()  # Each split is checked once.

  @classmethod
  def cache_key(cls, root, *, data_dir=None, **options):
    """What `datasets.get_source` caches a source by: its root and options."""
    return fs.abspath(_resolve_root(root, data_dir)), tuple(
        sorted(options.items()))

  def is_current(self):
    """Whether the files that define the index are as when it was read."""
    try:
      return self._listing() == self._listed
    except (OSError, ValueError, tf.errors.OpError):
      return False

  def _listing(self):
    raise NotImplementedError

  def _read_index(self, listing):
    raise NotImplementedError

  @property
  def splits(self):
    """The names of the base splits."""
    return sorted(self._indexes)

  def _base_index(self, name):
    with self._lock:
      if self.skip_bad and name not in self._skipped:
        self._drop_bad(name)
      return self._indexes[name]

  def _drop_bad(self, name):
    """Drops the undecodable images of base split `name` (skip_bad)."""
    index = self._indexes[name]
    bad = find_bad_images(index.filename)
    self._skipped[name] = sorted(index.filename[bad])
    if len(bad):
      logging.warning("%r split %r: skipped %d undecodable image(s) of %d: %s",
                      self, name, len(bad), len(index),
                      self._skipped[name][:10])
    self._indexes[name] = index.take(np.setdiff1d(np.arange(len(index)), bad))

  def skipped_files(self, split):
    """Files of `split`'s base splits dropped as undecodable (skip_bad)."""
    names = self._split_names(split)
    for name in names:
      self._base_index(name)
    return sorted(f for name in names for f in self._skipped.get(name, []))

  def _split_names(self, split):
    sizes = {s: len(i) for s, i in self._indexes.items()}
    return {name for name, _ in _split_instructions(split, sizes)}

  def _parts(self, split):
    """[(base split, positions in its index)] of a spec like "a[:10%]+b"."""
    names = self._split_names(split)
    sizes = {s: len(self._base_index(s)) if s in names else len(i)
             for s, i in self._indexes.items()}
    return [(name, np.arange(sizes[name])[sl])
            for name, sl in _split_instructions(split, sizes)]

  def _select(self, parts):
    """The `_Index` of `_parts(...)`."""
    return _Index.concatenate([self._base_index(name).take(positions)
                               for name, positions in parts])

  def num_examples(self, split):
    """Number of examples in `split` (all processes together)."""
    return sum(len(positions) for _, positions in self._parts(split))

  def num_examples_per_process(self, split, *, process_count,
                               drop_remainder):
    """Size of each process's share of `split`."""
    n = self.num_examples(split)
    return [len(_share_indices(n, i, process_count, drop_remainder))
            for i in range(process_count)]

  def get_records(self, split, *, process_index, process_count,
                  drop_remainder):
    """This process's share of `split` as cheap records (before `load`).

    Unless `skip_bad` or `check_images=False`, first decodes the share's
    images not checked before, and raises a `ValueError` naming those that
    do not decode.
    """
    parts = self._parts(split)
    share = _share_indices(sum(len(p) for _, p in parts), process_index,
                           process_count, drop_remainder)
    if self.check_images and not self.skip_bad:
      self._check_images(split, parts, share)
    return tf.data.Dataset.from_tensor_slices(
        self._select(parts).take(share).tensors())

  def _check_images(self, split, parts, share):
    """Raises naming the images at `share` of `parts` that do not decode."""
    names = np.repeat([name for name, _ in parts],
                      [len(p) for _, p in parts])[share]
    positions = np.concatenate([p for _, p in parts])[share]
    bad = []
    for name in dict.fromkeys(name for name, _ in parts):
      bad += self._check_base(name, positions[names == name])
    if bad:
      raise ValueError(
          f"{len(bad)} of the {len(share)} images that this process reads "
          f"of split {split!r} of {self!r} cannot be decoded (empty, "
          "truncated or damaged): " + "; ".join(bad[:10])
          + (f"; and {len(bad) - 10} more" if len(bad) > 10 else "")
          + ". Fix or remove them, or set skip_bad=True to skip such images.")

  def _check_base(self, name, positions):
    """Decodes the unchecked images at `positions` of base split `name`.

    Returns:
      A description of each image that does not decode.
    """
    with self._lock:
      index = self._indexes[name]
      checked = self._checked.setdefault(name, np.zeros(len(index), bool))
      todo = np.unique(positions[~checked[positions]])
      if not len(todo):
        return []
      bad = todo[find_bad_images(index.filename[todo])]
      checked[np.setdiff1d(todo, bad)] = True
    return [_describe(index, i, name) for i in bad]

  def load(self, record):
    """Reads the image of a record: the record's feature dict, complete."""
    return {**record, "image": read_image(record["filename"])}

  def get_tfdata(self, split, *, process_index, process_count,
                 drop_remainder):
    """This process's share of `split`: raw feature dicts, fixed order."""
    records = self.get_records(split, process_index=process_index,
                               process_count=process_count,
                               drop_remainder=drop_remainder)
    return records.map(self.load, num_parallel_calls=tf.data.AUTOTUNE,
                       deterministic=True)

  def __repr__(self):
    return f"{type(self).__name__}({self.root!r})"


def _describe(index, i, split):
  """Example `i` of `index` as "'FILE' (WHERE, split 'S', id 'ID')"."""
  where = f"{index.where[i]}, " if index.where is not None else ""
  return (f"{index.filename[i]!r} ({where}split {split!r}, "
          f"id {index.id[i]!r})")


@registry.DATASETS.register("imagefolder")
class ImageFolderSource(_FileSource):
  """`ROOT/SPLIT/CLASS/*.jpg` trees (see the module docstring)."""

  def _listing(self):
    """((split, ((class, (image paths below it)), ...)), ...), sorted."""
    splits = [s for s in _listdir(self.root)
              if tf.io.gfile.isdir(fs.join(self.root, s))]
    return tuple(
        (s, tuple((c, tuple(_list_images(fs.join(self.root, s, c))))
                  for c in self._class_dirs(fs.join(self.root, s))))
        for s in splits)

  def _read_index(self, listing):
    if not listing:
      raise ValueError(f"{self.root!r} has no split directories "
                       "(expected ROOT/SPLIT/CLASS/image files).")
    self.class_names = sorted({c for _, classes in listing
                               for c, _ in classes})
    labels = {name: i for i, name in enumerate(self.class_names)}
    return {s: self._split_index(s, classes, labels)
            for s, classes in listing}

  def _class_dirs(self, split_dir):
    names = _listdir(split_dir)
    stray = [n for n in names if _is_image_file(n)]
    if stray:
      raise ValueError(f"Image {fs.join(split_dir, stray[0])!r} is not "
                       "in a class directory (expected ROOT/SPLIT/CLASS/).")
    return [n for n in names if tf.io.gfile.isdir(fs.join(split_dir, n))]

  def _split_index(self, split, classes, labels):
    ids, label = [], []
    for name, files in classes:
      ids += [f"{split}/{name}/{f}" for f in files]
      label += [labels[name]] * len(files)
    return _Index(
        filename=_strs([fs.join(self.root, i) for i in ids]),
        id=_strs(ids), label=np.array(label, np.int64))


def _list_images(directory):
  """Image files below `directory` (recursively), as sorted relative paths."""
  out = []
  for name in _listdir(directory):
    if _is_image_file(name):
      out.append(name)
    elif tf.io.gfile.isdir(fs.join(directory, name)):
      out += [f"{name}/{f}" for f in _list_images(
          fs.join(directory, name))]
  return sorted(out)


@registry.DATASETS.register("jsonl")
class JsonlSource(_FileSource):
  """`ROOT/SPLIT.jsonl` index files (see the module docstring)."""

  def _listing(self):
    """((file, md5 of its bytes), ...) of SPLIT.jsonl and classnames.txt."""
    return tuple((f, _md5(fs.join(self.root, f)))
                 for f in _listdir(self.root)
                 if f.endswith(".jsonl") or f == CLASSNAMES_FILE)

  def _read_index(self, listing):
    self.class_names = _read_class_names(fs.join(self.root,
                                                      CLASSNAMES_FILE))
    files = [f for f, _ in listing if f.endswith(".jsonl")]
    if not files:
      raise ValueError(f"{self.root!r} has no SPLIT.jsonl files.")
    return {f[:-len(".jsonl")]: self._read_split(f) for f in files}

  def _read_split(self, file):
    path = fs.join(self.root, file)
    split = file[:-len(".jsonl")]
    lines = []
    with tf.io.gfile.GFile(path) as f:
      for lineno, line in enumerate(f, start=1):
        if line.strip():
          lines.append(_parse_line(line, f"{path}:{lineno}", split, lineno,
                                   self.class_names))
    _check_images_exist(self.root, lines)
    num = np.array([len(x.texts) for x in lines], np.int32)
    texts = np.full([len(lines), max(1, int(num.max(initial=0)))], "",
                    dtype=object)
    for row, x in enumerate(lines):
      texts[row, :len(x.texts)] = x.texts
    return _Index(
        filename=_strs([fs.join(self.root, x.image) for x in lines]),
        id=_strs([x.id for x in lines]),
        label=np.array([x.label for x in lines], np.int64),
        texts=texts, num_texts=num, where=_strs([x.where for x in lines]))

  def load(self, record):
    """Reads the image; adds `texts` (the captions, unpadded)."""
    out = super().load(record)
    out["texts"] = record["texts_padded"][:record["num_texts"]]
    return out


def _md5(path):
  """The hex md5 of a file's bytes."""
  md5 = hashlib.md5()
  with tf.io.gfile.GFile(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      md5.update(chunk)
  return md5.hexdigest()


def _read_class_names(path):
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    names = f.read().rstrip("\n").split("\n")
  for lineno, name in enumerate(names, start=1):
    if not name.strip():
      raise ValueError(f"{path}:{lineno}: empty class name.")
  return [n.strip() for n in names]


class _Line(NamedTuple):
  """One parsed JSONL line."""
  where: str  # "FILE:LINE"
  image: str
  id: str
  label: int
  texts: list[str]


def _parse_line(line, where, split, lineno, class_names):
  """One JSONL line -> a `_Line`; errors name `where` ("FILE:LINE")."""
  try:
    obj = json.loads(line)
  except json.JSONDecodeError as e:
    raise ValueError(f"{where}: invalid JSON ({e}).") from None
  if not isinstance(obj, dict):
    raise ValueError(f"{where}: expected a JSON object, got {line.strip()!r}.")
  image = obj.get("image")
  if not isinstance(image, str) or not image:
    raise ValueError(f"{where}: `image` must be a non-empty path string, got "
                     f"{image!r}.")
  if "text" not in obj and "label" not in obj:
    raise ValueError(f"{where}: needs `text` or `label` (keys: {sorted(obj)}).")
  texts = _parse_texts(obj.get("text"), where)
  label = _parse_label(obj.get("label", -1), where, class_names)
  ex_id = obj.get("id", f"{split}:{lineno}")
  if not isinstance(ex_id, (str, int)) or isinstance(ex_id, bool):
    raise ValueError(f"{where}: `id` must be a string or int, got {ex_id!r}.")
  return _Line(where, image, str(ex_id), label, texts)


def _parse_texts(text, where):
  if text is None:  # Absent.
    return []
  texts = [text] if isinstance(text, str) else text
  if (not isinstance(texts, list) or not texts or
      not all(isinstance(t, str) for t in texts)):
    raise ValueError(f"{where}: `text` must be a string or a non-empty list "
                     f"of strings, got {text!r}.")
  return texts


def _parse_label(label, where, class_names):
  if label == -1:  # Absent.
    return -1
  if not isinstance(label, int) or isinstance(label, bool) or label < 0:
    raise ValueError(f"{where}: `label` must be an int >= 0, got {label!r}.")
  if class_names is not None and label >= len(class_names):
    raise ValueError(f"{where}: `label` {label} is out of range for the "
                     f"{len(class_names)} names of {CLASSNAMES_FILE}.")
  return label


def _check_images_exist(root, lines):
  """Raises naming the first line whose image file does not exist."""
  listed = {}
  missing = []
  for line in lines:
    image = fs.join(root, line.image)
    directory, name = fs.dirname(image), fs.basename(image)
    if directory not in listed:
      listed[directory] = (set(_listdir(directory))
                           if tf.io.gfile.isdir(directory) else set())
    if name not in listed[directory]:
      missing.append(line)
  if missing:
    raise FileNotFoundError(
        f"{missing[0].where}: image {missing[0].image!r} not found in "
        f"{root!r}"
        + (f" ({len(missing) - 1} more lines name missing images)."
           if len(missing) > 1 else "."))
