"""Distillation: the losses, the frozen teacher in the train step, the
agreement evaluator, the config checks, and the trainer end to end.

Tiny fake models (a few dense layers) keep compiles short; one end-to-end
run uses the digits ViT of tests/test_train.py.
"""

import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from big_vision_like import checkpoint
from big_vision_like import distill as distill_lib
from big_vision_like import sharding
from big_vision_like import step as step_lib
from big_vision_like import train
from big_vision_like.evaluators import distill_agreement
from big_vision_like.losses import distillation as losses
from big_vision_like.metrics import read_jsonl
from big_vision_like.registry import EVALUATORS
from big_vision_like.registry import LOSSES
from big_vision_like.registry import MODELS
from big_vision_like.tree_util import tree_names
from tests.test_train import tiny_config

RNG = np.random.default_rng(0)
C = 5  # Classes of the fake models.


def _np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


# The losses against NumPy formulas.


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_kl_is_the_numpy_kl_times_t_squared(temperature):
  s, t = RNG.normal(size=(2, 6, C)) * 3
  log_p, log_q = (_np_log_softmax(t / temperature),
                  _np_log_softmax(s / temperature))
  want = np.mean(np.sum(np.exp(log_p) * (log_p - log_q), -1)) * temperature**2
  loss, metrics = losses.DISTILL_LOSSES.get("kl")(
      (s, {}), (t, {}), temperature=temperature)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(metrics["teacher_agreement"],
                             np.mean(s.argmax(-1) == t.argmax(-1)))
  same, _ = losses.DISTILL_LOSSES.get("kl")((t, {}), (t, {}))
  np.testing.assert_allclose(same, 0.0, atol=1e-6)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_deit_hard_is_the_xent_of_the_dist_head_on_the_teacher_argmax(
    label_smoothing):
  cls_logits, dist_logits, teacher = RNG.normal(size=(3, 6, C))
  target = np.eye(C)[teacher.argmax(-1)]
  target = target * (1 - label_smoothing) + label_smoothing / C
  want = np.mean(-np.sum(target * _np_log_softmax(dist_logits), -1))
  loss, _ = losses.DISTILL_LOSSES.get("deit_hard")(
      (cls_logits, {"dist_logits": dist_logits}), (teacher, {}),
      label_smoothing=label_smoothing)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  with pytest.raises(KeyError, match="dist_logits.*dist_token=True"):
    losses.DISTILL_LOSSES.get("deit_hard")((cls_logits, {}), (teacher, {}))


def test_embedding_cosine_of_one_or_both_towers():
  si, st, ti, tt = RNG.normal(size=(4, 6, 8))

  def cos_dist(a, b):
    return 1 - np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) *
                                    np.linalg.norm(b, axis=-1))

  fn = losses.DISTILL_LOSSES.get("embedding_cosine")
  img, metrics = fn((si, st, {}), (ti, tt, {}))
  np.testing.assert_allclose(img, cos_dist(si, ti).mean(), rtol=1e-5)
  both, metrics = fn((si, st, {}), (ti, tt, {}), outputs=("zimg", "ztxt"))
  np.testing.assert_allclose(
      both, (cos_dist(si, ti).mean() + cos_dist(st, tt).mean()) / 2, rtol=1e-5)
  assert set(metrics) == {"cosine_distance/zimg", "cosine_distance/ztxt"}
  # A classifier teacher's pre-logits as the target of the image embedding.
  pre, _ = fn((si, st, {}), (None, {"pre_logits": ti}),
              teacher_outputs=("pre_logits",))
  np.testing.assert_allclose(pre, img, rtol=1e-6)


def test_every_distillation_loss_is_an_example_mean_and_not_a_task_loss():
  for name in ("kl", "deit_hard", "embedding_cosine"):
    assert losses.DISTILL_LOSSES.get(name).example_mean
    assert name not in LOSSES


# Tiny models: a classifier with a DeiT-style distillation head, a two-tower
# model, and a teacher whose params fail if anything differentiates them.


class FakeDeiT(nn.Module):
  """`(class-head logits, {"dist_logits", "pre_logits"})`, like DeiT."""
  num_classes: int = C

  @nn.compact
  def __call__(self, image, *, train=False):
    h = nn.tanh(nn.Dense(8)(image.reshape(image.shape[0], -1)))  # [B, 8]
    logits = nn.Dense(self.num_classes, name="head")(h)
    return logits, {"dist_logits": nn.Dense(self.num_classes,
                                            name="dist")(h),
                    "pre_logits": h}


class FakeTwoTowers(nn.Module):
  """`(zimg, ztxt, aux)` of normalised embeddings, like two_towers."""
  dim: int = 6

  @nn.compact
  def __call__(self, image, text, *, train=False):
    zimg = nn.Dense(self.dim, name="img")(image.reshape(image.shape[0], -1))
    ztxt = nn.Dense(self.dim, name="txt")(text.astype(jnp.float32))
    norm = lambda z: z / jnp.linalg.norm(z, axis=-1, keepdims=True)  # noqa
    t = self.param("t", nn.initializers.constant(np.log(10.0)), (1,))
    return norm(zimg), norm(ztxt), {"t": jnp.exp(t)}


@jax.custom_vjp
def _guard(x):
  return x


def _guard_fwd(x):
  raise AssertionError("the teacher's params were differentiated")


_guard.defvjp(_guard_fwd, lambda res, g: (g,))


class GuardedTeacher(nn.Module):
  """A classifier whose kernel cannot be differentiated: jax.grad (or any
  JVP) through it calls `_guard_fwd`, which raises."""
  num_classes: int = C

  @nn.compact
  def __call__(self, image, *, train=False):
    x = image.reshape(image.shape[0], -1)
    kernel = self.param("kernel", nn.initializers.normal(1.0),
                        (x.shape[-1], self.num_classes))
    return x @ _guard(kernel), {}


for _name, _cls in (("test_fake_deit", FakeDeiT),
                    ("test_fake_two_towers", FakeTwoTowers),
                    ("test_guarded_teacher", GuardedTeacher)):
  if _name not in MODELS:
    MODELS.register(_name, _cls)


def _distill(teacher_name, loss="kl", model_inputs=("image",), **kw):
  return distill_lib.Distill(
      dict(teacher=dict(model_name=teacher_name, init="unused.npz"),
           loss=loss, **kw), model_inputs=model_inputs)


def _classification_setup(teacher_name="test_fake_deit", student=None, **kw):
  batch = {"image": RNG.normal(size=(8, 4, 4, 1)).astype(np.float32),
           "labels": np.eye(C, dtype=np.float32)[RNG.integers(0, C, 8)]}
  student = student or FakeDeiT()
  distill = _distill(teacher_name, **kw)
  params = student.init(jax.random.key(0), batch["image"][:1])["params"]
  teacher = distill.model.init(jax.random.key(1),
                               batch["image"][:1])["params"]
  return (student, step_lib.build_loss("softmax_xent", {}, None), distill,
          params, teacher, batch, ("image",))


def _two_tower_setup():
  batch = {"image": RNG.normal(size=(8, 4, 4, 1)).astype(np.float32),
           "labels": RNG.integers(0, 9, size=(8, 3)).astype(np.int32)}
  student = FakeTwoTowers()
  distill = _distill("test_fake_two_towers", loss="embedding_cosine",
                     model_inputs=("image", "labels"),
                     loss_kw=dict(outputs=("zimg", "ztxt")), weight=0.5)
  inputs = (batch["image"][:1], batch["labels"][:1])
  params = student.init(jax.random.key(0), *inputs)["params"]
  teacher = distill.model.init(jax.random.key(1), *inputs)["params"]
  return (student, step_lib.build_loss("softmax_loss", {}, None), distill,
          params, teacher, batch, ("image", "labels"))


def _train(setup, k=1, steps=2, lr=0.1):
  student, loss_fn, distill, params, teacher, batch, inputs = setup
  tx = optax.sgd(lr)
  step_fn = jax.jit(step_lib.make_train_step(
      student, loss_fn, tx, lambda s: lr, model_inputs=inputs, seed=0,
      grad_accum_steps=k, distill=distill))
  state = {"params": params, "opt": tx.init(params),
           "step": jnp.zeros([], jnp.int32), distill_lib.TEACHER: teacher}
  for _ in range(steps):
    state, metrics = step_fn(state, batch)
  return jax.device_get(state), jax.device_get(metrics)


def _assert_bitwise_equal(a, b):
  assert tree_names(a) == tree_names(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert np.asarray(x).dtype == np.asarray(y).dtype
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("make_setup", [_classification_setup,
                                        _two_tower_setup])
def test_teacher_is_frozen_and_accumulation_is_exact(make_setup):
  """2 SGD steps: the teacher stays bitwise, has no optimizer state; K=2
  micro-batches give the params of K=1 (the classifier takes the
  example-mean path of accumulation, the two-tower one gradient caching)."""
  setup = make_setup()
  teacher = jax.device_get(setup[4])
  state, metrics = _train(setup)
  _assert_bitwise_equal(state[distill_lib.TEACHER], teacher)
  assert not any(n.startswith("teacher") for n in tree_names(state["opt"]))
  opt_shapes = sorted(x.shape for x in jax.tree.leaves(state["opt"]))
  assert opt_shapes == sorted(x.shape for x in jax.tree.leaves(setup[3])) or (
      not opt_shapes)  # Plain SGD keeps no state at all.
  assert {"task_loss", "distill_loss", "loss"} <= set(metrics)
  weight = 0.5 if make_setup is _two_tower_setup else 1.0
  np.testing.assert_allclose(
      metrics["loss"], metrics["task_loss"] + weight *
      metrics["distill_loss"], rtol=1e-6)
  accumulated, m2 = _train(setup, k=2)
  np.testing.assert_allclose(m2["loss"], metrics["loss"], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-6),
               accumulated["params"], state["params"])
  _assert_bitwise_equal(accumulated[distill_lib.TEACHER], teacher)
  moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), state["params"],
                       jax.device_get(setup[3]))
  assert max(jax.tree.leaves(moved)) > 1e-3  # The student did train.


def test_no_gradient_of_the_teacher_is_ever_computed():
  setup = _classification_setup("test_guarded_teacher")
  distill, teacher, batch = setup[2], setup[4], setup[5]
  # The guard works: differentiating the teacher's params raises ...
  with pytest.raises(AssertionError, match="differentiated"):
    jax.grad(lambda p: distill.model.apply({"params": p}, batch["image"])[
        0].sum())(teacher)
  # ... but a whole train step, with and without micro-batches, never does.
  for k in (1, 2):
    state, metrics = _train(setup, k=k)
    _assert_bitwise_equal(state[distill_lib.TEACHER], jax.device_get(teacher))
    assert np.isfinite(metrics["distill_loss"])


def test_dist_token_student_with_deit_hard_distillation():
  """The DeiT objective: 0.5 * xent(class head, labels) + 0.5 * xent(dist
  head, teacher argmax), recomputed here from the models' outputs."""
  deit = MODELS.get("vit")(C, pool_type="tok", dist_token=True, width=16,
                           depth=1, num_heads=2, mlp_dim=32, patch_size=(2, 2),
                           head_zeroinit=False)
  setup = _classification_setup(loss="deit_hard", weight=0.5,
                                task_weight=0.5, student=deit)
  student, _, distill, params, teacher, batch, _ = setup
  _, metrics = _train(setup, steps=1)
  logits, aux = student.apply({"params": params}, batch["image"], train=True)
  t_logits, _ = distill.model.apply({"params": teacher}, batch["image"])
  task = np.mean(-np.sum(batch["labels"] * _np_log_softmax(
      np.asarray(logits)), -1))
  dist = np.mean(-np.sum(np.eye(C)[np.asarray(t_logits).argmax(-1)] *
                         _np_log_softmax(np.asarray(aux["dist_logits"])), -1))
  np.testing.assert_allclose(metrics["task_loss"], task, rtol=1e-5)
  np.testing.assert_allclose(metrics["distill_loss"], dist, rtol=1e-5)
  np.testing.assert_allclose(metrics["loss"], 0.5 * task + 0.5 * dist,
                             rtol=1e-5)


# config.distill checks.


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.update(los="kl"),
     r"\['los'\] in config\.distill\. Did you mean \['loss'"),
    (lambda d: d["teacher"].update(modle={}),
     r"\['modle'\] in config\.distill\.teacher\. Did you mean \['model'"),
    (lambda d: d["teacher"].pop("init"),
     r"config\.distill\.teacher needs \['init'\]"),
    (lambda d: d["teacher"]["model"].update(widht=8),
     r"widht.*config\.distill\.teacher\.model.*Did you mean \['width'\]"),
    (lambda d: d["loss_kw"].update(temprature=2.0),
     r"temprature.*config\.distill\.loss_kw.*\['temperature'\]"),
    (lambda d: d.update(loss="kll"), r"Unknown distillation loss 'kll'"),
    (lambda d: d.update(weight=-1.0), r"config\.distill\.weight=-1\.0"),
    (lambda d: d["teacher"].update(inputs=("text",)),
     r"config\.distill\.teacher\.inputs \['text'\]"),
])
def test_bad_distill_configs_name_the_key(mutate, match):
  cfg = dict(teacher=dict(model_name="vit", init="t.npz",
                          model=dict(num_classes=10, width=16)),
             loss="kl", loss_kw=dict(temperature=2.0))
  mutate(cfg)
  with pytest.raises((KeyError, ValueError), match=match):
    distill_lib.from_config(cfg, ("image",))


# The agreement evaluator on a hand-worked case.


def test_agreement_evaluator_hand_worked(tmp_path):
  """Student logits = one-hot(label); teacher's = one-hot(label) for labels
  0-3, else one-hot(0): they agree exactly on the labels 0-3 (and the
  teacher is right there only)."""
  del tmp_path
  mesh = sharding.make_mesh((("data", -1),))

  def predict(state, batch):
    label = batch["label"]
    student = jax.nn.one_hot(label, 10) * state["params"]
    teacher = jax.nn.one_hot(jnp.where(label < 4, label, 0), 10) * state[
        "teacher"]
    return (student, {}), (teacher, {})

  assert EVALUATORS.get("distill_agreement") is distill_agreement.Evaluator
  ev = distill_agreement.Evaluator(
      predict, data=dict(name="bvl_digits", split="validation"),
      pp_fn="keep('label')", batch_size=64, mesh=mesh, label_key="label")
  state = {"params": jnp.ones([]), "teacher": jnp.ones([])}
  ev.check_inputs(state)
  results = dict(ev.run(state))
  labels = np.concatenate([b["label"] for b in
                           ev.data.dataset.as_numpy_iterator()])
  mask = np.concatenate([b["_mask"] for b in
                         ev.data.dataset.as_numpy_iterator()]).astype(bool)
  labels = labels[mask]
  assert len(labels) == 180  # Every validation image exactly once.
  want = np.mean((labels < 4) | (labels == 0))
  np.testing.assert_allclose(results["agreement"], want, rtol=1e-6)
  np.testing.assert_allclose(results["student_prec@1"], 1.0)
  np.testing.assert_allclose(results["teacher_prec@1"], want, rtol=1e-6)


# The trainer end to end: load, shard, evaluate, checkpoint, resume.


def _save_npz(path, params):
  params = jax.device_get(params)
  np.savez(path, **dict(zip(tree_names(params), jax.tree.leaves(params))))


def test_trainer_distills_resumes_exactly_and_checks_the_teacher(tmp_path):
  """The digits pipeline with a tiny DeiT student and a dense teacher: FSDP
  shards the teacher, the evaluator reads it from the train state, the
  checkpoint leaves it out, resuming is exact and refuses another teacher."""
  fake = MODELS.get("test_fake_deit")(num_classes=10)
  teacher = fake.init(jax.random.key(3), jnp.zeros((1, 16, 16, 1)))["params"]
  npz = str(tmp_path / "teacher.npz")
  _save_npz(npz, teacher)

  def config(evals=True):
    # A DeiT student (ViT with a distillation token), a dense teacher.
    cfg = tiny_config(total_steps=4, ckpt_steps=2, model_name="vit",
                      model=dict(num_classes=10, pool_type="tok",
                                 dist_token=True, width=16, depth=1,
                                 num_heads=2, mlp_dim=32, patch_size=(4, 4)),
                      sharding_rules=[(".*", "fsdp")], log_training_steps=2)
    cfg.distill = dict(teacher=dict(model_name="test_fake_deit",
                                    model=dict(num_classes=10), init=npz),
                       loss="deit_hard", task_weight=0.5)
    cfg.evals = {"agreement": dict(cfg.evals.validation.to_dict(),
                                   type="distill_agreement", log_steps=4,
                                   label_key="labels")} if evals else {}
    return cfg

  state, results = train.train_and_evaluate(config(), str(tmp_path / "a"))
  kernel = state["teacher"]["Dense_0"]["kernel"]  # [256, 8]
  assert kernel.sharding.spec != jax.sharding.PartitionSpec()  # FSDP.
  _assert_bitwise_equal(jax.device_get(state["teacher"]),
                        checkpoint.load_params(npz))
  for key in ("train/task_loss", "train/distill_loss",
              "train/teacher_agreement", "agreement/agreement",
              "agreement/student_prec@1", "agreement/teacher_prec@1"):
    assert np.isfinite(results[key]), key
  np.testing.assert_allclose(
      results["train/loss"], 0.5 * results["train/task_loss"]
      + results["train/distill_loss"], rtol=1e-5)
  logged = read_jsonl(str(tmp_path / "a" / "metrics.jsonl"))
  assert [r["step"] for r in logged if "train/distill_loss" in r] == [2, 4]
  # The teacher is not checkpointed (its fingerprint is, in the meta) ...
  with pytest.raises(KeyError, match="no 'teacher'"):
    checkpoint.load_params(str(tmp_path / "a"), item="teacher")
  # ... and a resumed run is exact.
  shutil.rmtree(tmp_path / "a" / "checkpoints" / "4")
  resumed, _ = train.train_and_evaluate(config(evals=False),
                                        str(tmp_path / "a"))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-6),
               jax.device_get(resumed["params"]),
               jax.device_get(state["params"]))
  # Another teacher under the same path: resuming is refused.
  shutil.rmtree(tmp_path / "a" / "checkpoints" / "4")
  _save_npz(npz, jax.tree.map(lambda x: x * 1.0001, teacher))
  with pytest.raises(ValueError, match=r"config\.distill\.teacher\.init.*"
                     r"not bitwise"):
    train.train_and_evaluate(config(evals=False), str(tmp_path / "a"))
