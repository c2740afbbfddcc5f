"""Tests of the `classification` evaluator: prec@k and loss against NumPy."""

import jax
import numpy as np
import pytest

from big_vision_like import sharding
from big_vision_like.evaluators import classification
from big_vision_like.evaluators import imagenet_data
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


def _run(key, logits, labels, **kw):
  """The evaluator's results on `logits` (fed as images, w = identity)."""
  logits = np.asarray(logits, np.float32)
  fakes.put_arrays(key, {"test": {"image": logits,
                                  "labels": np.asarray(labels)}})
  ev = EVALUATORS.get("classification")(
      fakes.classifier_predict, data=fakes.data(key, "test"), pp_fn="",
      batch_size=8, mesh=sharding.make_mesh(), **kw)
  return dict(ev.run({"params": {"w": np.eye(logits.shape[1],
                                             dtype=np.float32)}}))


# Hand-worked: 5 model classes scored among classes [1, 3, 4] only.
SUBSET = [1, 3, 4]
SUBSET_LOGITS = [[5, 1, 0, 2, 3],   # Among the 3: [1, 2, 3] -> class 4.
                 [0, 4, 9, 1, 2],   # [4, 1, 2] -> class 1.
                 [9, 0, 0, 3, 1],   # [0, 3, 1] -> class 3.
                 [9, 0, 0, 0, 0]]   # Labelled 0: not among the 3, skipped.
SUBSET_LABELS = [4, 3, 3, 0]  # Right, wrong, right (all wrong over 5).


def _subset_loss():
  logits = np.asarray(SUBSET_LOGITS, np.float64)[:3][:, SUBSET]
  mapped = [SUBSET.index(y) for y in SUBSET_LABELS[:3]]  # [2, 1, 1]
  return -np.mean(_log_softmax(logits)[np.arange(3), mapped])


@pytest.mark.parametrize("one_hot", [False, True])
def test_label_indices_score_among_a_subset_of_classes(one_hot):
  labels = np.asarray(SUBSET_LABELS)
  if one_hot:
    labels = np.eye(5, dtype=np.float32)[labels]
  res = _run(f"cls_subset_{one_hot}", SUBSET_LOGITS, labels,
             label_indices=SUBSET, top_k=(1, 2))
  assert res["prec@1"] == pytest.approx(2 / 3)
  assert res["prec@2"] == pytest.approx(2 / 3)  # Row 1: top-2 {1, 4}.
  assert res["loss"] == pytest.approx(_subset_loss(), rel=1e-5)
  everything = _run(f"cls_all_{one_hot}", SUBSET_LOGITS[:3], labels[:3])
  assert everything["prec@1"] == 0.0  # Over the 5 classes: all wrong.


def test_real_multi_hot_labels_skip_unlabelled_examples():
  logits = [[3, 1, 0, 0],   # Top-1 class 0: a positive.
            [0, 2, 1, 0],   # Top-1 class 1: wrong; top-2 has class 2.
            [1, 0, 0, 5]]   # No label (as ~1,000 ReaL images): skipped.
  labels = np.array([[1, 0, 0, 1], [0, 0, 1, 1], [0, 0, 0, 0]], np.float32)
  res = _run("cls_real", logits, labels, top_k=(1, 2))
  assert res["prec@1"] == pytest.approx(1 / 2)
  assert res["prec@2"] == pytest.approx(1.0)
  log_p = _log_softmax(np.asarray(logits, np.float64))
  # Softmax xent with the positives weighted equally (normalised labels).
  expected = -np.mean([log_p[0, [0, 3]].mean(), log_p[1, [2, 3]].mean()])
  assert res["loss"] == pytest.approx(expected, rel=1e-5)
  # Integer label -1 means "no label" too.
  res = _run("cls_minus_one", logits, [0, 2, -1], top_k=(1,))
  assert res["prec@1"] == pytest.approx(1 / 2)


def test_named_and_bad_label_indices():
  a = classification.resolve_label_indices("imagenet_a")
  assert a.shape == (200,) and a.max() < 1000
  np.testing.assert_array_equal(
      a, imagenet_data.label_indices("imagenet_a"))
  assert classification.resolve_label_indices("imagenet_v2") is None
  for bad in ("imagenet_b", [], [1, 1], [-1, 2], [0.5]):
    with pytest.raises(ValueError, match="label_indices"):
      classification.resolve_label_indices(bad)
  with pytest.raises(ValueError, match="the model has 5 outputs"):
    _run("cls_too_far", SUBSET_LOGITS, SUBSET_LABELS, label_indices=[1, 7])


def test_imagenet_classification_evals():
  evals = imagenet_data.classification_evals(
      "decode|central_crop(224)", ("real", "a", "val"), data_dir="/d",
      log_steps=10, pred_params="ema")
  assert list(evals) == ["real", "a", "val"]
  assert evals["real"]["data"] == dict(name="imagenet2012_real",
                                       split="validation", data_dir="/d")
  assert 'key="real_label"' in evals["real"]["pp_fn"]
  assert evals["a"]["label_indices"] == "imagenet_a"
  assert "label_indices" not in evals["val"]
  assert evals["val"]["pred_params"] == "ema"
  with pytest.raises(KeyError, match="Unknown ImageNet eval 'v3'"):
    imagenet_data.classification_evals("decode", ("v3",))
