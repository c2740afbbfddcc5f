"""Tests of mixup / CutMix on device (`pp.device_ops`).

Sampling Beta variates takes seconds to compile on CPU, so the tests share a
few jitted functions.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_like.pp import device_ops

B, H, W, C, K = 16, 8, 6, 3, 20

_mixup = jax.jit(functools.partial(device_ops.mixup, p=0.5))
_cutmix = jax.jit(device_ops.cutmix)
_both = jax.jit(functools.partial(device_ops.apply_mix, mixup=dict(p=1.0),
                                  cutmix=dict(alpha=1.0)))


def _batch(seed=0):
  """Images whose examples differ at every pixel; distinct one-hot labels."""
  rng = np.random.RandomState(seed)
  image = rng.uniform(size=(B, H, W, C)).astype(np.float32)
  image += np.arange(B, dtype=np.float32)[:, None, None, None] * 2
  labels = np.eye(K, dtype=np.float32)[np.arange(B) % K]
  return {"image": image, "labels": labels, "id": np.arange(B)}


def _rolled(x):
  return np.roll(np.asarray(x), 1, axis=0)


def _weight_from_labels(labels):
  """The weight of the rolled example, read off the mixed one-hot labels."""
  return np.asarray(labels)[0, (B - 1) % K]  # Example 0 gets example B - 1.


def _check_mixup(batch, out):
  """Images and labels mixed with the same weight; returns the weight."""
  w = _weight_from_labels(out["labels"])
  assert 0 <= w <= 0.5
  for k in ("image", "labels"):
    want = (1 - w) * batch[k] + w * _rolled(batch[k])
    np.testing.assert_allclose(out[k], want, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(np.sum(out["labels"], -1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(out["id"], batch["id"])
  return w


def _check_cutmix(batch, out):
  """One box of the rolled batch, labels mixed by its area; returns it."""
  image, labels = np.asarray(out["image"]), np.asarray(out["labels"])
  pasted = np.all(image == _rolled(batch["image"]), axis=-1)  # [B, H, W]
  kept = np.all(image == batch["image"], axis=-1)
  assert (pasted ^ kept).all()  # Every pixel comes from one of the two.
  assert (pasted == pasted[:1]).all()  # One box for the whole batch.
  ys, xs = np.nonzero(pasted[0])
  if len(ys):  # A rectangle.
    assert len(ys) == (np.ptp(ys) + 1) * (np.ptp(xs) + 1)
  area = pasted[0].mean()
  np.testing.assert_allclose(_weight_from_labels(labels), area, rtol=1e-6)
  want = (1 - area) * batch["labels"] + area * _rolled(batch["labels"])
  np.testing.assert_allclose(labels, want, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(labels.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(out["id"], batch["id"])
  return area


def _is_cutmix(batch, out):
  image = np.asarray(out["image"])
  return bool(np.all((image == batch["image"])
                     | (image == _rolled(batch["image"]))))


def test_mixup_mixes_images_and_labels_with_one_weight():
  batch = _batch()
  weights = [_check_mixup(batch, _mixup(jax.random.PRNGKey(s), batch))
             for s in range(5)]
  assert len(set(weights)) == 5


def test_cutmix_pastes_a_box_and_mixes_labels_by_its_area():
  batch = _batch()
  areas = [_check_cutmix(batch, _cutmix(jax.random.PRNGKey(s), batch))
           for s in range(12)]
  assert len(set(areas)) > 3 and 0 < max(areas) < 1


def test_mixers_reject_integer_arrays():
  batch = {"image": np.zeros((B, H, W, C), np.float32),
           "labels": np.arange(B)}
  for fn in (device_ops.mixup, device_ops.cutmix):
    with pytest.raises(TypeError, match="one-hot"):
      fn(jax.random.PRNGKey(0), batch)


def _jaxpr(fn, *args):
  return str(jax.make_jaxpr(fn)(*args))


def test_apply_mix_with_one_mixer_or_none():
  batch = _batch()
  rng = jax.random.PRNGKey(3)
  assert device_ops.apply_mix(rng, batch) is batch
  # Tracing (no compilation) shows which function runs.
  for name, kwargs in [("mixup", {"p": 0.3}), ("cutmix", {})]:
    got = _jaxpr(functools.partial(device_ops.apply_mix, **{name: kwargs}),
                 rng, batch)
    want = _jaxpr(functools.partial(getattr(device_ops, name), **kwargs),
                  rng, batch)
    assert got == want


def test_apply_mix_checks_option_names():
  with pytest.raises(ValueError, match="alpha"):
    device_ops.apply_mix(jax.random.PRNGKey(0), _batch(),
                         mixup=dict(alpha=0.2))
  with pytest.raises(ValueError, match="prob"):
    device_ops.check_kwargs("cutmix", {"prob": 0.5})
  device_ops.check_kwargs("cutmix", {"alpha": 0.5, "keys": ["image"]})
  device_ops.check_kwargs("mixup", {"p": 0.1})


def test_apply_mix_jit_on_a_batch_sharded_over_8_devices():
  """Each step mixes one way; rolling crosses devices; output stays sharded."""
  assert jax.device_count() == 8
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  sharding = jax.sharding.NamedSharding(mesh,
                                        jax.sharding.PartitionSpec("data"))
  batch = _batch()
  sharded = jax.device_put(batch, sharding)
  kinds = set()
  for s in range(12):
    out = _both(jax.random.PRNGKey(s), sharded)
    for k in batch:
      assert out[k].sharding.is_equivalent_to(sharding, out[k].ndim)
    kinds.add(_is_cutmix(batch, out))
    (_check_cutmix if _is_cutmix(batch, out) else _check_mixup)(batch, out)
    # Example 0 (on device 0) is mixed with example B - 1 (on device 7).
    assert _weight_from_labels(out["labels"]) > 0
  assert kinds == {True, False}


def test_mixup_keeps_low_precision_dtypes():
  x = jnp.ones((B, 2), jnp.bfloat16)
  out = jax.eval_shape(device_ops.mixup, jax.random.PRNGKey(0),
                       {"image": x, "labels": x})
  assert out["image"].dtype == jnp.bfloat16
