"""Tests of the evaluator set-up: output selection, gathering, building."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from big_vision_like import datasets
from big_vision_like import sharding
from big_vision_like import step
from big_vision_like.evaluators import common
from big_vision_like.models import vit
from big_vision_like.registry import EVALUATORS
from big_vision_like.registry import PP_OPS
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


@pytest.mark.parametrize("mesh_name", ["8dev", "1dev"])
def test_masked_means_skip_strings_padding_and_its_values(mesh_name):
  x = np.arange(1, N * D + 1, dtype=np.float32).reshape(N, D)  # No zeros.
  names = np.array([f"file_{i}" for i in range(N)])
  fakes.put_arrays("masked", {"test": {"image": x, "name": names}})
  data = common.EvalData(fakes.data("masked", "test"), None, batch_size=16,
                         mesh=_meshes()[mesh_name])

  def per_example(scale, batch, offset):
    assert "name" not in batch  # Strings never reach the jitted function.
    x = batch["image"]  # Zero on padding: 1 / x is inf there.
    return {"inv": offset / x[:, 0], "rows": x * scale}

  means = common.MaskedMeans(per_example, _meshes()[mesh_name])
  res = means(2.0, data, 3.0)
  x = x.astype(np.float64)
  assert res == {"inv": pytest.approx(np.mean(3.0 / x[:, 0]), rel=1e-6),
                 "rows": pytest.approx(2.0 * x.mean(), rel=1e-6)}


# Checking evaluators' inputs before training.

_READS = []


@PP_OPS.register("bvl_test_count_reads")
def _count_reads():
  """Counts the examples tf.data preprocesses; keeps every static shape."""

  def op(data):
    tick = tf.numpy_function(lambda: _READS.append(1) or np.int64(1), [],
                             tf.int64)
    with tf.control_dependencies([tick]):
      return {k: tf.identity(v) for k, v in data.items()}

  return op


def _vit_at_16():
  """A tiny ViT (learnt position embeddings) initialised at 16 x 16."""
  model = vit.Model(num_classes=3, variant="mu/8", depth=1)
  image = jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.key(0), image)["params"]
  abstract = {"params": params, "step": jax.ShapeDtypeStruct([], jnp.int32)}
  return step.make_predict_fns(model, ("image",)), abstract


def _vit_evals(**pps):
  """Classification evals of 12 PNGs (16 x 16), decoded and resized by pp."""
  pixels = np.random.default_rng(0).integers(0, 256, (12, 16, 16, 3))
  pngs = [tf.io.encode_png(p.astype(np.uint8)).numpy() for p in pixels]
  fakes.put_arrays("vit16", {"val": {
      "image": np.array(pngs, object), "label": np.arange(12) % 3,
      "id": np.array([f"img{i}" for i in range(12)])}})
  labels = "onehot(3, key='label', key_result='labels')"
  return {name: dict(type="classification", data=fakes.data("vit16", "val"),
                     pp_fn=f"bvl_test_count_reads|decode|{pp}|"
                           f"value_range(-1, 1)|{labels}|"
                           "keep('image', 'labels', 'id')")
          for name, pp in pps.items()}


def test_check_inputs_names_the_evaluator_whose_resolution_differs():
  predict_fns, abstract = _vit_at_16()
  evals = common.build_evaluators(
      _vit_evals(same="resize(16)", bigger="resize(32)"), predict_fns,
      mesh=sharding.make_mesh(), batch_size=8, total_steps=10)
  del _READS[:]
  common.check_inputs(evals[:1], abstract)
  with pytest.raises(ValueError) as e:
    common.check_inputs(evals, abstract)
  message = str(e.value)
  assert "config.evals.bigger" in message and "same" not in message
  assert "resize(32)" in message
  assert "image: float32[8, 32, 32, 3]" in message
  assert "ScopeParamShapeError" in message and "pos_embedding" in message
  assert not _READS  # Static shapes: no example was read.


def test_check_inputs_reads_one_batch_when_shapes_are_dynamic():
  predict_fns, abstract = _vit_at_16()
  evals = common.build_evaluators(
      _vit_evals(small="resize_small(16)", big="resize_small(24)"),
      predict_fns, mesh=sharding.make_mesh(), batch_size=8, total_steps=10)
  spec = evals[0].evaluator.data.dataset.element_spec["image"]
  assert not spec.shape.is_fully_defined()
  del _READS[:]
  common.check_inputs(evals[:1], abstract)
  assert 8 <= len(_READS) <= 12  # One (local) batch, maybe a little more.
  with pytest.raises(ValueError, match=r"config\.evals\.big.*resize_small\(24\)"
                     r".*float32\[8, 24, 24, 3\].*ScopeParamShapeError"):
    common.check_inputs(evals, abstract)
  # The evaluator whose inputs fit runs on the real (initialised) model.
  model_state = {"params": vit.Model(num_classes=3, variant="mu/8", depth=1)
                 .init(jax.random.key(0), jnp.zeros([1, 16, 16, 3]))["params"]}
  assert 0 <= dict(evals[0].evaluator.run(model_state))["prec@1"] <= 1


def test_every_builtin_evaluator_checks_its_inputs(split, tmp_path):
  data = dict(split)
  evals = {
      "classification": dict(label_key="id"),
      "mean": dict(outputs=("sq_norm",)),
      "save_predictions": dict(keep=("id",)),
      "fewshot": dict(datasets={"a": (data["name"], "test", "test")},
                      label_key="id"),
      "knn": dict(memory=data, label_key="id"),
      "linear_probe": dict(train_data=data, label_key="id"),
  }
  evals = {k: dict(type=k, pp_fn="", **({} if k == "fewshot" else
                                        {"data": data}), **v)
           for k, v in evals.items()}
  built = common.build_evaluators(
      evals, {"predict": fakes.classifier_predict}, mesh=sharding.make_mesh(),
      batch_size=16, total_steps=10, workdir=str(tmp_path))
  fits = {"params": {"w": jax.ShapeDtypeStruct((D, 2), jnp.float32)}}
  common.check_inputs(built, fits)
  too_wide = {"params": {"w": jax.ShapeDtypeStruct((D + 1, 2), jnp.float32)}}
  for ev in built:
    with pytest.raises(ValueError, match=(
        rf"config\.evals\.{ev.name} \(pp_fn=''\).*"
        r"image: float32\[16, 3\].*TypeError")):
      common.check_inputs([ev], too_wide)


def test_check_inputs_skips_evaluators_without_the_method(split):
  built = common.build_evaluators(
      {"toy": dict(type="test_toy_counter", data=split, pp_fn="")},
      {"predict": fakes.classifier_predict}, mesh=sharding.make_mesh(),
      batch_size=8, total_steps=10)
  common.check_inputs(built, None)
