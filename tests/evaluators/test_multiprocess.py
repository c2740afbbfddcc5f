"""Evaluators on 2 processes (jax.distributed on 127.0.0.1): order and counts.

Each test starts two Python processes, 0 and 1, that run a worker script and
write their results as JSON; both must exit 0 within the time limit (else
both are killed and the test fails).
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from big_vision_like.datasets import core as datasets_core

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TIMEOUT_S = 300

PRELUDE = """
import json, sys
import jax
import numpy as np
jax.distributed.initialize("127.0.0.1:{port}", num_processes=2,
                           process_id=int(sys.argv[1]))
from big_vision_like import sharding
from big_vision_like.evaluators import common
from big_vision_like.pp import builder as pp_builder
from big_vision_like.registry import EVALUATORS
mesh = sharding.make_mesh()


def report(**results):
  with open(sys.argv[2], "w") as f:
    json.dump({{"devices": jax.device_count(), **results}}, f)
"""

ARRAYS_WORKER = PRELUDE + """
from tests.evaluators import fakes
n, d = 37, 3
x = np.arange(n * d, dtype=np.float32).reshape(n, d)
split = fakes.put_arrays("mp", {{"test": {{"image": x, "id": np.arange(n)}}}})
state = {{"params": {{"w": np.ones((d, 2), np.float32)}}}}
gather = common.Gatherer(common.select_fn(
    fakes.classifier_predict, {{"x": "pre_logits"}}, keep=("id",)), mesh)
out = gather(state, common.EvalData(dict(name=split, split="test"), None, 16,
                                    mesh))
arrays = common.Gatherer(lambda s, b: {{"v": b["v"] + 1}}, mesh)(
    state, common.ArrayData({{"v": np.arange(21)}}, 8, mesh))
mean = dict(EVALUATORS.get("mean")(
    fakes.classifier_predict, data=dict(name=split, split="test"), pp_fn="",
    batch_size=16, mesh=mesh, outputs={{"first": "nested/first"}}).run(state))
report(ids=out["id"].tolist(), x_ok=bool(np.array_equal(out["x"], x)),
       v=arrays["v"].tolist(), mean=mean["first"])
"""

OWN_DATA_WORKER = PRELUDE + """
import jax.numpy as jnp


def predict(train_state, batch):
  # Each image's pixels hold its index; class guess: index % 3.
  index = batch["image"][:, 0, 0, 0].astype(jnp.int32)
  logits = jax.nn.one_hot(index % 3, 3) * train_state["params"]["scale"]
  return logits, {{"index": index[:, None].astype(jnp.float32)}}


data = dict(name="imagefolder:{root}", split="test")
pp = "decode|keep('image', 'label', 'id')"  # `id`: a string feature.
evals = common.build_evaluators(
    {{"preds": dict(type="save_predictions", data=data, pp_fn=pp,
                   outputs=("index",), keep=("label",)),
      "val": dict(type="classification", data=data, pp_fn=pp,
                  label_key="label", top_k=(1,))}},
    {{"predict": predict}}, mesh=mesh, batch_size=8, total_steps=1,
    workdir={workdir!r})
state = {{"params": {{"scale": np.float32(4.0)}}, "step": np.int32(1)}}
results = {{ev.name: dict(ev.evaluator.run(state)) for ev in evals}}
features = common.LabelledFeatures(predict, mesh, representation="index",
                                   label_key="label", inputs=("image",))
x, y = features(state, common.EvalData(
    data, pp_builder.get_preprocess_fn(pp), 8, mesh))
report(results=results, x=x[:, 0].tolist(), y=y.tolist())
"""


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_two_processes(script, tmp_path, devices):
  """Runs `script` as processes 0 and 1; returns their JSON results.

  Output goes to log files (a full pipe cannot block a worker); both
  processes are killed if they are not done within TIMEOUT_S.
  """
  env = dict(os.environ, PYTHONPATH=ROOT,
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  procs, logs = [], []
  deadline = time.monotonic() + TIMEOUT_S
  try:
    for i in range(2):
      logs.append(open(tmp_path / f"proc{i}.log", "w"))
      procs.append(subprocess.Popen(
          [sys.executable, "-c", script, str(i), str(tmp_path / f"{i}.json")],
          env=env, cwd=ROOT, stdout=logs[-1], stderr=subprocess.STDOUT))
    for p in procs:
      p.wait(timeout=max(1.0, deadline - time.monotonic()))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
    for f in logs:
      f.close()
  for i, p in enumerate(procs):
    assert p.returncode == 0, (tmp_path / f"proc{i}.log").read_text()[-3000:]
  return [json.loads((tmp_path / f"{i}.json").read_text()) for i in range(2)]


@pytest.mark.slow
def test_two_processes_gather_in_order_and_count_once(tmp_path):
  script = ARRAYS_WORKER.format(port=_free_port())
  for res in _run_two_processes(script, tmp_path, devices=2):
    assert res["devices"] == 4
    assert res["ids"] == list(range(37)) and res["x_ok"]
    assert res["v"] == list(range(1, 22))
    assert res["mean"] == 54.0  # Mean of x[:, 0] = 3 * mean(0..36).


N_IMAGES = 37  # Process 0 reads 19, process 1 18: both pad their last batch.


def _image_folder(root):
  """root/test/CLASS/NN.png: 4 x 4 PNGs whose pixels all equal NN."""
  rng = np.random.default_rng(0)
  for i in range(N_IMAGES):
    path = root / "test" / "abc"[rng.integers(3)] / f"{i:02d}.png"
    os.makedirs(path.parent, exist_ok=True)
    tf.io.write_file(str(path), tf.io.encode_png(np.full((4, 4, 3), i,
                                                         np.uint8)))


def _split_order(root):
  """(indices, labels) of the split's examples in split order (1 process)."""
  source = datasets_core.get_source(f"imagefolder:{root}")
  examples = list(source.get_tfdata(
      "test", process_index=0, process_count=1,
      drop_remainder=False).as_numpy_iterator())
  indices = [int(tf.io.decode_png(e["image"])[0, 0, 0]) for e in examples]
  return np.array(indices), np.array([e["label"] for e in examples])


@pytest.mark.slow
def test_own_data_predictions_come_back_in_split_order(tmp_path):
  _image_folder(tmp_path / "folder")
  indices, labels = _split_order(tmp_path / "folder")
  assert sorted(indices) == list(range(N_IMAGES))
  assert list(indices) != sorted(indices)  # Hash order: not file order.
  workdir = tmp_path / "work"
  script = OWN_DATA_WORKER.format(port=_free_port(), root=tmp_path / "folder",
                                  workdir=str(workdir))
  results = _run_two_processes(script, tmp_path, devices=1)
  with np.load(workdir / "predictions" / "preds_1.npz") as f:
    np.testing.assert_array_equal(f["index"][:, 0], indices)
    np.testing.assert_array_equal(f["label"], labels)
  accuracy = np.mean(indices % 3 == labels)
  assert 0 < accuracy < 1
  for res in results:
    assert res["devices"] == 2
    np.testing.assert_array_equal(res["x"], indices)
    np.testing.assert_array_equal(res["y"], labels)
    assert res["results"]["preds"] == {"num_examples": N_IMAGES}
    assert res["results"]["val"]["prec@1"] == pytest.approx(accuracy)
