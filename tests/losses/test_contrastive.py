"""Contrastive losses: every implementation equals the NumPy formula (8 devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_like import sharding
from big_vision_like.losses import contrastive
from big_vision_like.registry import LOSSES

N, D = 16, 8


def _embeddings(seed=0, n=N):
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(2, n, D))
  z /= np.linalg.norm(z, axis=-1, keepdims=True)
  # Make the pairs related, so the loss is not at chance.
  z[1] = 0.6 * z[1] + 0.8 * z[0]
  z[1] /= np.linalg.norm(z[1], axis=-1, keepdims=True)
  return z[0].astype(np.float32), z[1].astype(np.float32)


def _np_log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


def _np_sigmoid_loss(zimg, ztxt, t, b):
  n = len(zimg)
  logits = t * zimg.astype(np.float64) @ ztxt.T + b
  labels = 2 * np.eye(n) - 1
  return -_np_log_sigmoid(labels * logits).sum() / n


def _np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _np_softmax_loss(zimg, ztxt, t, ls=0.0):
  n = len(zimg)
  logits = t * zimg.astype(np.float64) @ ztxt.T
  target = np.eye(n) * (1 - ls) + ls / n
  i2t = -(target * _np_log_softmax(logits)).sum()
  t2i = -(target * _np_log_softmax(logits.T)).sum()
  return (i2t + t2i) / (2 * n)


MESHES = {"data8": [("data", -1)], "data4_fsdp2": [("data", 4), ("fsdp", 2)]}


def _sigmoid_fn(implementation, mesh):
  def f(zimg, ztxt, t, b):
    return contrastive.sigmoid_loss(zimg, ztxt, t, b, mesh=mesh,
                                    implementation=implementation)
  return f


def _put(mesh, zimg, ztxt):
  sh = sharding.batch_sharding(mesh)
  return jax.device_put(zimg, sh), jax.device_put(ztxt, sh)


@pytest.mark.parametrize("t,b", [(10.0, -10.0), (3.0, 0.5)])
def test_sigmoid_global_matches_numpy(t, b):
  zimg, ztxt = _embeddings()
  np.testing.assert_allclose(
      contrastive.sigmoid_loss(zimg, ztxt, t, b), _np_sigmoid_loss(zimg, ztxt, t, b),
      rtol=1e-5)


@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_softmax_global_matches_numpy(ls):
  zimg, ztxt = _embeddings()
  np.testing.assert_allclose(
      contrastive.softmax_loss(zimg, ztxt, 5.0, label_smoothing=ls),
      _np_softmax_loss(zimg, ztxt, 5.0, ls), rtol=1e-5)


@pytest.mark.parametrize("n,t,b", [(16, 10.0, -10.0), (64, 10.0, -10.0),
                                   (64, 3.7, 1.3)])
@pytest.mark.parametrize("mesh_name", sorted(MESHES))
@pytest.mark.parametrize("implementation", ["all_gather", "chunked"])
def test_sharded_sigmoid_values_and_gradients(mesh_name, implementation, n,
                                              t, b):
  mesh = sharding.make_mesh(MESHES[mesh_name])
  zimg, ztxt = _embeddings(1, n)
  args = (*_put(mesh, zimg, ztxt), jnp.array([t]), jnp.array([b]))
  ref = jax.value_and_grad(_sigmoid_fn("global", None), argnums=(0, 1, 2, 3))
  got = jax.jit(jax.value_and_grad(_sigmoid_fn(implementation, mesh),
                                   argnums=(0, 1, 2, 3)))
  (v_ref, g_ref), (v, g) = ref(zimg, ztxt, *args[2:]), got(*args)
  np.testing.assert_allclose(v, _np_sigmoid_loss(zimg, ztxt, t, b),
                             rtol=1e-5)
  np.testing.assert_allclose(v, v_ref, rtol=1e-5)
  for a, r in zip(g, g_ref):
    np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("n", [16, 64])
@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_sharded_softmax_values_and_gradients(ls, n):
  mesh = sharding.make_mesh(MESHES["data4_fsdp2"])
  zimg, ztxt = _embeddings(2, n)

  def loss(implementation, m):
    return lambda zi, zt, t: contrastive.softmax_loss(
        zi, zt, t, label_smoothing=ls, implementation=implementation, mesh=m)

  argnums = (0, 1, 2)
  v_ref, g_ref = jax.value_and_grad(loss("global", None), argnums)(
      zimg, ztxt, jnp.array([5.0]))
  v, g = jax.jit(jax.value_and_grad(loss("all_gather", mesh), argnums))(
      *_put(mesh, zimg, ztxt), jnp.array([5.0]))
  np.testing.assert_allclose(v, _np_softmax_loss(zimg, ztxt, 5.0, ls),
                             rtol=1e-5)
  for a, r in zip((v, *g), (v_ref, *g_ref)):
    np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-6)


def test_chunked_never_gathers_the_batch():
  mesh = sharding.make_mesh()
  zimg, ztxt = _put(mesh, *_embeddings())
  grad = jax.jit(jax.grad(_sigmoid_fn("chunked", mesh), argnums=(0, 1)))
  hlo = grad.lower(zimg, ztxt, 10.0, -10.0).compile().as_text()
  assert "collective-permute" in hlo
  assert "all-gather" not in hlo
  # The largest logits block is local x local: [2, 2] on 8 devices.
  assert "f32[2,16]" not in hlo and "f32[16,16]" not in hlo


def test_objectives_read_the_two_tower_outputs():
  zimg, ztxt = _embeddings()
  aux = {"t": jnp.array([10.0]), "b": jnp.array([-10.0])}
  loss, metrics = LOSSES.get("sigmoid_loss")((zimg, ztxt, aux), {})
  np.testing.assert_allclose(loss, _np_sigmoid_loss(zimg, ztxt, 10.0, -10.0),
                             rtol=1e-5)
  assert float(metrics["t"]) == 10.0 and float(metrics["b"]) == -10.0
  loss, _ = LOSSES.get("softmax_loss")((zimg, ztxt, {"t": 5.0}), {})
  np.testing.assert_allclose(loss, _np_softmax_loss(zimg, ztxt, 5.0), rtol=1e-5)
  with pytest.raises(ValueError, match="needs a bias"):
    LOSSES.get("sigmoid_loss")((zimg, ztxt, {"t": 1.0, "b": None}), {})


def test_bad_arguments():
  zimg, ztxt = _embeddings()
  with pytest.raises(ValueError, match="offers"):
    contrastive.softmax_loss(zimg, ztxt, 1.0, implementation="chunked",
                             mesh=sharding.make_mesh())
  with pytest.raises(ValueError, match="needs the mesh"):
    contrastive.sigmoid_loss(zimg, ztxt, 1.0, 0.0, implementation="chunked")
  with pytest.raises(ValueError, match="not divisible"):
    contrastive.sigmoid_loss(zimg[:12], ztxt[:12], 1.0, 0.0,
                             implementation="chunked",
                             mesh=sharding.make_mesh())
