"""Gathering and masked means on 2 processes x 2 devices (jax.distributed)."""

import json
import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

WORKER = """
import json, sys
import jax
import numpy as np
jax.distributed.initialize("127.0.0.1:{port}", num_processes=2,
                           process_id=int(sys.argv[1]))
from big_vision_like import sharding
from big_vision_like.evaluators import common
from big_vision_like.registry import EVALUATORS
from tests.evaluators import fakes
n, d = 37, 3
x = np.arange(n * d, dtype=np.float32).reshape(n, d)
split = fakes.put_arrays("mp", {{"test": {{"image": x, "id": np.arange(n)}}}})
mesh = sharding.make_mesh()
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
print(json.dumps({{"devices": jax.device_count(), "ids": out["id"].tolist(),
                  "x_ok": bool(np.array_equal(out["x"], x)),
                  "v": arrays["v"].tolist(), "mean": mean["first"]}}))
"""


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_gather_in_order_and_count_once():
  env = dict(os.environ, PYTHONPATH=ROOT,
             XLA_FLAGS="--xla_force_host_platform_device_count=2")
  script = WORKER.format(port=_free_port())
  procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  for stdout, _ in outs:
    res = json.loads(stdout.strip().splitlines()[-1])
    assert res["devices"] == 4
    assert res["ids"] == list(range(37)) and res["x_ok"]
    assert res["v"] == list(range(1, 22))
    assert res["mean"] == 54.0  # Mean of x[:, 0] = 3 * mean(0..36).
