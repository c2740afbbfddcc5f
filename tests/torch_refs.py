"""PyTorch references of the converter tests, built in a subprocess.

torch imported next to TensorFlow in the pytest process can crash it, so a
test file that needs timm / open_clip outputs runs ITSELF as a script
(`python test_file.py OUT_DIR`, its `__main__` writes `.npz` cases) once per
module, and reads the cases back with `load_case`.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(test_file, out_dir, what="timm references"):
  """Runs `test_file` as a script writing its cases to `out_dir`."""
  proc = subprocess.run([sys.executable, os.path.abspath(test_file), out_dir],
                        cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                        capture_output=True, text=True, timeout=300,
                        check=False)
  if proc.returncode:
    pytest.fail(f"building the {what} failed:\n{proc.stderr[-3000:]}")
  return out_dir


def load_case(refs_dir, name):
  """(state dict, other arrays) of a case saved as `sd/<key>` + other keys."""
  with np.load(os.path.join(refs_dir, f"{name}.npz")) as data:
    arrays = {k: data[k] for k in data.files}
  sd = {k[3:]: v for k, v in arrays.items() if k.startswith("sd/")}
  return sd, {k: v for k, v in arrays.items() if not k.startswith("sd/")}
