"""Executes every notebook in colabs/ (its code cells, in order)."""

import glob
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "colabs", "*.ipynb")))


def test_there_are_notebooks():
  assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs(path, monkeypatch):
  monkeypatch.chdir(os.path.join(ROOT, "colabs"))
  with open(path) as f:
    notebook = json.load(f)
  namespace = {"__name__": "__notebook__"}
  for i, cell in enumerate(notebook["cells"]):
    if cell["cell_type"] != "code":
      continue
    source = "".join(cell["source"])
    exec(compile(source, f"{os.path.basename(path)}[cell {i}]", "exec"),  # pylint: disable=exec-used
         namespace)
