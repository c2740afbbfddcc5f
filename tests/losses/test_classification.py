"""Tests for the classification losses, against NumPy formulas."""

import jax
import numpy as np
import pytest

from big_vision_like.losses import classification as cls
from big_vision_like.registry import LOSSES

LOGITS = np.array([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]], np.float32)
LABELS = np.array([0, 2])


def _np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_softmax_xent_matches_numpy():
  expected = -_np_log_softmax(LOGITS)[np.arange(2), LABELS]
  np.testing.assert_allclose(cls.softmax_xent(LOGITS, LABELS), expected,
                             rtol=1e-6)
  onehot = np.eye(3, dtype=np.float32)[LABELS]
  np.testing.assert_allclose(cls.softmax_xent(LOGITS, onehot), expected,
                             rtol=1e-6)


def test_label_smoothing():
  ls = 0.1
  target = np.eye(3)[LABELS] * (1 - ls) + ls / 3
  expected = -(target * _np_log_softmax(LOGITS)).sum(-1)
  np.testing.assert_allclose(
      cls.softmax_xent(LOGITS, LABELS, label_smoothing=ls), expected, rtol=1e-6)


def test_sigmoid_xent_matches_numpy():
  y = np.eye(3)[LABELS]
  p = 1 / (1 + np.exp(-LOGITS))
  expected = -(y * np.log(p) + (1 - y) * np.log(1 - p)).sum(-1)
  np.testing.assert_allclose(cls.sigmoid_xent(LOGITS, LABELS), expected,
                             rtol=1e-5)


@pytest.mark.parametrize("name", ["softmax_xent", "sigmoid_xent"])
def test_registered_objectives(name):
  fn = LOSSES.get(name)
  per_example = getattr(cls, name)(LOGITS, LABELS)
  loss, aux = jax.jit(fn)((LOGITS, {}), {"labels": LABELS})
  np.testing.assert_allclose(loss, per_example.mean(), rtol=1e-6)
  assert aux == {}
  loss_ls, _ = fn((LOGITS, {}), {"y": LABELS}, labels_key="y",
                  label_smoothing=0.2)
  assert float(loss_ls) != pytest.approx(float(loss))
  with pytest.raises(KeyError, match="batch\\['labels'\\]"):
    fn((LOGITS, {}), {"label": LABELS})


def test_gradient_of_softmax_xent():
  g = jax.grad(lambda x: cls.softmax_xent(x, LABELS).sum())(LOGITS)
  p = np.exp(_np_log_softmax(LOGITS))
  np.testing.assert_allclose(g, p - np.eye(3)[LABELS], atol=1e-6)
