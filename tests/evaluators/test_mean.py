"""Tests of the `mean` evaluator: masked means of selected outputs."""

import jax
import numpy as np
import pytest

from big_vision_like import sharding
from big_vision_like.registry import EVALUATORS
from tests.evaluators import fakes

N, D = 37, 3  # 37 examples: the last batch of 16 is padded.


@pytest.mark.parametrize("devices", [8, 1])
def test_mean_counts_padded_batches_once(devices):
  x = np.arange(N * D, dtype=np.float32).reshape(N, D)
  fakes.put_arrays("mean", {"test": {"image": x}})
  ev = EVALUATORS.get("mean")(
      fakes.classifier_predict, data=fakes.data("mean", "test"), pp_fn="",
      batch_size=16, mesh=sharding.make_mesh(devices=jax.devices()[:devices]),
      outputs={"sq": "sq_norm", "first": "nested/first",
               "two": lambda out, batch: out[0], "img": "pre_logits"})
  res = dict(ev.run({"params": {"w": np.ones((D, 2), np.float32)}}))
  x = x.astype(np.float64)
  assert res["sq"] == pytest.approx((x ** 2).sum(1).mean(), rel=1e-6)
  assert res["first"] == pytest.approx(x[:, 0].mean(), rel=1e-6)
  assert res["two"] == pytest.approx(x.sum(1).mean(), rel=1e-6)
  assert res["img"] == pytest.approx(x.mean(), rel=1e-6)  # [B, D] averaged.


def test_output_names_as_a_tuple():
  fakes.put_arrays("mean_tuple", {"test": {"image": np.ones((5, D),
                                                            np.float32)}})
  ev = EVALUATORS.get("mean")(
      fakes.classifier_predict, data=fakes.data("mean_tuple", "test"),
      pp_fn="", batch_size=8, mesh=sharding.make_mesh(),
      outputs=("sq_norm",))
  assert dict(ev.run({"params": {"w": np.ones((D, 2), np.float32)}})) == {
      "sq_norm": pytest.approx(3.0)}
