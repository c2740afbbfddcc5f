"""Gradient accumulation and weight EMA in the train step, on 8 devices.

`grad_accum_steps=4` must give the params of `grad_accum_steps=1` on the same
global batch: for the digits ViT (an example-mean loss: averaged micro-batch
gradients) and for the SigLIP shapes two-tower model with the sigmoid loss
(all_gather and chunked ring) and the softmax loss (gradient caching). A
naive per-micro-batch contrastive loss is checked to differ, so the test can
fail.
"""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from big_vision_like import accumulation
from big_vision_like import config as config_lib
from big_vision_like import optim
from big_vision_like import sharding
from big_vision_like import step as step_lib
from big_vision_like import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 32  # 4 per device: K=4 gives micro-batches of 1 per device.


def _config(name, arg):
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(ROOT, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return config_lib.check_and_fill(module.get_config(arg), train.DEFAULTS)


def _batch(kind, rng):
  if kind == "vit_digits":
    return {"image": rng.normal(size=(BATCH, 16, 16, 1)).astype(np.float32),
            "labels": np.eye(10, dtype=np.float32)[rng.integers(0, 10, BATCH)]}
  return {"image": rng.normal(size=(BATCH, 32, 32, 3)).astype(np.float32),
          "labels": rng.integers(1, 256, size=(BATCH, 16)).astype(np.int32)}


def _shrink(cfg):
  """Tiny towers and plain SGD: params after a step are linear in the
  gradient (Adam's normalisation would magnify rounding in ~0 gradients)."""
  cfg.optax_name, cfg.optax, cfg.wd = "sgd", {}, 0.0
  if cfg.model_name == "vit":
    cfg.model.update(width=16, depth=1, mlp_dim=32, num_heads=2)
  else:
    cfg.model.image.update(width=32, depth=1, mlp_dim=32, num_heads=2)
    cfg.model.text.update(width=32, depth=1, mlp_dim=32, num_heads=2)
  return cfg


def _setup(name, arg, loss_kw=None):
  cfg = _shrink(_config(name, arg))
  mesh = sharding.make_mesh((("data", -1),))
  model = step_lib.build_model(cfg.model_name, cfg.model)
  loss_fn = step_lib.build_loss(cfg.loss, {**cfg.loss_kw, **(loss_kw or {})},
                                mesh)
  batch = _batch(name, np.random.default_rng(0))
  inputs = [batch[k][:1] for k in cfg.model_inputs]
  params = jax.jit(lambda *x: model.init(jax.random.key(0), *x))(
      *inputs)["params"]
  tx, sched_fns = optim.make_optimizer(cfg, params, total_steps=10,
                                       batch_size=BATCH)
  batch_sharding = sharding.batch_sharding(mesh)
  batch = jax.device_put(batch, batch_sharding)
  return cfg, model, loss_fn, tx, sched_fns[0][1], params, batch, batch_sharding


def _run(setup, k, steps=2, **kw):
  cfg, model, loss_fn, tx, sched_fn, params, batch, batch_sharding = setup
  step_fn = jax.jit(step_lib.make_train_step(
      model, loss_fn, tx, sched_fn, model_inputs=cfg.model_inputs, seed=0,
      grad_accum_steps=k, batch_sharding=batch_sharding, **kw))
  state = {"params": params, "opt": tx.init(params),
           "step": jnp.zeros([], jnp.int32)}
  for _ in range(steps):
    state, metrics = step_fn(state, batch)
  return jax.device_get(state), jax.device_get(metrics)


def _max_diff(a, b):
  return max(jax.tree.leaves(jax.tree.map(
      lambda x, y: float(np.max(np.abs(x - y))), a, b)))


# The sigmoid loss in its default (chunked) implementation: the others give
# the same values and gradients (tests/losses/test_contrastive.py).
CASES = [("vit_digits", "short", None),
         ("siglip_shapes", "short", {"implementation": "chunked"}),
         ("siglip_shapes", "short,loss=softmax", None)]


@pytest.mark.parametrize("name,arg,loss_kw", CASES)
def test_accumulated_steps_equal_the_full_batch(name, arg, loss_kw):
  setup = _setup(name, arg, loss_kw)
  full, m1 = _run(setup, 1)
  accumulated, m4 = _run(setup, 4)
  np.testing.assert_allclose(m4["loss"], m1["loss"], rtol=1e-5)
  np.testing.assert_allclose(m4["l2_grads"], m1["l2_grads"], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-6),
               accumulated["params"], full["params"])


def test_naive_micro_batch_contrastive_loss_differs():
  """Averaging the losses of micro-batches scored alone is not the loss of
  the batch: its gradient differs measurably. (With the sigmoid loss at
  SigLIP's init, b = -10, the negatives' gradients are ~1e-4 of the
  positives': the difference is only 0.3% there.)"""
  cfg, model, loss_fn, tx, sched_fn, params, batch, sharded = _setup(
      "siglip_shapes", "short,loss=softmax")
  del tx, sched_fn

  def objective(p, b):
    return loss_fn(model.apply({"params": p}, b["image"], b["labels"],
                               train=True), b)[0]

  exact = jax.jit(jax.grad(objective))(params, batch)
  splitter = accumulation._Splitter(4, sharded)  # pylint: disable=protected-access
  micro = jax.tree.map(splitter.split, batch)
  naive_grad = jax.jit(lambda p: jax.tree.map(
      lambda g: g.mean(0),
      jax.lax.map(lambda mb: jax.grad(objective)(p, mb), micro)))(params)
  del cfg
  rel = optax.global_norm(jax.tree.map(jnp.subtract, naive_grad, exact)) / (
      optax.global_norm(exact))
  assert float(rel) > 0.05, float(rel)


def test_micro_batches_are_slices_of_each_device_share():
  mesh = sharding.make_mesh((("data", -1),))
  batch_sharding = sharding.batch_sharding(mesh)
  x = jax.device_put(np.arange(32 * 3).reshape(32, 3), batch_sharding)
  splitter = accumulation._Splitter(2, batch_sharding)  # pylint: disable=protected-access
  micro = jax.jit(splitter.split)(x)
  # Device d holds rows 4d..4d+3; micro-batch k holds rows 4d+2k, 4d+2k+1.
  want = np.arange(32).reshape(8, 2, 2).swapaxes(0, 1).reshape(2, 16)
  np.testing.assert_array_equal(np.asarray(micro)[..., 0] // 3, want)
  for shard in micro.addressable_shards:
    rows = np.asarray(shard.data)[..., 0] // 3  # [2, 2]
    assert set(rows.ravel() // 4) == {shard.device.id % 8} or len(
        set(rows.ravel() // 4)) == 1
  np.testing.assert_array_equal(jax.jit(splitter.merge)(micro), x)


def test_steps_that_do_not_divide_the_device_share_name_the_key(tmp_path):
  cfg = _config("vit_digits", "short").unlock()
  cfg.grad_accum_steps = 3  # 128 / 8 devices = 16 per device.
  with pytest.raises(ValueError, match=r"grad_accum_steps=3 does not divide "
                     r"the per-device batch of 16"):
    train.train_and_evaluate(cfg, str(tmp_path))
  cfg.grad_accum_steps = 0
  with pytest.raises(ValueError, match="grad_accum_steps=0"):
    train.train_and_evaluate(cfg, str(tmp_path))


def test_ema_is_the_numpy_ema_of_the_params():
  setup = _setup("vit_digits", "short")
  cfg, model, loss_fn, tx, sched_fn, params, batch, batch_sharding = setup
  ema_cfg = step_lib.check_ema({"decay": 0.7, "every": 2, "warmup": True})
  step_fn = jax.jit(step_lib.make_train_step(
      model, loss_fn, tx, sched_fn, model_inputs=cfg.model_inputs, seed=0,
      batch_sharding=batch_sharding, ema=ema_cfg))
  state = {"params": params, "opt": tx.init(params),
           "step": jnp.zeros([], jnp.int32), "ema": params}
  want = jax.tree.map(np.asarray, jax.device_get(params))
  for step in range(1, 6):
    state, _ = step_fn(state, batch)
    if step % 2 == 0:
      d = min(0.7, (1 + step) / (10 + step))
      want = jax.tree.map(lambda e, p, d=d: d * e + (1 - d) * np.asarray(p),
                          want, jax.device_get(state["params"]))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6,
                                                       atol=1e-7),
               jax.device_get(state["ema"]), want)
  moved = _max_diff(jax.device_get(params), jax.device_get(state["params"]))
  assert _max_diff(jax.device_get(state["ema"]),
                   jax.device_get(state["params"])) > 0.1 * moved


@pytest.mark.parametrize("ema,match", [
    ({"decay": 1.0}, r"config.ema.decay=1.0"),
    ({"decay": 0.9, "evry": 1},
     r"Unknown key\(s\) \['evry'\] in config.ema. Did you mean \['every'\]"),
    ({"decay": 0.9, "every": 0}, r"config.ema.every=0"),
])
def test_bad_ema_configs_name_the_key(ema, match):
  with pytest.raises((ValueError, KeyError), match=match):
    step_lib.check_ema(ema)


def test_mixup_cutmix_and_frozen_params_with_micro_batches():
  """Mixing acts on the global batch before the split, and locked params
  stay locked: K=2 still equals K=1, and the frozen embedding never moves."""
  setup = _setup("vit_digits", "short")
  params = setup[5]
  frozen = jax.tree_util.tree_map_with_path(
      lambda path, _: path[0].key == "embedding", params)
  kw = dict(mixup={"p": 0.4}, cutmix={"alpha": 1.0}, frozen=frozen)
  full, _ = _run(setup, 1, **kw)
  accumulated, _ = _run(setup, 2, **kw)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-6),
               accumulated["params"], full["params"])
  np.testing.assert_array_equal(accumulated["params"]["embedding"]["kernel"],
                                jax.device_get(params["embedding"]["kernel"]))
  assert _max_diff(accumulated["params"]["head"],
                   jax.device_get(params["head"])) > 0
