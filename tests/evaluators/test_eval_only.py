"""eval_only on a tiny trained digits workdir; save_predictions through it."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from big_vision_like import checkpoint
from big_vision_like import train
from big_vision_like.metrics import read_jsonl
from big_vision_like.tools import eval_only
from tests.test_train import CONFIG
from tests.test_train import ROOT
from tests.test_train import tiny_config

PP = ("decode(channels=1)|resize(16)|value_range(-1, 1)|"
      'onehot(10, key="label", key_result="labels")|keep("image", "labels")')


def _evals():
  digits = lambda split: dict(name="bvl_digits", split=split)  # noqa: E731
  return {
      "val": dict(type="classification", data=digits("validation"),
                  pp_fn=PP, log_steps=6),
      "val_ema": dict(type="classification", data=digits("validation"),
                      pp_fn=PP, pred_params="ema"),
      "fewshot": dict(type="fewshot", pp_fn=PP, label_key="labels",
                      shots=(1, 5), seeds=(0,), batch_size=64,
                      datasets={"digits": ("bvl_digits", "train",
                                           "validation")}),
      "preds": dict(type="save_predictions", data=digits("validation"),
                    pp_fn=PP, outputs=("logits", "pre_logits"),
                    keep=("labels",), batch_size=64),
  }


def _config():
  """The trainer tests' tiny digits ViT, 3 steps, evaluated at the end;
  with a weight EMA and its evaluator."""
  cfg = tiny_config("short,tune,ema=0.5", total_steps=3, ckpt_steps=None)
  cfg.evals.validation.log_steps = None  # Only at the end.
  cfg.evals.validation_ema.log_steps = None
  return cfg


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("digits"))
  _, results = train.train_and_evaluate(_config(), path)
  return path, results


def test_eval_only_matches_the_trainers_eval(workdir):
  path, trained = workdir
  cfg = _config()
  cfg.evals = _evals()
  step, res = eval_only.evaluate(cfg, path)
  assert step == 3
  for name in ("", "_ema"):
    assert res[f"val{name}/loss"] == pytest.approx(
        trained[f"validation{name}/loss"], rel=1e-5)
  assert res["val_ema/loss"] != res["val/loss"]
  for key in ("fewshot/digits_1shot", "fewshot/mean_5shot"):
    assert 0 <= res[key] <= 1, key
  assert res["preds/num_examples"] == 180
  with np.load(os.path.join(path, "predictions", "preds_3.npz")) as f:
    assert f["logits"].shape == (180, 10) and f["labels"].shape == (180, 10)
    acc = np.mean(f["logits"].argmax(1) == f["labels"].argmax(1))
  assert acc == pytest.approx(res["val/prec@1"], abs=1e-6)
  (line,) = read_jsonl(os.path.join(path, eval_only.RESULTS_FILE))
  assert line["step"] == 3 and line["val/prec@1"] == res["val/prec@1"]


def test_eval_only_cli_on_npz_params_with_one_device(workdir, tmp_path):
  path, trained = workdir
  params = checkpoint.load_params(path)
  flat = {"/".join(str(k.key) for k in keys): np.asarray(v)
          for keys, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  npz = str(tmp_path / "params.npz")
  np.savez(npz, **flat)
  env = dict(os.environ, PYTHONPATH=ROOT,
             XLA_FLAGS="--xla_force_host_platform_device_count=1")
  out = subprocess.run(
      [sys.executable, "-m", "big_vision_like.tools.eval_only",
       f"--config={CONFIG}:short,tune", f"--workdir={tmp_path}",
       f"--params={npz}", "--config.model.width=16", "--config.model.depth=1",
       "--config.model.mlp_dim=32", "--config.model.num_heads=2",
       "--config.input.batch_size=32", "--config.total_steps=3"],
      env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "validation/prec@1" in out.stdout
  (line,) = read_jsonl(str(tmp_path / eval_only.RESULTS_FILE))
  assert line["step"] == 0 and line["params"] == npz
  assert line["validation/prec@1"] == pytest.approx(
      trained["validation/prec@1"], abs=1e-6)
