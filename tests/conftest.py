"""Shared test set-up: quiet TensorFlow, no GPU for tf.data, a session data dir."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.set_visible_devices([], "GPU")


@pytest.fixture(scope="session", autouse=True)
def _data_dir(tmp_path_factory):
  """Built-in datasets are prepared once per test session in a temp dir."""
  if "BVL_DATA_DIR" not in os.environ:
    os.environ["BVL_DATA_DIR"] = str(tmp_path_factory.mktemp("tfds"))
  yield os.environ["BVL_DATA_DIR"]
