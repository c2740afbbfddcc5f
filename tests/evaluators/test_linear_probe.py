"""Tests of the linear probe against scikit-learn's LogisticRegression."""

import numpy as np
import pytest
from sklearn import linear_model

from big_vision_like import sharding
from big_vision_like.evaluators import linear_probe
from big_vision_like.registry import EVALUATORS
from tests.evaluators import fakes

C, D = 4, 12


def _data(rng, n, centers):
  y = np.arange(n) % C
  return (centers[y] + rng.normal(size=(n, D))).astype(np.float32), y


@pytest.fixture(scope="module")
def splits():
  rng = np.random.default_rng(0)
  centers = 0.8 * rng.normal(size=(C, D))
  return {name: _data(rng, n, centers)
          for name, n in (("train", 300), ("val", 100), ("test", 400))}


def test_probe_reaches_sklearn_accuracy(splits):
  train, val, test = splits["train"], splits["val"], splits["test"]
  acc, val_acc, l2 = linear_probe.probe(
      train, val, test, l2_grid=(1e-4, 1e-2, 1e-1), steps=60, num_classes=C)
  sk = linear_model.LogisticRegression(max_iter=2000).fit(*train)
  assert acc >= sk.score(*test) - 0.03
  assert 0.4 < acc <= 1 and 0 < val_acc <= 1 and l2 in (1e-4, 1e-2, 1e-1)


@pytest.mark.parametrize("solver,steps", [("lbfgs", 60), ("adam", 300)])
def test_fit_logistic_matches_sklearn_weights(splits, solver, steps):
  """Same objective: sklearn's C is l2 = 1 / (C * N) on the mean loss."""
  x, y = linear_probe.standardize(splits["train"][0])[0], splits["train"][1]
  l2 = 1e-2
  got = linear_probe.fit_logistic(x, y, np.float32(l2), num_classes=C,
                                  steps=steps, solver=solver)
  sk = linear_model.LogisticRegression(C=1 / (l2 * len(y)), tol=1e-8,
                                       max_iter=5000).fit(x, y)
  logits = x @ got["w"] + got["b"]
  sk_logits = sk.decision_function(x)
  center = lambda z: z - z.mean(1, keepdims=True)  # noqa: E731
  np.testing.assert_allclose(center(logits), center(sk_logits), atol=2e-2)


def test_evaluator_with_and_without_val_split(splits):
  fakes.put_arrays("probe", {k: {"image": x, "label": y}
                             for k, (x, y) in splits.items()})
  kw = dict(pp_fn="", batch_size=32, mesh=sharding.make_mesh(),
            data=fakes.data("probe", "test"),
            train_data=fakes.data("probe", "train"),
            l2_grid=(1e-4, 1e-2, 1e-1), steps=60)
  state = {"params": {"w": np.zeros((D, 2), np.float32)}}
  res = dict(EVALUATORS.get("linear_probe")(
      fakes.classifier_predict, val_data=fakes.data("probe", "val"),
      **kw).run(state))
  expected = linear_probe.probe(splits["train"], splits["val"],
                                splits["test"], l2_grid=kw["l2_grid"],
                                steps=60, num_classes=C)
  assert (res["prec@1"], res["val_prec@1"], res["l2"]) == pytest.approx(
      expected, abs=1e-6)
  kw.update(solver="adam", steps=300)
  held = dict(EVALUATORS.get("linear_probe")(
      fakes.classifier_predict, **kw).run(state))
  assert held["prec@1"] > 0.4
