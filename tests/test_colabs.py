"""Runs every notebook in colabs/ in a real Jupyter kernel (nbclient).

Each notebook is copied to a temp dir and executed top to bottom with
BVL_NOTEBOOK_QUICK=1 (the notebooks then train fewer steps; every cell still
runs), on one CPU device. Any cell error fails the test; every figure the
notebook displays is saved next to the copy and checked to be a real image
(not blank); the run must fit its time budget. Marked `slow` (about 200 s of
CPU for the six: `make test-slow`, which CI runs after `make test`).
"""

import glob
import io
import os
import shutil

import numpy as np
import pytest

from big_vision_like.tools import run_notebooks

pytest.importorskip("nbclient", reason="needs the notebooks extra")
pytest.importorskip("ipykernel", reason="needs the notebooks extra")
matplotlib_image = pytest.importorskip("matplotlib.image")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "colabs", "*.ipynb")))
# Seconds of kernel time each notebook may take in its quick run on the
# 2-core CI machine (4-5x what it takes there while other tests run beside
# it).
BUDGET_SEC = 150
# Figures each notebook draws (at least).
MIN_FIGURES = {
    "attention_maps.ipynb": 2,
    "digits_quickstart.ipynb": 3,
    "features_off_the_shelf.ipynb": 2,
    "own_data.ipynb": 4,
    "siglip_zeroshot.ipynb": 3,
    "training_curves.ipynb": 2,
}


def test_every_notebook_is_listed():
  assert sorted(MIN_FIGURES) == [os.path.basename(p) for p in NOTEBOOKS]


def _kernel_env():
  """This environment (data dir, compilation cache), on one CPU device: the
  notebooks' batches are not split over the suite's 8 simulated devices.
  XLA's -O0 backend is kept: their quick runs compile more than they run."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
  return env


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_and_draws(path, tmp_path):
  name = os.path.basename(path)
  copy = tmp_path / name
  shutil.copy(path, copy)
  nb, seconds = run_notebooks.execute(str(copy), out=str(copy), quick=True,
                                      timeout=BUDGET_SEC, env=_kernel_env())
  pngs = run_notebooks.figures(nb)
  assert len(pngs) >= MIN_FIGURES[name], f"{name}: {len(pngs)} figures"
  for i, png in enumerate(pngs):
    (tmp_path / f"figure_{i}.png").write_bytes(png)
    image = matplotlib_image.imread(io.BytesIO(png), format="png")
    assert image.shape[0] > 50 and image.shape[1] > 50, (name, i)
    assert np.asarray(image)[..., :3].std() > 0.01, f"{name}: figure {i} blank"
  assert seconds < BUDGET_SEC, f"{name}: {seconds:.0f} s"
