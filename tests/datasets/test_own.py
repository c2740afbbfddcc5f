"""Tests of the own-data sources (`imagefolder:`, `jsonl:`) on tiny trees."""

import itertools
import json
import logging
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from big_vision_like import input_pipeline as ip
from big_vision_like import registry
from big_vision_like.datasets import core
from big_vision_like.datasets import own

ALL = dict(process_index=0, process_count=1, drop_remainder=False)


def _image(path, h=6, w=5, fmt="png", seed=0):
  """Writes an h x w RGB image whose pixels are all `seed`."""
  pixels = tf.fill([h, w, 3], tf.constant(seed % 256, tf.uint8))
  encode = tf.io.encode_png if fmt == "png" else tf.io.encode_jpeg
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tf.io.write_file(path, encode(pixels))


def _write(path, data):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(data)


@pytest.fixture(name="folder")
def _folder(tmp_path):
  """train: dog 3, ant 2 (one nested), cat 0 files; val: ant 1, cat 2, eel 1."""
  root = tmp_path / "folder"
  for split, cls, n in [("train", "dog", 3), ("train", "ant", 1),
                        ("val", "ant", 1), ("val", "cat", 2),
                        ("val", "eel", 1)]:
    for i in range(n):
      fmt, ext = [("png", ".png"), ("jpeg", ".JPG"), ("jpeg", ".jpeg")][i % 3]
      _image(str(root / split / cls / f"{i}{ext}"), fmt=fmt, seed=i)
  _image(str(root / "train" / "ant" / "sub" / "deep.PNG"))
  os.makedirs(root / "train" / "cat")
  _write(str(root / "train" / "dog" / "notes.txt"), b"not an image")
  return root


def _examples(source, split="train", **kw):
  return list(source.get_tfdata(split, **{**ALL, **kw}).as_numpy_iterator())


def test_imagefolder_sizes_labels_and_class_order(folder):
  src = core.get_source(f"imagefolder:{folder}")
  assert src.class_names == ["ant", "cat", "dog", "eel"]
  assert src.splits == ["train", "val"]
  assert src.num_examples("train") == 5
  assert src.num_examples("val") == 4
  assert src.num_examples("train+val") == 9
  examples = _examples(src)
  ids = sorted(e["id"].decode() for e in examples)
  assert ids == ["train/ant/0.png", "train/ant/sub/deep.PNG",
                 "train/dog/0.png", "train/dog/1.JPG", "train/dog/2.jpeg"]
  for e in examples:
    name = e["id"].decode()
    assert e["label"] == src.class_names.index(name.split("/")[1])
    assert e["filename"].decode() == str(folder / name)
    assert tf.io.decode_image(e["image"]).shape == (6, 5, 3)
  val = {e["id"].decode(): e["label"] for e in _examples(src, "val")}
  assert val == {"val/ant/0.png": 0, "val/cat/0.png": 1, "val/cat/1.JPG": 1,
                 "val/eel/0.png": 3}


def test_imagefolder_order_is_fixed_and_slices_follow_it(folder):
  ids = [e["id"] for e in _examples(core.get_source(f"imagefolder:{folder}"))]
  src = core.get_source(f"imagefolder:{folder}")
  assert [e["id"] for e in _examples(src)] == ids
  assert [e["id"] for e in _examples(src, "train[:40%]")] == ids[:2]
  assert [e["id"] for e in _examples(src, "train[2:]")] == ids[2:]
  assert src.num_examples("train[:40%]") == 2
  with pytest.raises(ValueError, match="test.*splits.*train"):
    src.num_examples("test")


@pytest.mark.parametrize("drop_remainder", [False, True])
def test_process_shares_are_contiguous_in_split_order(folder, drop_remainder):
  src = core.get_source(f"imagefolder:{folder}")
  sizes = src.num_examples_per_process("train", process_count=2,
                                       drop_remainder=drop_remainder)
  assert sizes == ([2, 2] if drop_remainder else [3, 2])
  shares = [[e["id"] for e in _examples(
      src, process_index=i, process_count=2, drop_remainder=drop_remainder)]
            for i in range(2)]
  assert [len(s) for s in shares] == sizes
  everything = [e["id"] for e in _examples(src)]
  assert shares[0] + shares[1] == everything[:sum(sizes)]


@pytest.mark.parametrize("count", [2, 3, 4])
@pytest.mark.parametrize("split", ["train+val", "val[1:]+train[:3]"])
def test_shares_of_any_split_follow_each_other_in_order(folder, count, split):
  src = core.get_source(f"imagefolder:{folder}")
  everything = [e["id"] for e in _examples(src, split)]
  n = len(everything)
  shares = [[e["id"] for e in _examples(src, split, process_index=i,
                                        process_count=count)]
            for i in range(count)]
  assert sum(shares, []) == everything
  # Sizes as tfds.even_splits gives them: n // count, the first n % count +1.
  expected = [n // count + (i < n % count) for i in range(count)]
  assert [len(s) for s in shares] == expected
  assert src.num_examples_per_process(
      split, process_count=count, drop_remainder=False) == expected


def test_root_relative_to_data_dir_and_errors(folder, tmp_path):
  src = core.get_source("imagefolder:folder", data_dir=tmp_path)
  assert src.num_examples("val") == 4
  with pytest.raises(FileNotFoundError, match="nowhere"):
    core.get_source(f"imagefolder:{tmp_path}/nowhere")
  with pytest.raises(TypeError, match="cifar10.*skip_bad"):
    core.get_source("cifar10", skip_bad=True)
  _image(str(folder / "val" / "stray.png"))
  with pytest.raises(ValueError, match="stray.png.*class directory"):
    core.get_source(f"imagefolder:{folder}")


def test_imagefolder_eval_counts_each_example_once(folder):
  src = core.get_source(f"imagefolder:{folder}")
  ids = []
  for index in range(2):
    ds, num_batches = ip.make_eval_dataset(
        src, "train+val", pp="decode|resize(4)|keep('image', 'id', 'label')",
        global_batch_size=4, process_index=index, process_count=2)
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == num_batches == 3
    assert batches[0]["image"].shape == (2, 4, 4, 3)
    ids += [i for b in batches for i in b["id"][b["_mask"]]]
  assert len(ids) == len(set(ids)) == 9


def _train(source, steps, split="train+val", **kw):
  kw = {"pp": "decode|resize(4)|flip_lr|keep('image', 'label', 'id')",
        "global_batch_size": 2, "seed": 0, "process_index": 0,
        "process_count": 1, **kw}
  if isinstance(source, list):  # A mixture names its own splits.
    split = None
  ds = ip.make_train_dataset(source, split, **kw)
  return list(itertools.islice(ds.as_numpy_iterator(), steps))


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_train_pipeline_resumes_and_caches_alike(folder):
  src = core.get_source(f"imagefolder:{folder}")
  fresh = _train(src, 12)
  assert fresh[0]["image"].shape == (2, 4, 4, 3)
  epoch = np.concatenate([b["id"] for b in fresh])[:8]  # 9 // 1 - 1 dropped.
  assert len(set(epoch)) == 8
  _assert_same(fresh[7:], _train(src, 5, start_step=7))
  _assert_same(fresh, _train(src, 12, cache_raw=True))


def test_corrupt_image_error_names_the_file(folder):
  _write(str(folder / "train" / "dog" / "bad.jpg"), b"<html>oops</html>")
  src = core.get_source(f"imagefolder:{folder}")
  with pytest.raises(ValueError, match="dog/bad.jpg"):
    _examples(src)
  with pytest.raises(ValueError, match="dog/bad.jpg"):
    _train(src, 5)
  # Unchecked, the read still names a file that is not an image at all.
  src = core.get_source(f"imagefolder:{folder}", check_images=False)
  with pytest.raises(tf.errors.InvalidArgumentError, match="dog/bad.jpg"):
    _examples(src)


def test_skip_bad_drops_and_counts_undecodable_images(folder):
  _write(str(folder / "train" / "dog" / "bad.jpg"), b"")
  good = tf.io.encode_jpeg(tf.zeros([16, 16, 3], tf.uint8)).numpy()
  _write(str(folder / "train" / "dog" / "cut.jpg"), good[:len(good) // 2])
  _write(str(folder / "val" / "eel" / "cut.png"), b"\x89PNG\r\n\x1a\n")
  src = core.get_source(f"imagefolder:{folder}", skip_bad=True)
  assert src.num_examples("train") == 5
  assert src.skipped_files("train") == [
      str(folder / "train" / "dog" / f) for f in ("bad.jpg", "cut.jpg")]
  assert len(src.skipped_files("train+val")) == 3
  assert "cut.jpg" not in str([e["id"] for e in _examples(src)])
  ds, _ = ip.make_eval_dataset(src, "train+val", pp="decode|keep('id')",
                               global_batch_size=4, process_index=0,
                               process_count=1)
  assert sum(b["_mask"].sum() for b in ds.as_numpy_iterator()) == 9


def test_find_bad_images(folder, tmp_path):
  _write(str(tmp_path / "bad.png"), b"\x89PNG\r\n\x1a\nrest")
  files = [str(folder / "train" / "dog" / "0.png"), str(tmp_path / "bad.png"),
           str(tmp_path / "missing.jpg"), str(folder / "val" / "cat" /
                                              "1.JPG")]
  np.testing.assert_array_equal(own.find_bad_images(files), [1, 2])


def _gradient(seed, h=64, w=64):
  """An h x w RGB gradient (its JPEG has enough entropy data to damage)."""
  y, x = np.mgrid[:h, :w]
  return np.stack([(x * 7 + seed) % 256, (y * 5 + seed) % 256,
                   (x * y + seed) % 256], -1).astype(np.uint8)


def _damaged(path):
  """Writes a damaged image named HOW.EXT (truncated / corrupt, png / jpg).

  `truncated` keeps the first half of the bytes, `corrupt` sets 16 bytes in
  the middle to 0xFF; both keep a valid header, and TF cannot decode them.
  """
  how, ext = os.path.basename(path).split(".")
  encode = tf.io.encode_png if ext == "png" else tf.io.encode_jpeg
  data = encode(_gradient(1)).numpy()
  mid = len(data) // 2
  data = (data[:mid] if how == "truncated" else
          data[:mid - 8] + b"\xff" * 16 + data[mid + 8:])
  assert own.image_is_known_format(data)
  with pytest.raises(tf.errors.InvalidArgumentError):
    tf.io.decode_image(data)
  _write(path, data)
  return path


DAMAGED = ["truncated.png", "corrupt.png", "truncated.jpg", "corrupt.jpg"]


@pytest.mark.parametrize("name", DAMAGED)
def test_damaged_image_error_names_file_and_split(folder, name):
  path = _damaged(str(folder / "train" / "dog" / name))
  src = core.get_source(f"imagefolder:{folder}")
  match = re.escape(f"{path!r} (split 'train', id 'train/dog/{name}')")
  with pytest.raises(ValueError, match=match):
    _train(src, 1)
  with pytest.raises(ValueError, match=match):  # Not marked as checked.
    ip.make_eval_dataset(src, "val+train", pp="decode", global_batch_size=2,
                         process_index=0, process_count=1)
  with pytest.raises(ValueError, match=match):
    _examples(src)
  assert src.num_examples("val") == len(_examples(src, "val")) == 4


def test_damaged_images_are_listed_together(folder):
  paths = [_damaged(str(folder / "val" / "cat" / n)) for n in DAMAGED]
  src = core.get_source(f"imagefolder:{folder}")
  with pytest.raises(ValueError,
                     match=r"4 of the 8 images .* split 'val'") as e:
    _examples(src, "val")
  assert all(repr(p) in str(e.value) for p in paths)
  assert "skip_bad=True" in str(e.value)


@pytest.mark.parametrize("name", DAMAGED)
def test_jsonl_damaged_image_error_names_file_and_line(jsonl_root, name):
  path = _damaged(str(jsonl_root / "imgs" / name))
  _write(str(jsonl_root / "test.jsonl"), b"\n".join(json.dumps(
      {"image": f"imgs/{x}", "text": "t"}).encode() for x in ("0.jpg", name)))
  src = core.get_source(f"jsonl:{jsonl_root}")
  with pytest.raises(ValueError, match=re.escape(
      f"{path!r} ({jsonl_root / 'test.jsonl'}:2, split 'test', id 'test:2')")):
    _train(src, 1, pp="decode|keep('image')", split="test")


def test_skip_bad_skips_damaged_images_and_keeps_good_ones(folder, caplog):
  paths = [_damaged(str(folder / "train" / "dog" / n)) for n in DAMAGED]
  src = core.get_source(f"imagefolder:{folder}", skip_bad=True)
  with caplog.at_level(logging.WARNING):
    assert src.num_examples("train") == 5
  assert "skipped 4 undecodable image(s) of 9" in caplog.text
  assert src.skipped_files("train") == sorted(paths)
  ds, _ = ip.make_eval_dataset(src, "train+val", pp="decode|keep('image', "
                               "'id')", global_batch_size=4, process_index=0,
                               process_count=1)
  seen = []
  for batch in ds.as_numpy_iterator():
    for image, i in zip(batch["image"][batch["_mask"]],
                        batch["id"][batch["_mask"]]):
      seen.append(i.decode())
      stem = os.path.basename(seen[-1]).split(".")[0]
      seed = 0 if stem == "deep" else int(stem)  # The pixels `_folder` wrote.
      tol = 0 if seen[-1].lower().endswith(".png") else 1  # JPEG: lossy.
      assert np.abs(image.astype(int) - seed).max() <= tol, seen[-1]
  assert len(seen) == len(set(seen)) == 9
  trained = {i for b in _train(src, 8) for i in b["id"]}
  assert not {f"train/dog/{n}".encode() for n in DAMAGED} & trained


def test_images_are_checked_once_per_process_share(folder, monkeypatch):
  checked = []
  real = own.find_bad_images
  monkeypatch.setattr(own, "find_bad_images",
                      lambda files: checked.append(list(files)) or real(files))
  src = core.get_source(f"imagefolder:{folder}")
  assert src.num_examples("train") == 5 and not checked
  kw = {"process_count": 2, "drop_remainder": False}
  src.get_records("train", process_index=0, **kw)
  src.get_records("train[:60%]", process_index=0, **kw)
  assert [len(c) for c in checked] == [3]  # Positions 0 to 2 of 5.
  src.get_records("train", process_index=1, **kw)
  _train(src, 2, split="train")  # Process 0 of 1: all checked already.
  assert [len(c) for c in checked] == [3, 2]
  assert len({f for c in checked for f in c}) == 5


@pytest.fixture(name="jsonl_root")
def _jsonl_root(tmp_path):
  root = tmp_path / "captions"
  for i in range(5):
    _image(str(root / "imgs" / f"{i}.jpg"), fmt="jpeg", seed=i)
  lines = [
      {"image": "imgs/0.jpg", "text": "a cat", "label": 0},
      {"image": "imgs/1.jpg", "text": ["a dog", "a brown dog", "dog"],
       "label": 1},
      {"image": "imgs/2.jpg", "text": ["two birds"], "id": "birds"},
      {"image": "imgs/3.jpg", "label": 2, "extra": "ignored"},
  ]
  _write(str(root / "train.jsonl"),
         "\n".join(json.dumps(x) for x in lines).encode() + b"\n\n")
  _write(str(root / "val.jsonl"), json.dumps(
      {"image": "imgs/4.jpg", "text": "a fish"}).encode())
  _write(str(root / "classnames.txt"), b"cat\ndog\nbird\n")
  return root


def test_jsonl_features(jsonl_root):
  src = core.get_source(f"jsonl:{jsonl_root}")
  assert src.class_names == ["cat", "dog", "bird"]
  assert src.splits == ["train", "val"]
  assert src.num_examples("train") == 4
  by_id = {e["id"].decode(): e for e in _examples(src)}
  assert set(by_id) == {"train:1", "train:2", "birds", "train:4"}
  dog = by_id["train:2"]
  assert dog["label"] == 1 and dog["num_texts"] == 3
  assert list(dog["texts"]) == [b"a dog", b"a brown dog", b"dog"]
  assert list(dog["texts_padded"]) == list(dog["texts"])
  cat = by_id["train:1"]
  assert list(cat["texts"]) == [b"a cat"]
  assert list(cat["texts_padded"]) == [b"a cat", b"", b""]
  assert by_id["birds"]["label"] == -1
  assert by_id["train:4"]["num_texts"] == 0
  assert by_id["train:4"]["filename"].decode() == str(jsonl_root / "imgs" /
                                                      "3.jpg")
  np.testing.assert_array_equal(
      tf.io.decode_image(by_id["birds"]["image"]), np.full([6, 5, 3], 2))
  val = _examples(src, "val")
  assert val[0]["texts_padded"].shape == (1,)


def test_jsonl_train_and_eval_batches(jsonl_root):
  src = core.get_source(f"jsonl:{jsonl_root}")
  ds, num_batches = ip.make_eval_dataset(
      src, "train", pp="decode|resize(4)|keep('image', 'texts_padded', "
      "'num_texts', 'label')", global_batch_size=2, process_index=0,
      process_count=1)
  batches = list(ds.as_numpy_iterator())
  assert num_batches == 2
  assert batches[0]["texts_padded"].shape == (2, 3)
  assert sorted(b for x in batches for b in x["num_texts"]) == [0, 1, 1, 3]
  if "choice" not in registry.PP_OPS:
    pytest.skip("no `choice` pp op to pick a caption")
  _write(str(jsonl_root / "more.jsonl"), b"\n".join(json.dumps(
      {"image": f"imgs/{i}.jpg", "text": ["x"] * i}).encode()
                                                  for i in range(1, 4)))
  src = core.get_source(f"jsonl:{jsonl_root}")
  ds = ip.make_train_dataset(
      src, "more", pp="decode|resize(4)|choice(inkey='texts', "
      "outkey='text')|keep('image', 'text')", global_batch_size=3, seed=0,
      process_index=0, process_count=1)
  batch = next(ds.as_numpy_iterator())
  assert batch["text"].shape == (3,) and all(batch["text"])


@pytest.mark.parametrize("line,match", [
    ("{not json", "invalid JSON"),
    ('{"text": "no image"}', "`image`"),
    ('{"image": "imgs/0.jpg"}', "needs `text` or `label`"),
    ('{"image": "imgs/0.jpg", "text": []}', "`text`"),
    ('{"image": "imgs/0.jpg", "text": ["a", 3]}', "`text`"),
    ('{"image": "imgs/0.jpg", "label": "cat"}', "`label`"),
    ('{"image": "imgs/0.jpg", "label": 3}', "out of range"),
    ('["imgs/0.jpg"]', "JSON object"),
])
def test_jsonl_bad_line_names_file_and_line(jsonl_root, line, match):
  good = json.dumps({"image": "imgs/0.jpg", "text": "ok"})
  _write(str(jsonl_root / "test.jsonl"), f"{good}\n\n{line}\n".encode())
  with pytest.raises(ValueError, match=f"test.jsonl:3: .*{match}"):
    core.get_source(f"jsonl:{jsonl_root}")


def test_jsonl_missing_image_names_file_and_line(jsonl_root):
  lines = [{"image": "imgs/0.jpg", "text": "a"},
           {"image": "imgs/nope.jpg", "text": "b"},
           {"image": "other/x.jpg", "text": "c"}]
  _write(str(jsonl_root / "test.jsonl"),
         "\n".join(json.dumps(x) for x in lines).encode())
  with pytest.raises(FileNotFoundError,
                     match=r"test.jsonl:2: image 'imgs/nope.jpg'.*1 more"):
    core.get_source(f"jsonl:{jsonl_root}")


def test_jsonl_corrupt_image(jsonl_root):
  _write(str(jsonl_root / "imgs" / "2.jpg"), b"garbage")
  with pytest.raises(ValueError, match=r"imgs/2.jpg' \(.*train.jsonl:3, "
                     r"split 'train', id 'birds'\)"):
    _examples(core.get_source(f"jsonl:{jsonl_root}"))
  src = core.get_source(f"jsonl:{jsonl_root}", skip_bad=True)
  assert {e["id"] for e in _examples(src)} == {b"train:1", b"train:2",
                                                b"train:4"}
  assert src.skipped_files("train") == [str(jsonl_root / "imgs" / "2.jpg")]


def test_eval_config_passes_source_options(jsonl_root):
  # What `config.evals.x.data = dict(name=..., split=..., skip_bad=True)`
  # does: extra keys go to the registered factory.
  _write(str(jsonl_root / "imgs" / "4.jpg"), b"")
  data = dict(name=f"jsonl:{jsonl_root.name}", split="val", skip_bad=True,
              data_dir=str(jsonl_root.parent))
  src = core.get_source(data.pop("name"), **{k: v for k, v in data.items()
                                             if k != "split"})
  assert src.num_examples("val") == 0
  assert len(src.skipped_files("val")) == 1


@pytest.mark.parametrize("component_pp", [None, "decode|resize(4)"])
def test_mixture_of_own_sources_resumes(folder, jsonl_root, component_pp):
  folder_src = core.get_source(f"imagefolder:{folder}")
  keep = "|keep('image', 'label', 'id')"
  mixture = [ip.Component(folder_src, "train", 2.0, component_pp),
             ip.Component(folder_src, "val", 1.0, component_pp)]
  pp = "decode|resize(4)|flip_lr" + keep
  if component_pp:  # Also mix in JSONL data, made alike by its own pp.
    mixture.append(ip.Component(f"jsonl:{jsonl_root}", "train", 1.0,
                                component_pp + keep))
    mixture[:2] = [ip.Component(c.source, c.split, c.weight,
                                component_pp + keep) for c in mixture[:2]]
    pp = "flip_lr"
  kw = dict(pp=pp, global_batch_size=3, seed=0, process_index=0,
            process_count=1)
  fresh = list(itertools.islice(ip.make_train_dataset(
      mixture, **kw).as_numpy_iterator(), 8))
  assert fresh[0]["image"].shape == (3, 4, 4, 3)
  resumed = list(itertools.islice(ip.make_train_dataset(
      mixture, start_step=5, **kw).as_numpy_iterator(), 3))
  _assert_same(fresh[5:], resumed)


def _count_calls(monkeypatch, owner, name):
  """Replaces `owner.name` by a wrapper; returns its list of call args."""
  calls, real = [], getattr(owner, name)

  def wrapper(*args, **kwargs):
    calls.append(args)
    return real(*args, **kwargs)

  monkeypatch.setattr(owner, name, wrapper)
  return calls


def test_get_source_reuses_a_source_and_its_scan(folder, tmp_path,
                                                 monkeypatch):
  scans = _count_calls(monkeypatch, own, "find_bad_images")
  reads = _count_calls(monkeypatch, own.ImageFolderSource, "_read_index")
  name = f"imagefolder:{folder}"
  src = core.get_source(name, skip_bad=True)
  assert src.num_examples("train") == 5
  assert core.get_source(name, skip_bad=True) is src
  same = core.get_source("imagefolder:folder", data_dir=tmp_path,
                         skip_bad=True)
  assert same is src and same.num_examples("train") == 5
  # The train input and evaluators name their data in config dicts.
  component = ip.Component.from_config({"name": name, "split": "train",
                                       "skip_bad": True})
  assert component.source is src
  _train([component], 2)
  ip.make_eval_dataset(core.get_source(name, skip_bad=True), "train",
                       pp="decode", global_batch_size=2, process_index=0,
                       process_count=1)
  assert len(scans) == len(reads) == 1
  assert core.get_source(name) is not src  # Other options: another source.


def test_get_source_sees_changed_files(folder, jsonl_root, monkeypatch):
  scans = _count_calls(monkeypatch, own, "find_bad_images")
  name = f"imagefolder:{folder}"
  src = core.get_source(name, skip_bad=True)
  assert src.num_examples("train") == 5 and len(scans) == 1
  _image(str(folder / "train" / "dog" / "new.png"))
  added = core.get_source(name, skip_bad=True)
  assert added is not src and added.num_examples("train") == 6
  assert len(scans) == 2
  os.remove(folder / "train" / "dog" / "new.png")
  assert core.get_source(name, skip_bad=True).num_examples("train") == 5
  _write(str(folder / "train" / "dog" / "notes2.txt"), b"not an image")
  assert core.get_source(name, skip_bad=True) is core.get_source(
      name, skip_bad=True)
  core.clear_cache()
  assert core.get_source(name, skip_bad=True) is not src

  jsonl = core.get_source(f"jsonl:{jsonl_root}")
  before = (jsonl_root / "train.jsonl").read_bytes()
  after = before.replace(b'"a cat"', b'"a cow"')  # Same size.
  _write(str(jsonl_root / "train.jsonl"), after)
  changed = core.get_source(f"jsonl:{jsonl_root}")
  assert changed is not jsonl
  texts = {t for e in _examples(changed) for t in e["texts"]}
  assert b"a cow" in texts and b"a cat" not in texts
