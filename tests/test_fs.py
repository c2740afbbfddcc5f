"""The filesystem layer on local paths; `gs://` is `test_cloud_storage.py`."""

import os

import pytest

from big_vision_like import fs


def test_url_strings_keep_their_scheme():
  assert fs.is_remote("gs://b/run") and not fs.is_remote("/tmp/run")
  assert fs.join("gs://b/run", "checkpoints", "3") == "gs://b/run/checkpoints/3"
  assert fs.abspath("gs://b/run/") == "gs://b/run"
  assert fs.dirname("gs://b/run/x.npz") == "gs://b/run"
  assert fs.basename("gs://b/run/x.npz:img") == "x.npz:img"
  assert fs.isabs("gs://b/x") and not fs.isabs("x")
  assert fs.expanduser("~/x") == os.path.expanduser("~/x")
  assert fs.abspath("x") == os.path.abspath("x")


def test_files_and_directories(tmp_path):
  d = fs.join(tmp_path, "a", "b")
  fs.makedirs(d)
  assert fs.isdir(d) and fs.exists(d)
  fs.write_atomic(fs.join(d, "x.txt"), "hello")
  fs.write_atomic(fs.join(d, "y.bin"), b"\0\1")
  assert fs.read_text(fs.join(d, "x.txt")) == "hello"
  assert fs.read_bytes(fs.join(d, "y.bin")) == b"\0\1"
  assert fs.listdir(d) == ["x.txt", "y.bin"]  # No temporary file left.
  with fs.open(fs.join(d, "x.txt")) as f:
    assert f.read() == "hello"
  fs.remove(fs.join(d, "x.txt"))
  fs.remove(fs.join(tmp_path, "a"))
  assert not fs.exists(fs.join(tmp_path, "a"))


def test_append_file_is_readable_after_each_flush(tmp_path):
  path = fs.join(tmp_path, "new", "log.jsonl")
  with fs.AppendFile(path) as f:
    f.write("1\n")
    f.flush()
    assert fs.read_text(path) == "1\n"
    f.write("2\n")
  with fs.AppendFile(path) as f:
    f.write("3\n")
  assert fs.read_text(path) == "1\n2\n3\n"


def test_remote_files_cannot_be_opened_to_append():
  with pytest.raises(ValueError, match="cannot append"):
    fs.open("gs://b/log.jsonl", "a")


def test_local_mirror_of_a_local_directory_is_the_directory(tmp_path):
  mirror = fs.LocalMirror(str(tmp_path))
  assert mirror.local == str(tmp_path)
  mirror.close()
  assert os.path.isdir(tmp_path)


def test_check_writable_names_the_directory(tmp_path):
  (tmp_path / "f").write_text("")
  with pytest.raises(NotADirectoryError, match="Checkpoints go to .*f/c"):
    fs.check_writable(str(tmp_path / "f" / "c"), "Checkpoints")
  fs.check_writable(str(tmp_path / "new" / "c"), "Checkpoints")
  fs.check_writable("gs://b/c", "Checkpoints")  # Not checked.
