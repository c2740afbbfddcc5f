"""Tests for big_vision_like.optim."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from big_vision_like import config as config_lib
from big_vision_like import optim
from big_vision_like import tree_util


def _params():
  return {
      "enc": {"kernel": jnp.full((3, 2), 0.5), "bias": jnp.full((2,), -1.0)},
      "head": {"kernel": jnp.full((2, 4), 2.0), "bias": jnp.zeros((4,))},
  }


def _grads(seed):
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), _params())


def _run(config, grads_list, params=None, jit=True):
  """Applies the optimizer for len(grads_list) steps; returns all updates."""
  params = _params() if params is None else params
  tx, _ = optim.make_optimizer(config, params, total_steps=100, batch_size=8)
  state = tx.init(params)
  update = jax.jit(tx.update) if jit else tx.update
  out = []
  for grads in grads_list:
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
    out.append(updates)
  return out, state


def _sched(kw, steps, lr=1.0, **durations):
  durations = dict(dict(total_steps=100, batch_size=8), **durations)
  fn = optim.make_schedule(kw, lr=lr, **durations)
  return np.asarray([fn(s) for s in steps])


# ----------------------------------------------------------------------------
# Names.


def test_param_names_and_tree_map_with_names():
  assert tree_util.tree_names(_params()) == [
      "enc/bias", "enc/kernel", "head/bias", "head/kernel"]
  names = tree_util.tree_map_with_names(lambda n, x: n, _params())
  assert names["head"]["kernel"] == "head/kernel"


# ----------------------------------------------------------------------------
# Schedules.


@pytest.mark.parametrize("kw,steps,expected", [
    (dict(decay_type="cosine", warmup_steps=10), [0, 5, 10, 40, 55, 100],
     [0.0, 0.5, 1.0, 0.75, 0.5, 0.0]),
    (dict(decay_type="cosine", min_lr=0.1), [0, 50, 100], [1.0, 0.55, 0.1]),
    (dict(decay_type="linear", warmup_steps=10, linear_end=0.1),
     [5, 10, 55, 100], [0.5, 1.0, 0.55, 0.1]),
    (dict(decay_type="rsqrt", warmup_steps=10, timescale=10),
     [5, 10, 40, 100], [0.5, 1.0, 0.5, 1 / 10**0.5]),
    (dict(decay_type="rsqrt", timescale=10, warmup_steps=10,
          cooldown_steps=20), [40, 80, 90, 100], [0.5, 1 / 8**0.5 * 1.0,
                                                  1 / 9**0.5 * 0.5, 0.0]),
    (dict(decay_type="constant", warmup_steps=10), [0, 5, 50, 100],
     [0.0, 0.5, 1.0, 1.0]),
    (dict(decay_type="polynomial", power=2, end=0.0), [0, 50, 100],
     [1.0, 0.25, 0.0]),
    (dict(decay_type="stair", steps=[30, 60], mults=[0.1, 0.01]),
     [29, 30, 59, 60], [1.0, 0.1, 0.1, 0.01]),
    (dict(decay_type="cosine", mult=0.5), [0, 50], [0.5, 0.25]),
])
def test_schedule_values(kw, steps, expected):
  np.testing.assert_allclose(_sched(kw, steps), expected, rtol=1e-5,
                             atol=1e-7)


def test_schedule_scales_with_lr():
  np.testing.assert_allclose(
      _sched(dict(decay_type="cosine"), [0, 50], lr=0.2), [0.2, 0.1],
      rtol=1e-6)


@pytest.mark.parametrize("warmup", [
    dict(warmup_steps=10), dict(warmup_epochs=1), dict(warmup_examples=80),
    dict(warmup_percent=0.1)])
def test_warmup_units_agree(warmup):
  steps = [0, 3, 10, 50, 99]
  expected = _sched(dict(decay_type="cosine", warmup_steps=10), steps)
  got = _sched(dict(decay_type="cosine", **warmup), steps, data_size=80)
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_sched_fns_give_applied_lr():
  config = dict(lr=0.5, schedule=dict(decay_type="linear", warmup_steps=10))
  _, fns = optim.make_optimizer(config, _params(), total_steps=110,
                                batch_size=1)
  (pattern, fn), = fns
  assert pattern == ".*"
  np.testing.assert_allclose([fn(5), fn(10), fn(60)], [0.25, 0.5, 0.25])


def test_default_schedule_is_cosine_without_warmup():
  _, fns = optim.make_optimizer({}, _params(), total_steps=100, batch_size=1)
  np.testing.assert_allclose([fns[0][1](0), fns[0][1](50)], [1e-3, 5e-4],
                             rtol=1e-6)


# ----------------------------------------------------------------------------
# Update rules.


def _adam_direction(grads, b1=0.9, b2=0.999, eps=1e-8):
  m = v = 0.0
  out = []
  for t, g in enumerate(grads, 1):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g**2
    out.append(m / (1 - b1**t) / (np.sqrt(v / (1 - b2**t)) + eps))
  return out


@pytest.mark.parametrize("jit", [True, False])
def test_adamw_matches_manual_with_decoupled_wd_on_kernels(jit):
  lr, wd = 0.1, 0.01
  config = dict(optax_name="adamw", optax=dict(b2=0.99), lr=lr, wd=wd,
                schedule=dict(decay_type="constant"))
  grads = [_grads(0), _grads(1)]
  updates, _ = _run(config, grads, jit=jit)
  for name in ("enc/kernel", "enc/bias", "head/kernel"):
    mod, leaf = name.split("/")
    p = np.asarray(_params()[mod][leaf])
    gs = [np.asarray(g[mod][leaf]) for g in grads]
    wd_eff = wd / lr if leaf == "kernel" else 0.0
    for u, d in zip(updates, _adam_direction(gs, b2=0.99)):
      expected = -lr * (d + wd_eff * p)
      np.testing.assert_allclose(u[mod][leaf], expected, rtol=1e-5, atol=1e-7)
      p = p + expected


def test_sgd_nesterov_matches_manual():
  lr = 0.1
  config = dict(optax_name="sgd", optax=dict(momentum=0.9, nesterov=True),
                lr=lr, schedule=dict(decay_type="constant"))
  grads = [_grads(0), _grads(1)]
  updates, _ = _run(config, grads)
  g1, g2 = (np.asarray(g["head"]["kernel"]) for g in grads)
  m1 = g1
  m2 = g2 + 0.9 * m1
  np.testing.assert_allclose(updates[0]["head"]["kernel"],
                             -lr * (g1 + 0.9 * m1), rtol=1e-5)
  np.testing.assert_allclose(updates[1]["head"]["kernel"],
                             -lr * (g2 + 0.9 * m2), rtol=1e-5)


def test_plain_sgd_and_warmup_applied_per_step():
  config = dict(optax_name="sgd", lr=1.0,
                schedule=dict(decay_type="constant", warmup_steps=2))
  g = _grads(0)
  updates, _ = _run(config, [g, g, g])
  for u, scale in zip(updates, [0.0, 0.5, 1.0]):
    np.testing.assert_allclose(u["enc"]["bias"], -scale * g["enc"]["bias"],
                               rtol=1e-6)


def _state_shapes(state):
  return [np.shape(x) for x in jax.tree.leaves(state)]


def test_adafactor_has_factored_state():
  params = {"dense": {"kernel": jnp.ones((64, 64)), "bias": jnp.ones((64,))}}
  grads = jax.tree.map(lambda p: 0.1 * p, params)
  config = dict(optax_name="adafactor", lr=0.01)
  updates, state = _run(config, [grads, grads], params=params)
  assert (64, 64) not in _state_shapes(state)
  assert _state_shapes(state).count((64,)) >= 2  # v_row, v_col (and bias).
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(updates))
  assert float(jnp.abs(updates[1]["dense"]["kernel"]).sum()) > 0


def test_adafactor_bf16_momentum():
  params = {"dense": {"kernel": jnp.ones((64, 64))}}
  config = dict(optax_name="adafactor", optax=dict(momentum=0.9))
  tx, _ = optim.make_optimizer(config, params, total_steps=10, batch_size=1)
  dtypes = [(x.shape, x.dtype) for x in jax.tree.leaves(tx.init(params))]
  assert ((64, 64), jnp.bfloat16) in dtypes


@pytest.mark.parametrize("name", ["lion", "rmsprop", "scale_by_lion",
                                  "optax.scale_by_adam"])
def test_other_directions_run(name):
  updates, _ = _run(dict(optax_name=name), [_grads(0)])
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(updates))


def test_frozen_params_get_no_state_and_zero_update():
  params = _params()
  params["enc"]["kernel"] = jnp.ones((5, 7))
  grads = jax.tree.map(jnp.ones_like, params)
  config = dict(optax_name="adamw", wd=0.1,
                schedule=[("enc/.*", None), (".*", dict(decay_type="cosine"))])
  updates, state = _run(config, [grads, grads], params=params)
  for u in updates:
    assert not np.any(u["enc"]["kernel"]) and not np.any(u["enc"]["bias"])
    assert np.all(np.asarray(u["head"]["kernel"]) != 0)
  assert (5, 7) not in _state_shapes(state)
  live = sum(p.size for p in jax.tree.leaves(params["head"]))
  state_size = sum(np.size(x) for x in jax.tree.leaves(state))
  assert state_size == 2 * live + 2  # mu, nu of head + adam & lr counts.


def test_per_group_schedules():
  config = dict(lr=1.0, optax_name="sgd", schedule=[
      ("enc/.*", dict(decay_type="constant", mult=0.1)),
      (".*", dict(decay_type="constant"))])
  g = _grads(0)
  (u,), _ = _run(config, [g])
  np.testing.assert_allclose(u["enc"]["bias"], -0.1 * g["enc"]["bias"],
                             rtol=1e-6)
  np.testing.assert_allclose(u["head"]["bias"], -g["head"]["bias"], rtol=1e-6)


def test_lr_mults_scale_updates():
  base = dict(optax_name="sgd", lr=0.1, schedule=dict(decay_type="constant"))
  g = _grads(0)
  (u0,), _ = _run(base, [g])
  (u1,), _ = _run(dict(base, lr_mults=[("head/.*", 0.25)]), [g])
  np.testing.assert_allclose(u1["head"]["kernel"],
                             0.25 * u0["head"]["kernel"], rtol=1e-6)
  np.testing.assert_allclose(u1["enc"]["kernel"], u0["enc"]["kernel"])


def test_wd_mults_override_default():
  config = dict(optax_name="sgd", lr=0.1, wd=0.5,
                schedule=dict(decay_type="constant"),
                wd_mults=[(".*/bias", 2.0)])
  zeros = jax.tree.map(jnp.zeros_like, _params())
  (u,), _ = _run(config, [zeros])
  np.testing.assert_allclose(u["enc"]["bias"], -0.5 * 2.0 * -1.0, rtol=1e-6)
  assert not np.any(u["enc"]["kernel"])


def test_grad_clipping_ignores_frozen_grads():
  config = dict(optax_name="sgd", lr=1.0, grad_clip_norm=1.0,
                schedule=[("enc/.*", None),
                          (".*", dict(decay_type="constant"))])
  grads = jax.tree.map(jnp.zeros_like, _params())
  grads["head"]["bias"] = jnp.array([3.0, 4.0, 0.0, 0.0])  # Norm 5.
  grads["enc"]["kernel"] = jnp.full((3, 2), 1e6)  # Frozen: not counted.
  (u,), _ = _run(config, [grads])
  np.testing.assert_allclose(u["head"]["bias"], [-0.6, -0.8, 0, 0], rtol=1e-6)


def test_works_with_check_and_fill_config():
  config = ml_collections.ConfigDict(dict(
      optax_name="adamw", optax=dict(b2=0.95), lr=1e-3, wd=1e-4,
      schedule=[("enc/.*", None),
                (".*", dict(decay_type="cosine", warmup_percent=0.1))],
      lr_mults=[("head/bias", 2.0)]))
  filled = config_lib.check_and_fill(config, optim.DEFAULTS)
  updates, _ = _run(filled, [_grads(0)])
  assert not np.any(updates[0]["enc"]["kernel"])


# ----------------------------------------------------------------------------
# Errors.


def _make(config):
  return optim.make_optimizer(config, _params(), total_steps=10, batch_size=1)


def test_bad_optax_name():
  with pytest.raises(ValueError, match=r"config\.optax_name='adamx'"):
    _make(dict(optax_name="adamx"))


def test_full_optimizer_name_rejected():
  with pytest.raises(ValueError, match=r"config\.optax_name='lamb'.*full"):
    _make(dict(optax_name="lamb"))


def test_bad_optax_kwarg():
  with pytest.raises(ValueError, match=r"config\.optax\.b3"):
    _make(dict(optax_name="adamw", optax=dict(b3=0.9)))


def test_optax_weight_decay_rejected():
  with pytest.raises(ValueError, match=r"config\.wd"):
    _make(dict(optax=dict(weight_decay=0.1)))


def test_bad_schedule_key():
  with pytest.raises(ValueError, match=r"config\.schedule\.warmup_stepz"):
    _make(dict(schedule=dict(decay_type="cosine", warmup_stepz=3)))
  with pytest.raises(ValueError, match=r"schedule\[1\]\.timescale"):
    _make(dict(schedule=[("enc/.*", None),
                         (".*", dict(decay_type="cosine", timescale=3))]))


def test_bad_decay_type():
  with pytest.raises(ValueError, match=r"decay_type='cosin'"):
    _make(dict(schedule=dict(decay_type="cosin")))


def test_unmatched_param_named():
  with pytest.raises(ValueError, match=r"'head/bias'"):
    _make(dict(schedule=[("enc/.*", dict()), ("head/kernel", None)]))


# ----------------------------------------------------------------------------
# Adaptive gradient clipping.


def _agc_params():
  rng = np.random.default_rng(0)

  def normal(*shape):
    return jnp.asarray(rng.normal(size=shape), jnp.float32)

  return {
      "conv": {"kernel": normal(3, 3, 2, 4), "bias": jnp.zeros((4,))},
      "dense": {"kernel": normal(5, 3), "bias": normal(3)},
      "block": {"skipinit_gain": jnp.zeros(()), "gain": jnp.ones((1, 4))},
      "head": {"kernel": normal(3, 2), "bias": jnp.zeros((2,))},
  }


def _agc_grads(params, scale=1.0):
  rng = np.random.default_rng(1)
  # Units get gradients of very different sizes, so some are clipped.
  return jax.tree.map(
      lambda p: jnp.asarray(scale * rng.normal(size=p.shape) * np.exp(
          rng.normal(size=p.shape[-1:] or ()) * 2), jnp.float32), params)


def _numpy_agc(g, p, clip, eps):
  """Unit-wise clipping, written out with NumPy."""
  g, p = np.asarray(g, np.float64), np.asarray(p, np.float64)
  if sum(d > 1 for d in g.shape) <= 1:  # Scalars and vectors: one unit.
    g_norm, p_norm = np.linalg.norm(g), np.linalg.norm(p)
    limit = clip * max(p_norm, eps)
    return g if g_norm < limit else g * limit / g_norm
  g2, p2 = g.reshape(-1, g.shape[-1]), p.reshape(-1, p.shape[-1])
  out = g2.copy()
  for u in range(g2.shape[1]):  # Output units: columns of the last axis.
    limit = clip * max(np.linalg.norm(p2[:, u]), eps)
    norm = np.linalg.norm(g2[:, u])
    if norm >= limit:
      out[:, u] = g2[:, u] * limit / norm
  return out.reshape(g.shape)


@pytest.mark.parametrize("exclude", [r"^head/", None])
def test_agc_matches_numpy(exclude):
  clip, eps = 0.05, 1e-3
  params = _agc_params()
  grads = _agc_grads(params)
  tx = optim.adaptive_grad_clip(clip, eps, exclude=exclude)
  out, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  clipped = 0
  for name, g, p, o in zip(tree_util.tree_names(params),
                           jax.tree.leaves(grads), jax.tree.leaves(params),
                           jax.tree.leaves(out)):
    want = (np.asarray(g) if exclude and name.startswith("head/")
            else _numpy_agc(g, p, clip, eps))
    np.testing.assert_allclose(o, want, rtol=1e-5, atol=1e-7, err_msg=name)
    clipped += not np.allclose(want, g)
  assert clipped >= 5  # Including the zero-norm params (limit clip * eps).
  small = jax.tree.map(lambda g: 1e-6 * g, grads)
  out, _ = tx.update(small, tx.init(params), params)
  jax.tree.map(np.testing.assert_array_equal, out, small)  # Nothing clipped.


def test_agc_unitwise_norm_axes():
  assert optim.unitwise_norm(jnp.ones((3, 3, 2, 4))).shape == (1, 1, 1, 4)
  np.testing.assert_allclose(optim.unitwise_norm(jnp.ones((5, 3))),
                             np.full((1, 3), np.sqrt(5)))
  for shape in [(), (7,), (1, 7), (1, 1, 1, 7)]:  # One unit each.
    np.testing.assert_allclose(optim.unitwise_norm(jnp.ones(shape)),
                               np.sqrt(np.prod(shape)))


def test_agc_from_config_clips_before_the_direction():
  lr, clip = 0.5, 0.02
  base = {"optax_name": "sgd", "lr": lr,
          "schedule": {"decay_type": "constant"}}
  params = _agc_params()
  grads = _agc_grads(params)
  (u,), _ = _run(dict(base, agc={"clip": clip}), [grads], params=params)
  want = jax.tree.map(lambda g, p: -lr * _numpy_agc(g, p, clip, 1e-3),
                      grads, params)
  want["head"] = jax.tree.map(lambda g: -lr * np.asarray(g), grads["head"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-7), u, want)
  # Off: absent, None, or clip None / 0.
  (ref,), _ = _run(base, [grads], params=params)
  for agc in (None, {"clip": None}, {"clip": 0.0, "eps": 0.1}):
    (got,), _ = _run(dict(base, agc=agc), [grads], params=params)
    jax.tree.map(np.testing.assert_array_equal, got, ref)


def test_agc_config_keys_checked():
  with pytest.raises(ValueError, match=r"config\.agc\.clipping"):
    _make({"agc": {"clipping": 0.01}})
  with pytest.raises(ValueError, match=r"config\.agc\.exclude"):
    _make({"agc": {"clip": 0.01, "exclude": "head/("}})
  with pytest.raises(KeyError, match=r"config\.agc\.epsilon"):
    config_lib.check_and_fill({"agc": {"clip": 0.1, "epsilon": 1.0}},
                              optim.DEFAULTS)
  filled = config_lib.check_and_fill({"agc": {"clip": 0.01}},
                                     optim.DEFAULTS)
  assert filled.agc.to_dict() == {"clip": 0.01, "eps": 1e-3,
                                  "exclude": "^head/"}
  assert config_lib.check_and_fill({}, optim.DEFAULTS).agc.clip is None
  assert config_lib.check_and_fill({"agc": None}, optim.DEFAULTS).agc is None


def test_agc_needs_params():
  tx = optim.adaptive_grad_clip(0.01)
  with pytest.raises(ValueError, match="needs the params"):
    tx.update(_agc_grads(_agc_params()), tx.init(None))


def test_nfnet_trains_with_agc_through_train_step():
  from big_vision_like import step as step_lib  # pylint: disable=C0415
  from big_vision_like.models import nfnet  # pylint: disable=C0415
  from big_vision_like.registry import LOSSES  # pylint: disable=C0415
  lr, clip, momentum = 0.2, 0.01, 0.9
  config = config_lib.check_and_fill({
      "optax_name": "sgd", "optax": {"momentum": momentum, "nesterov": True},
      "lr": lr, "schedule": {"decay_type": "constant"},
      "agc": {"clip": clip}}, optim.DEFAULTS)
  # F0 at 1/8 width with one block per stage (the train step of all 12
  # blocks takes ~3x longer to compile on CPU).
  model = nfnet.Model(4, variant="F0", width_mult=0.125, depths=(1, 1, 1, 1),
                      dropout=0.0)
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.normal(size=(2, 32, 32, 3)), jnp.float32),
           "labels": jnp.asarray([1, 3])}
  # rbg: XLA:CPU compiles the threefry init of a deep model very slowly.
  params = jax.jit(model.init)(jax.random.key(0, impl="rbg"),
                               batch["image"])["params"]
  tx, sched_fns = optim.make_optimizer(config, params, total_steps=10,
                                       batch_size=2)
  step_fn = jax.jit(step_lib.make_train_step(
      model, LOSSES.get("softmax_xent"), tx, sched_fns[0][1],
      model_inputs=("image",), seed=0))
  state = {"params": params, "opt": tx.init(params),
           "step": jnp.zeros([], jnp.int32)}
  losses, states = [], [state]
  for _ in range(6):
    state, metrics = step_fn(state, batch)
    losses.append(float(metrics["loss"]))
    states.append(state)
  assert np.all(np.isfinite(losses)), losses
  assert losses[-1] < losses[0] - 0.1, losses
  # The head starts at zero, so the first step moves only the head; the
  # second moves each other unit by -lr * (1 + momentum) * clipped grad
  # (nesterov, zero trace), i.e. by at most lr * (1 + momentum) * clip *
  # max(|unit|, eps); AGC is active, so some units move exactly that much.
  ratios = []
  for name, p0, p1, p2 in zip(tree_util.tree_names(params),
                              *(jax.tree.leaves(s["params"])
                                for s in states[:3])):
    if name.startswith("head/"):
      continue
    np.testing.assert_array_equal(p1, p0, err_msg=name)
    limit = lr * (1 + momentum) * clip * np.maximum(
        optim.unitwise_norm(p1), 1e-3)
    ratios.append(float(np.max(optim.unitwise_norm(p2 - p1) / limit)))
  assert max(ratios) <= 1 + 1e-4
  assert max(ratios) > 0.99


def test_vit_attention_only_schedule_freezes_all_but_attention_and_head():
  from big_vision_like.models import vit  # pylint: disable=C0415
  model = vit.Model(3, variant="mu/4", depth=1, parallel=2)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 8, 8, 3)))["params"]
  params = jax.tree.map(lambda s: jnp.full(s.shape, 0.5, s.dtype), shapes)
  config = {"optax_name": "adamw", "lr": 0.1, "wd": 0.1,
            "schedule": vit.attention_only_schedule("cosine")}
  _, sched_fns = optim.make_optimizer(config, params, total_steps=100,
                                      batch_size=8)
  assert len(sched_fns) == 1  # One trained group.
  grads = jax.tree.map(jnp.ones_like, params)
  (updates,), state = _run(config, [grads], params=params)
  names = tree_util.tree_names(params)
  trained = {n for n in names if "/MultiHeadDotProductAttention_" in n
             or n.startswith("head/")}
  assert len(trained) == 2 * 8 + 2  # 2 attentions x {q,k,v,out} x {w,b}.
  new = optax.apply_updates(params, updates)
  changed = {n for n, a, b in zip(names, jax.tree.leaves(params),
                                  jax.tree.leaves(new))
             if np.any(np.asarray(a) != np.asarray(b))}
  assert changed == trained
  for name, u in zip(names, jax.tree.leaves(updates)):
    assert np.all(np.asarray(u) != 0) == (name in trained), name
  frozen = optim.frozen_mask(config, params)
  assert {n for n, f in zip(names, jax.tree.leaves(frozen)) if not f} == (
      trained)
  live = sum(p.size for n, p in zip(names, jax.tree.leaves(params))
             if n in trained)
  state_size = sum(np.size(x) for x in jax.tree.leaves(state))
  assert state_size == 2 * live + 2  # Adam's mu, nu of trained + 2 counts.


def _lit_like(schedule, dont_load=("head/.*",), model_init=None):
  params = {"img": {"body": {"kernel": jnp.ones((2, 2))},
                    "head": {"kernel": jnp.ones((2, 3))}},
            "txt": {"kernel": jnp.ones((2, 3))}}
  config = ml_collections.ConfigDict(dict(
      schedule=schedule, model_init=model_init or {"img": "x.npz"},
      model_load=dict(dont_load=list(dont_load))))
  return config, optim.frozen_mask(config, params)


def test_locking_a_param_that_is_not_loaded_is_an_error():
  train_rest = (".*", dict(decay_type="cosine"))
  config, frozen = _lit_like([("img/.*", None), train_rest])
  with pytest.raises(ValueError, match=r"\['img/head/kernel'\].*dont_load"):
    optim.check_locked_are_loaded(config, frozen)
  # Fine: the head trains, or is loaded, or nothing is loaded at all.
  for config, frozen in (
      _lit_like([("img/head/.*", dict(decay_type="cosine")),
                 ("img/.*", None), train_rest]),
      _lit_like([("img/.*", None), train_rest], dont_load=()),
      _lit_like([("txt/.*", None), train_rest], model_init={"txt": "y"},
                dont_load=("nothing",))):
    optim.check_locked_are_loaded(config, frozen)
