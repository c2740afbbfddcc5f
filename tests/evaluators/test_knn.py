"""Tests of the weighted k-NN evaluator against a brute-force NumPy vote."""

import numpy as np
import pytest

from big_vision_like import sharding
from big_vision_like.evaluators import knn
from big_vision_like.registry import EVALUATORS
from tests.evaluators import fakes


def _brute_force(q, m, m_labels, k, temperature, num_classes):
  """One query at a time: cosine sims, top-k, exp(sim / T)-weighted vote."""
  q = q / np.linalg.norm(q, axis=1, keepdims=True)
  m = m / np.linalg.norm(m, axis=1, keepdims=True)
  preds = []
  for row in q:
    sims = m @ row
    top = np.argsort(-sims, kind="stable")[:k]
    votes = np.zeros(num_classes)
    for i in top:
      votes[m_labels[i]] += np.exp(sims[i] / temperature)
    preds.append(int(np.argmax(votes)))
  return np.array(preds)


def _data(rng, n, centers):
  y = rng.integers(0, len(centers), n)
  return (centers[y] + rng.normal(size=(n, centers.shape[1]))).astype(
      np.float32), y


@pytest.mark.parametrize("temperature", [0.07, 1.0])
def test_knn_accuracy_matches_brute_force(temperature):
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(5, 8))
  (q, qy), (m, my) = _data(rng, 50, centers), _data(rng, 80, centers)
  ks = (1, 7, 20, 200)  # 200 > memory size: all neighbours.
  got = knn.knn_accuracy(q, qy, m, my, ks=ks, num_classes=5,
                         temperature=temperature, chunk=16)
  for k in ks:
    expected = np.mean(_brute_force(q, m, my, min(k, 80), temperature, 5)
                       == qy)
    assert got[k] == pytest.approx(expected, abs=1e-9), k


def test_evaluator_end_to_end():
  rng = np.random.default_rng(1)
  centers = 2 * rng.normal(size=(3, 8))
  (q, qy), (m, my) = _data(rng, 29, centers), _data(rng, 45, centers)
  fakes.put_arrays("knn", {"q": {"image": q, "label": qy},
                           "m": {"image": m, "label": my}})
  ev = EVALUATORS.get("knn")(
      fakes.classifier_predict, data=fakes.data("knn", "q"),
      memory=fakes.data("knn", "m"), pp_fn="", batch_size=16,
      mesh=sharding.make_mesh(), k=(1, 10), temperature=0.1)
  res = dict(ev.run({"params": {"w": np.zeros((8, 2), np.float32)}}))
  assert set(res) == {"prec@1_k1", "prec@1_k10"}
  for k in (1, 10):
    expected = np.mean(_brute_force(q, m, my, k, 0.1, 3) == qy)
    assert res[f"prec@1_k{k}"] == pytest.approx(expected, abs=1e-9)
