"""A newcomer's console: the project's own lines, not start-up noise.

TensorFlow 2.16+ logs through absl's C++ logging, which ignores
`TF_CPP_MIN_LOG_LEVEL` for its import-time lines (oneDNN, CPU features,
"All log messages before absl::InitializeLog()"). The command-line entry
points import it with the process's stderr pointed at /dev/null; set
`BVL_VERBOSE=1` (or pass `--verbosity=0` or higher) to see them.
"""

import contextlib
import logging as std_logging
import os
import sys


@contextlib.contextmanager
def _stderr_to_devnull():
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


def _verbose():
  return (os.environ.get("BVL_VERBOSE", "") not in ("", "0")
          or any(a.startswith(("--verbosity", "-v=")) for a in sys.argv[1:]))


def import_tensorflow_quietly():
  """Imports TensorFlow (and TFDS) without their C++ start-up log lines."""
  if "tensorflow" in sys.modules or _verbose():
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Its run-time INFO too.
  with _stderr_to_devnull():
    import tensorflow  # pylint: disable=g-import-not-at-top,unused-import  # noqa: F401
    import tensorflow_datasets  # pylint: disable=g-import-not-at-top,unused-import  # noqa: F401


@contextlib.contextmanager
def hide_log_messages(*prefixes, logger="absl"):
  """Drops the records of `logger` whose message starts with a prefix.

  For libraries' warnings that say nothing to the user of this project (e.g.
  TFDS's "no dataset_info.json" for a dataset being generated here).
  """
  def keep(record):
    return not record.getMessage().startswith(prefixes)

  target = std_logging.getLogger(logger)
  target.addFilter(keep)
  try:
    yield
  finally:
    target.removeFilter(keep)
