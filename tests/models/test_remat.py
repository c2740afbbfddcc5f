"""Rematerialisation (`remat`, `remat_policy`) of every model family.

With remat on, each family keeps its param names and shapes and gives the
same outputs and gradients (dropout and drop-path included), and the
gradient's jaxpr holds a checkpoint (`remat`) primitive.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_like.models import common, nfnet, text_transformer
from big_vision_like.models import two_towers, vit

IMG = jnp.linspace(-1, 1, 2 * 8 * 8 * 3).reshape(2, 8, 8, 3)  # [B, H, W, C]
TEXT = jnp.array([[5, 9, 13, 1], [7, 3, 1, 1]], jnp.int32)  # [B, L]
POLICIES = ("nothing_saveable", "dots_saveable")
KEY = jax.random.key(0, impl="rbg")  # threefry compiles slowly on CPU


def _random_params(model, inputs):
  """Params of `model` filled with N(0, 0.5^2), without compiling its init."""
  shapes = jax.eval_shape(model.init, KEY, *inputs)["params"]
  rng = np.random.default_rng(0)
  return jax.tree.map(
      lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype),
      shapes)


def _outputs_and_grads(model, inputs, params):
  """((outputs, aux), grads, grad jaxpr as text) in train mode, jitted."""
  def loss(params):
    outs = model.apply({"params": params}, *inputs, train=True,
                       rngs={"dropout": jax.random.key(1, impl="rbg")})
    *embeddings, _ = outs  # all but aux
    return sum(jnp.sum(jnp.sin(o) ** 2) for o in embeddings), outs
  traced = jax.jit(jax.grad(loss, has_aux=True)).trace(params)
  # LLVM -O0 compiles these tiny programs in about half the time.
  compiled = traced.lower().compile({"xla_backend_optimization_level": 0})
  grads, outs = compiled(params)
  return outs, grads, str(traced.jaxpr)


def _has_remat(jaxpr):
  return bool(re.search(r"\b(?:remat\d*|checkpoint)\[", jaxpr))


def _assert_close(got, want, tol):
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=tol, atol=tol), got, want)


def _check(make, inputs, remat_kws):
  """make(**kw) for each of `remat_kws` matches make(): params, outs, grads."""
  base = make()
  params = _random_params(base, inputs)
  names_and_shapes = jax.tree.map(jnp.shape, params)
  want_outs, want_grads, jaxpr = _outputs_and_grads(base, inputs, params)
  assert not _has_remat(jaxpr)
  for kw in remat_kws:
    model = make(**kw)
    got = jax.eval_shape(model.init, KEY, *inputs)["params"]
    assert jax.tree.map(jnp.shape, got) == names_and_shapes, kw
    outs, grads, jaxpr = _outputs_and_grads(model, inputs, params)
    assert _has_remat(jaxpr), kw
    _assert_close(outs, want_outs, 1e-5)  # with the whole aux dict
    _assert_close(grads, want_grads, 1e-5)


@pytest.mark.parametrize("scan", [False, True])
def test_vit(scan):
  def make(**kw):
    return vit.Model(3, variant="mu/4", depth=2, scan=scan,
                     dropout=0.0 if scan else 0.1, drop_path=0.1,
                     head_zeroinit=False, **{"remat": False, **kw})
  # Scanned, remat=None is big_vision's default: remat with nothing_saveable.
  first = {"remat": None} if scan else {"remat": True}
  _check(make, (IMG,), [first, {"remat": True, "remat_policy": POLICIES[1]}])


def test_text_transformer():
  def make(**kw):
    return text_transformer.Model(3, variant="mu", depth=1, vocab_size=20,
                                  pad_id=1, **{"remat": False, **kw})
  # One policy here and in NFNet (each compile costs seconds); the ViT and
  # two-tower tests cover both.
  _check(make, (TEXT,), [{"remat": True, "remat_policy": POLICIES[1]}])


def test_nfnet():
  def make(**kw):
    return nfnet.Model(3, depths=(2,), widths=(32,),
                       stem_widths=(8, 8, 8), dropout=0.0, drop_path=0.25,
                       head_zeroinit=False, **kw)
  _check(make, (IMG,), [{"remat": True, "remat_policy": POLICIES[0]}])


def test_two_towers_remat_in_both_towers():
  def make(remat=False):
    return two_towers.Model(
        image=dict(variant="mu/4", depth=1, remat=remat,
                   remat_policy=POLICIES[0]),
        text=dict(variant="mu", depth=1, vocab_size=20, remat=remat,
                  remat_policy=POLICIES[1]),
        out_dim=(4, 4), bias_init=-1.0)
  _check(make, (IMG, TEXT), [{"remat": True}])


def test_policies_and_errors():
  assert set(POLICIES) <= set(common.REMAT_POLICIES)
  for name in common.REMAT_POLICIES:
    assert callable(common.remat_policy(name))
  with pytest.raises(ValueError, match=r"remat_policy.*dots_saveable"):
    common.remat_policy("dots_savable")
  bad_vit = vit.Model(variant="mu/4", depth=1, remat=True,
                      remat_policy="bogus")
  bad_nfnet = nfnet.Model(depths=(1,), widths=(32,), stem_widths=(8, 8, 8),
                          remat=True, remat_policy="bogus")
  for model in (bad_vit, bad_nfnet):
    with pytest.raises(ValueError, match="remat_policy"):
      jax.eval_shape(model.init, KEY, IMG)
