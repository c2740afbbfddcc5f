"""Tests of `save_predictions`: files under the workdir given by the trainer."""

import os

import numpy as np
import pytest

from big_vision_like import sharding
from big_vision_like.evaluators import common
from big_vision_like.registry import EVALUATORS
from tests.evaluators import fakes

N, D = 21, 3


def test_writes_selected_outputs_in_order(tmp_path):
  x = np.random.default_rng(0).normal(size=(N, D)).astype(np.float32)
  fakes.put_arrays("preds", {"test": {"image": x, "id": np.arange(N)}})
  evals = {"preds": dict(type="save_predictions", pp_fn="",
                         data=fakes.data("preds", "test"),
                         outputs={"logits": "logits", "x": "pre_logits"},
                         keep=("id",))}
  (ev,) = common.build_evaluators(
      evals, {"predict": fakes.classifier_predict},
      mesh=sharding.make_mesh(), batch_size=8, total_steps=10,
      workdir=str(tmp_path))
  w = np.arange(D * 2, dtype=np.float32).reshape(D, 2)
  assert dict(ev.evaluator.run({"params": {"w": w}, "step": 7})) == {
      "num_examples": N}
  with np.load(os.path.join(tmp_path, "predictions", "preds_7.npz")) as f:
    assert sorted(f.files) == ["id", "logits", "x"]
    np.testing.assert_array_equal(f["id"], np.arange(N))
    np.testing.assert_allclose(f["logits"], x @ w, rtol=1e-5)


def test_needs_a_workdir():
  fakes.put_arrays("preds_none", {"test": {"image": np.ones((2, D))}})
  with pytest.raises(ValueError, match="needs `workdir`"):
    EVALUATORS.get("save_predictions")(
        fakes.classifier_predict, data=fakes.data("preds_none", "test"),
        pp_fn="", batch_size=8, mesh=sharding.make_mesh())
