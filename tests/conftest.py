"""Shared test set-up: 8 simulated CPU devices, fast compiles, quiet TF, a
session data dir.

Tests run on 8 simulated devices so every sharded path is exercised; tests
that need another device count (1 device, several processes) start their own
subprocesses.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS",
                                                                  ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=8")

# The suite's processes are short (compiles and a few tiny steps): glibc's
# default malloc arenas compile faster than host_memory's single arena, whose
# gain is per step of a large model. tests/test_host_memory.py and the
# benchmark's --compare tests choose their mode explicitly.
os.environ.setdefault("BIG_VISION_LIKE_HOST_MEMORY", "default")

# Tests compile hundreds of tiny programs and run each a few times: LLVM's
# -O0 backend roughly halves XLA:CPU compile time, and the subprocesses the
# tests start inherit it. `BVL_TEST_XLA_OPT=1` keeps the default.
if (os.environ.get("BVL_TEST_XLA_OPT") != "1" and
    "--xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]):
  os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"

# One persistent XLA compilation cache for the whole session (pytest-xdist
# workers and the training subprocesses inherit the variables): the same
# tiny train and eval steps are compiled by dozens of tests and subprocesses.
# The size limit turns on JAX's file lock around reads and writes, so
# concurrent processes never read a half-written entry. A bad entry is only
# a warning and a recompile. BVL_TEST_NO_JAX_CACHE=1 turns it off.
if (os.environ.get("BVL_TEST_NO_JAX_CACHE") != "1"
    and "JAX_COMPILATION_CACHE_DIR" not in os.environ):
  import atexit  # noqa: E402
  import shutil  # noqa: E402
  import tempfile  # noqa: E402
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(
      prefix="bvl_test_jax_cache_")
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.3"
  os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"] = str(4 << 30)
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"],
                  ignore_errors=True)

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.set_visible_devices([], "GPU")


@pytest.fixture(scope="session", autouse=True)
def _data_dir(tmp_path_factory):
  """Built-in datasets are prepared once per test session in a temp dir."""
  if "BVL_DATA_DIR" not in os.environ:
    os.environ["BVL_DATA_DIR"] = str(tmp_path_factory.mktemp("tfds"))
  yield os.environ["BVL_DATA_DIR"]


@pytest.fixture(name="mock_tfds")
def _mock_tfds(tmp_path, monkeypatch):
  """mock(name, splits=("train", "validation")) -> data_dir: a standard TFDS
  dataset with random examples of its real features (tests/mock_tfds.py)."""
  from tests import mock_tfds  # pylint: disable=g-import-not-at-top
  with mock_tfds.mock_tfds(tmp_path / "mock_tfds", monkeypatch) as mock:
    yield mock
