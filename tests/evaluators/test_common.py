"""Tests of the evaluator set-up: output selection, gathering, building."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_like import datasets
from big_vision_like import sharding
from big_vision_like.evaluators import common
from big_vision_like.registry import EVALUATORS
from tests.evaluators import fakes

N, D = 37, 3  # 37 examples: the last batch of 16 is padded.


@pytest.fixture(scope="module")
def split():
  x = np.arange(N * D, dtype=np.float32).reshape(N, D)
  fakes.put_arrays("common", {"test": {"image": x, "id": np.arange(N)}})
  return fakes.data("common", "test")


def _meshes():
  return {"8dev": sharding.make_mesh(),
          "1dev": sharding.make_mesh(devices=jax.devices()[:1])}


def test_select_output_by_name():
  x = jnp.ones((2, 3))
  cls = (x * 2, {"pre_logits": x, "a": {"b": x * 3}})
  assert common.select_output(cls, "logits") is cls[0]
  assert common.select_output(cls, "pre_logits") is x
  np.testing.assert_array_equal(common.select_output(cls, "a/b"), x * 3)
  assert common.select_output(cls, lambda o, b: b["k"], {"k": 5}) == 5
  two = (x, None, {})
  assert common.select_output(two, "zimg") is x
  with pytest.raises(ValueError, match="'ztxt' is None"):
    common.select_output(two, "ztxt")
  with pytest.raises(KeyError, match="pre_logit.*aux keys"):
    common.select_output(cls, "pre_logit")


@pytest.mark.parametrize("mesh_name", ["8dev", "1dev"])
def test_gatherer_returns_each_example_once_in_order(split, mesh_name):
  mesh = _meshes()[mesh_name]
  data = common.EvalData(split, None, batch_size=16, mesh=mesh)
  gather = common.Gatherer(common.select_fn(
      fakes.classifier_predict, {"x": "pre_logits", "s": "sq_norm"},
      inputs=("image",), keep=("id",)), mesh)
  state = {"params": {"w": np.ones((D, 2), np.float32)}}
  out = gather(state, data)
  np.testing.assert_array_equal(out["id"], np.arange(N))
  x = np.arange(N * D, dtype=np.float32).reshape(N, D)
  np.testing.assert_array_equal(out["x"], x)
  np.testing.assert_allclose(out["s"], (x ** 2).sum(1))


@pytest.mark.parametrize("n", [1, 16, 21])
def test_array_data_pads_and_gathers_in_order(n):
  mesh = sharding.make_mesh()
  data = common.ArrayData({"v": np.arange(n) * 10}, batch_size=8, mesh=mesh)
  gather = common.Gatherer(lambda s, b: {"v": b["v"] + s}, mesh)
  np.testing.assert_array_equal(gather(1, data)["v"], np.arange(n) * 10 + 1)


class ToyEvaluator:
  """Counts examples; records what build_evaluators gave it."""

  def __init__(self, predict_fn, *, data, pp_fn, batch_size, mesh,
               workdir=None, name=None, scale=1.0):
    self.data = common.EvalData(data, pp_fn, batch_size, mesh)
    self.predict_fn, self.workdir, self.name = predict_fn, workdir, name
    self.scale = scale

  def run(self, train_state):
    del train_state
    yield "count", self.scale * sum(
        int(np.asarray(b["_mask"]).sum()) for b in self.data)


EVALUATORS.register("test_toy_counter", ToyEvaluator)


def test_external_evaluator_runs_through_build_evaluators(split, tmp_path):
  evals = {"toy": dict(type="test_toy_counter", data=split, pp_fn="",
                       scale=2.0, log_steps=5),
           "toy_end": dict(type="test_toy_counter", data=split, pp_fn="",
                           workdir="/elsewhere")}
  built = common.build_evaluators(
      evals, {"predict": fakes.classifier_predict}, mesh=sharding.make_mesh(),
      batch_size=8, total_steps=10, workdir=str(tmp_path))
  (toy, toy_end) = built
  assert (toy.name, toy.every, toy_end.every) == ("toy", 5, None)
  assert toy.evaluator.workdir == str(tmp_path)
  assert toy.evaluator.name == "toy"
  assert toy_end.evaluator.workdir == "/elsewhere"  # The config wins.
  assert dict(toy.evaluator.run(None)) == {"count": 2.0 * N}
  assert toy_end.due(10, 10) and not toy_end.due(5, 10)


def test_build_evaluators_names_unknown_keys(split):
  evals = {"toy": dict(type="test_toy_counter", data=split, pp_fn="",
                       scael=2.0)}
  with pytest.raises(KeyError, match=r"scael.*config\.evals\.toy.*scale"):
    common.build_evaluators(
        evals, {"predict": fakes.classifier_predict},
        mesh=sharding.make_mesh(), batch_size=8, total_steps=10)


def test_every_builtin_evaluator_is_signature_checkable():
  for name in ("classification", "fewshot", "knn", "linear_probe", "mean",
               "retrieval", "save_predictions", "zeroshot"):
    params = inspect.signature(EVALUATORS.get(name)).parameters.values()
    assert all(p.kind != p.VAR_KEYWORD for p in params), name


def test_class_names_from_source_or_tfds():
  assert common.class_names(fakes.ArraySource({}, ["a", "b"])) == ["a", "b"]
  assert common.class_names(datasets.get_source("bvl_digits"))[:3] == [
      "0", "1", "2"]
  with pytest.raises(ValueError, match="no class names"):
    common.class_names(fakes.ArraySource({}))
