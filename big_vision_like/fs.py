"""One filesystem layer for every path the project reads or writes.

Local paths and object-store URLs (`gs://bucket/run`, and the other schemes
`etils.epath` knows) go through the same functions, built on `epath`, which
orbax uses as well. So a workdir in a bucket behaves as a local one: process
0 writes the logs, orbax writes each process's checkpoint shards.

Object stores have no append and no rename: `AppendFile` rewrites a small
file whole on every flush (as TensorFlow's GCS client does), and
`write_atomic` relies on an upload becoming visible only once complete.

Which client serves `gs://` is epath's choice: TensorFlow's (`tf.io.gfile`)
by default, gcsfs with `EPATH_USE_TF=false` (needed for a GCS emulator, e.g.
in `tests/test_cloud_storage.py`: TensorFlow's client cannot be pointed at
one). Arrays are written by tensorstore's own `gcs` driver either way.
"""

import builtins
import os
import posixpath
import shutil
import tempfile

from etils import epath


def is_remote(path):
  """Whether `path` is a URL (`gs://...`), not a local path."""
  return "://" in os.fspath(path)


def path(p):
  """`p` as an `epath.Path` (local or remote)."""
  return epath.Path(os.fspath(p))


def join(base, *parts):
  """`base/part/...`; URLs keep their `scheme://` prefix."""
  base = os.fspath(base)
  if is_remote(base):
    return posixpath.join(base, *map(os.fspath, parts))
  return os.path.join(base, *map(os.fspath, parts))


def basename(p):
  return posixpath.basename(os.fspath(p).rstrip("/"))


def dirname(p):
  """The parent of `p` (a URL's parent stays a URL)."""
  p = os.fspath(p).rstrip("/")
  return posixpath.dirname(p) if is_remote(p) else os.path.dirname(p)


def expanduser(p):
  """`p` with a leading `~` expanded (local paths only)."""
  p = os.fspath(p)
  return p if is_remote(p) else os.path.expanduser(p)


def isabs(p):
  """Whether `p` is absolute (URLs are)."""
  return is_remote(p) or os.path.isabs(os.fspath(p))


def abspath(p):
  """Absolute local path (user `~` expanded); URLs are returned unchanged."""
  p = os.fspath(p)
  if is_remote(p):
    return p.rstrip("/")
  return os.path.abspath(os.path.expanduser(p))


def exists(p):
  return path(p).exists()


def isdir(p):
  return path(p).is_dir()


def makedirs(p):
  """Creates directory `p` and its parents (no-op on object stores' keys)."""
  path(p).mkdir(parents=True, exist_ok=True)


def listdir(p):
  """The sorted names of the entries of directory `p`."""
  return sorted(child.name for child in path(p).iterdir())


def remove(p):
  """Removes file `p`, or directory `p` with its contents."""
  target = path(p)
  if target.is_dir():
    target.rmtree()
  else:
    target.unlink()


def open(p, mode="r"):  # pylint: disable=redefined-builtin
  """Opens file `p` ("r", "rb", "w", "wb"; "a" only locally: `AppendFile`)."""
  if "a" in mode and is_remote(p):
    raise ValueError(f"{p}: object stores cannot append; use AppendFile.")
  return path(p).open(mode)


def read_bytes(p):
  return path(p).read_bytes()


def read_text(p):
  return path(p).read_text()


def write_atomic(p, data):
  """Writes `data` (bytes or str) to `p`: readers see the old or new file.

  Locally through a temporary file renamed over `p`; on an object store one
  upload, which becomes visible only once complete.
  """
  data = data.encode("utf-8") if isinstance(data, str) else data
  if is_remote(p):
    path(p).write_bytes(data)
    return
  directory = os.path.dirname(os.path.abspath(p))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp.", dir=directory)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(tmp, p)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


class AppendFile:
  """A text file written line by line, durable at every `flush()`.

  Locally an appended file (each flush reaches the OS); on an object store
  the whole content is uploaded again at each flush, so a killed run keeps
  what it flushed. Meant for small logs (metrics, results).
  """

  def __init__(self, p):
    self.path = os.fspath(p)
    self._remote = is_remote(self.path)
    if self._remote:
      self._text = read_text(self.path) if exists(self.path) else ""
      self._dirty = False
    else:
      makedirs(dirname(abspath(self.path)))
      self._file = path(self.path).open("a")

  def write(self, text):
    if self._remote:
      self._text += text
      self._dirty = True
    else:
      self._file.write(text)

  def flush(self):
    if not self._remote:
      self._file.flush()
    elif self._dirty:
      write_atomic(self.path, self._text)
      self._dirty = False

  def close(self):
    self.flush()
    if not self._remote:
      self._file.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


class LocalMirror:
  """A local staging directory uploaded to (remote) `target` on `sync()`.

  For writers that only know local files (TensorFlow's summary writer on a
  store it cannot reach): they write into `local`, and `sync()` copies every
  file whose size changed since the last sync. A local `target` is used as
  it is (`local == target`, `sync()` does nothing).
  """

  def __init__(self, target):
    self.target = os.fspath(target)
    self._remote = is_remote(self.target)
    self.local = (tempfile.mkdtemp(prefix="bvl_stage_") if self._remote
                  else self.target)
    self._sizes = {}

  def sync(self):
    if not self._remote:
      return
    for root, _, files in os.walk(self.local):
      for name in files:
        src = os.path.join(root, name)
        size = os.path.getsize(src)
        if self._sizes.get(src) == size:
          continue
        rel = os.path.relpath(src, self.local).replace(os.sep, "/")
        with builtins.open(src, "rb") as f:
          path(join(self.target, rel)).write_bytes(f.read())
        self._sizes[src] = size

  def close(self):
    """Syncs, then removes the staging directory."""
    self.sync()
    if self._remote:
      shutil.rmtree(self.local, ignore_errors=True)


def check_writable(directory, what):
  """Fails at once, naming `directory`, where it cannot be written locally.

  Args:
    directory: a local directory (maybe not created yet), or a URL (not
      checked: an object store says no at the first write).
    what: what goes there, for the message, e.g. "Checkpoints".
  """
  if is_remote(directory):
    return
  resolved = os.path.realpath(directory)  # Through symbolic links.
  p = resolved
  while not os.path.exists(p):
    p = os.path.dirname(p)
  target = resolved if os.path.exists(resolved) else p
  if not os.path.isdir(target):
    raise NotADirectoryError(f"{what} go to {directory}, but {target} is "
                             "not a directory.")
  if not os.access(target, os.W_OK | os.X_OK):
    raise PermissionError(f"{what} go to {directory}, but {target} is not "
                          "writable.")
