"""Tests of the `classification` evaluator: prec@k and loss against NumPy."""

import jax
import numpy as np
import pytest

from big_vision_like import sharding
from big_vision_like.registry import EVALUATORS
from tests.evaluators import fakes

N, D, C = 37, 3, 5  # 37 examples: the last batch of 16 is padded.


def _log_softmax(logits):
  shifted = logits - logits.max(axis=1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _expected(x, w, labels, ks):
  """NumPy prec@k and mean cross-entropy of logits x @ w (no ties)."""
  logits = x.astype(np.float64) @ w.astype(np.float64)
  own = logits[np.arange(len(labels)), labels]
  rank = (logits > own[:, None]).sum(axis=1)  # Classes scoring higher.
  out = {f"prec@{k}": np.mean(rank < k) for k in ks}
  out["loss"] = -np.mean(_log_softmax(logits)[np.arange(len(labels)),
                                             labels])
  return out


@pytest.mark.parametrize("devices", [8, 1])
def test_string_features_are_skipped_and_padding_not_counted(devices):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(N, D)).astype(np.float32)
  w = rng.normal(size=(D, C)).astype(np.float32)
  labels = rng.integers(0, C, size=N)
  names = np.array([f"img_{i}.png" for i in range(N)])
  fakes.put_arrays("cls_strings", {"test": {
      "image": x, "labels": labels, "file_name": names}})
  ev = EVALUATORS.get("classification")(
      fakes.classifier_predict, data=fakes.data("cls_strings", "test"),
      pp_fn="keep('image', 'labels', 'file_name')", batch_size=16,
      mesh=sharding.make_mesh(devices=jax.devices()[:devices]),
      top_k=(1, 2, 3))
  assert "file_name" in next(iter(ev.data))  # The batch holds strings.
  res = dict(ev.run({"params": {"w": w}}))
  expected = _expected(x, w, labels, (1, 2, 3))
  assert res.keys() == expected.keys()
  for name, value in expected.items():
    assert res[name] == pytest.approx(value, rel=1e-5), name
  assert 0 < res["prec@1"] < res["prec@3"] < 1  # Not trivially 0 or 1.


def test_one_hot_labels():
  x = np.eye(4, D, dtype=np.float32)  # Rows e0, e1, e2 and 0.
  w = np.eye(D, C, dtype=np.float32) * 10.0
  labels = np.eye(C, dtype=np.float32)[[0, 1, 4, 3]]  # Two right.
  fakes.put_arrays("cls_onehot", {"test": {"image": x, "labels": labels}})
  ev = EVALUATORS.get("classification")(
      fakes.classifier_predict, data=fakes.data("cls_onehot", "test"),
      pp_fn="", batch_size=8, mesh=sharding.make_mesh(), top_k=(1,))
  res = dict(ev.run({"params": {"w": w}}))
  assert res["prec@1"] == pytest.approx(0.5)  # Row 3 (all ties): class 0.
  expected = _expected(x, w, labels.argmax(1), (1,))
  assert res["loss"] == pytest.approx(expected["loss"], rel=1e-5)
