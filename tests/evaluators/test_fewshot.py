"""Tests of the few-shot ridge-regression evaluator."""

import jax
import numpy as np
import pytest

from big_vision_like import sharding
from big_vision_like.evaluators import fewshot
from big_vision_like.registry import EVALUATORS
from tests.evaluators import fakes


def _numpy_fewshot(x, y, x_test, num_classes, l2):
  """Predictions of big_vision's recipe, solved directly in float64."""
  mean, std = x.mean(0), x.std(0) + 1e-5
  prep = lambda a: np.pad((a - mean) / std, ((0, 0), (0, 1)),  # noqa: E731
                          constant_values=100.0)
  xw = prep(x.astype(np.float64))
  t = 2.0 * np.eye(num_classes)[y] - 1.0
  w = np.linalg.solve(xw.T @ xw + l2 * np.eye(xw.shape[1]), xw.T @ t)
  return (prep(x_test.astype(np.float64)) @ w).argmax(1)


@pytest.mark.parametrize("n,d", [(40, 6), (6, 40)])  # Primal and dual form.
def test_ridge_weights_match_numpy_solve(n, d):
  rng = np.random.default_rng(0)
  x, t = rng.normal(size=(n, d)), rng.normal(size=(n, 3))
  expected = np.linalg.solve(x.T @ x + 2.0 * np.eye(d), x.T @ t)
  got = fewshot.ridge_weights(x.astype(np.float32), t.astype(np.float32), 2.0)
  np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


def test_sample_shots_takes_k_per_class_and_depends_on_seed():
  labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 0])
  idx = fewshot.sample_shots(labels, 2, seed=0, num_classes=3)
  assert sorted(labels[idx]) == [0, 0, 1, 1, 2, 2]
  assert len(fewshot.sample_shots(labels, 5, seed=0, num_classes=3)) == 9
  draws = {tuple(fewshot.sample_shots(labels, 1, seed=s, num_classes=3))
           for s in range(5)}
  assert len(draws) > 1


def _clusters(rng, n, centers, noise):
  y = np.arange(n) % len(centers)
  return (centers[y] + noise * rng.normal(size=(n, centers.shape[1]))).astype(
      np.float32), y


def test_evaluator_matches_numpy_recipe():
  rng = np.random.default_rng(1)
  centers = rng.normal(size=(4, 16))
  x, y = _clusters(rng, 103, centers, 1.2)
  xt, yt = _clusters(rng, 61, centers, 1.2)
  fakes.put_arrays("fewshot", {"train": {"image": x, "label": y},
                               "small": {"image": x[:60], "label": y[:60]},
                               "test": {"image": xt, "label": yt}})
  ev = EVALUATORS.get("fewshot")(
      fakes.classifier_predict, pp_fn="", batch_size=16,
      mesh=sharding.make_mesh(), shots=(1, 5, 25), seeds=(0, 1), l2_reg=4.0,
      datasets={"a": (f"{fakes.PREFIX}:fewshot", "train", "test"),
                "b": (f"{fakes.PREFIX}:fewshot", "small", "test")})
  res = dict(ev.run({"params": {"w": np.zeros((16, 2), np.float32)}}))
  for shots in (1, 5, 25):
    accs = [np.mean(_numpy_fewshot(x[i], y[i], xt, 4, 4.0) == yt)
            for i in (fewshot.sample_shots(y, shots, s, 4) for s in (0, 1))]
    assert res[f"a_{shots}shot"] == pytest.approx(np.mean(accs), abs=1e-6)
    assert res[f"mean_{shots}shot"] == pytest.approx(
        (res[f"a_{shots}shot"] + res[f"b_{shots}shot"]) / 2)
  assert res["a_25shot"] > 0.8 and res["a_25shot"] > res["a_1shot"]
  assert jax.device_count() == 8
