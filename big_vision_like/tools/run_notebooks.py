r"""Executes notebooks in a Jupyter kernel (nbclient); `make notebooks`.

  python -m big_vision_like.tools.run_notebooks colabs/*.ipynb --inplace
  python -m big_vision_like.tools.run_notebooks colabs/x.ipynb --quick \
      --out /tmp/x.ipynb --figures /tmp/x_figures

Each notebook runs top to bottom in a fresh `python3` kernel (this
interpreter), with its own folder as the working directory; any cell error
stops it and is raised with the cell's source. `--inplace` writes the outputs
(figures included) back into the notebook, as committed; `--quick` sets
BVL_NOTEBOOK_QUICK=1, which the notebooks read to train fewer steps (the
tests). `--figures DIR` saves every PNG the notebook displayed.
Needs the `notebooks` extra (nbclient, nbformat, ipykernel, matplotlib).
"""

import argparse
import base64
import os
import sys
import time

QUICK_ENV = "BVL_NOTEBOOK_QUICK"


def execute(path, *, out=None, quick=False, timeout=600, env=None):
  """Runs the notebook at `path`; returns (executed notebook, seconds).

  Args:
    path: the .ipynb file.
    out: where to write the executed notebook (None: nowhere; may be `path`).
    quick: set BVL_NOTEBOOK_QUICK=1 in the kernel (fewer training steps).
    timeout: seconds any one cell may run.
    env: the kernel's environment (default: this process's).
  """
  import nbclient  # pylint: disable=g-import-not-at-top
  import nbformat  # pylint: disable=g-import-not-at-top
  nb = nbformat.read(path, as_version=4)
  env = dict(os.environ if env is None else env)
  if quick:
    env[QUICK_ENV] = "1"
  else:
    env.pop(QUICK_ENV, None)
  client = nbclient.NotebookClient(
      nb, timeout=timeout, kernel_name="python3",
      resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}})
  start = time.monotonic()
  try:
    client.execute(env=env)
  except nbclient.exceptions.CellExecutionError as e:
    raise RuntimeError(f"{path}: a cell failed:\n{e}") from None
  seconds = time.monotonic() - start
  if out is not None:
    nbformat.write(nb, out)
  return nb, seconds


def figures(nb):
  """The PNG images the notebook's cells displayed, in order (bytes)."""
  pngs = []
  for cell in nb.cells:
    for output in cell.get("outputs", []):
      data = output.get("data", {})
      if "image/png" in data:
        pngs.append(base64.b64decode(data["image/png"]))
  return pngs


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("notebooks", nargs="+")
  parser.add_argument("--inplace", action="store_true",
                      help="write the outputs back into each notebook")
  parser.add_argument("--out", help="output path (one notebook only)")
  parser.add_argument("--quick", action="store_true",
                      help=f"set {QUICK_ENV}=1 (fewer training steps)")
  parser.add_argument("--figures", help="save the displayed PNGs here")
  parser.add_argument("--timeout", type=int, default=600,
                      help="seconds per cell")
  args = parser.parse_args(argv)
  if args.out and len(args.notebooks) > 1:
    parser.error("--out takes one notebook; use --inplace for several.")
  for path in args.notebooks:
    out = args.out or (path if args.inplace else None)
    nb, seconds = execute(path, out=out, quick=args.quick,
                          timeout=args.timeout)
    pngs = figures(nb)
    if args.figures:
      os.makedirs(args.figures, exist_ok=True)
      stem = os.path.splitext(os.path.basename(path))[0]
      for i, png in enumerate(pngs):
        with open(os.path.join(args.figures, f"{stem}_{i}.png"), "wb") as f:
          f.write(png)
    print(f"{path}: {seconds:.0f} s, {len(pngs)} figures"
          + (f", written to {out}" if out else ""), flush=True)


if __name__ == "__main__":
  sys.exit(main())
