"""The batch-size study's summary: means and ranges over seeds, and its plot."""

import importlib.util
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = os.path.join(HERE, "..", "..", "experiments", "siglip_batch_size",
                   "run.py")


@pytest.fixture(scope="module")
def study():
  spec = importlib.util.spec_from_file_location("batch_size_study", RUN)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _rows():
  rows = []
  for seed, (a, b) in enumerate([(0.80, 0.70), (0.90, 0.75)]):
    rows += [
        dict(loss="sigmoid", batch_size=32, seed=seed, steps=100, zeroshot=a,
             i2t_r1=b),
        dict(loss="softmax", batch_size=32, seed=seed, steps=100,
             zeroshot=a - 0.1, i2t_r1=b + 0.1),
        dict(loss="sigmoid", batch_size=128, seed=seed, steps=25,
             zeroshot=0.5, i2t_r1=0.25),
    ]
  return rows


def test_table_means_and_ranges(study):
  lines = study.table(_rows()).splitlines()
  assert lines[0] == "Mean over 2 seeds (range):"
  assert lines[4] == ("| 32 | 100 | 85.0% (80.0-90.0) | 75.0% (70.0-80.0) | "
                      "72.5% (70.0-75.0) | 82.5% (80.0-85.0) |")
  # No softmax run at 128: a dash; the same value twice: the range is a point.
  assert lines[5] == "| 128 | 25 | 50.0% (50.0-50.0) | - | 25.0% (25.0-25.0) | - |"
  one_seed = [r for r in _rows() if r["seed"] == 0]
  assert study.table(one_seed).splitlines()[4].startswith("| 32 | 100 | 80.0% |")


def test_plot_writes_an_image(study, tmp_path):
  pytest.importorskip("matplotlib")
  path = tmp_path / "plot.png"
  study.plot(_rows(), str(path))
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert path.stat().st_size > 5000
