"""Tests for the loading helpers of big_vision_like.models.common."""

import os

import jax
from jax import ad_checkpoint
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_like import checkpoint
from big_vision_like import tree_util
from big_vision_like.models import common
from big_vision_like.models import two_towers
from big_vision_like.models import vit

IMG = jnp.linspace(-1, 1, 2 * 16 * 16 * 3).reshape(2, 16, 16, 3)  # [B, H, W, C]
TEXT = jnp.array([[5, 9, 13, 1, 1, 1], [7, 3, 1, 1, 1, 1]], jnp.int32)  # [B, L]
VIT = dict(variant="mu/4", depth=2, head_zeroinit=False)


def _tt(scan=False):
  return two_towers.Model(
      image=dict(variant="mu/4", depth=2, scan=scan),
      text=dict(variant="mu", depth=2, vocab_size=50, scan=scan),
      out_dim=(8, 8), temperature_init=10.0, bias_init=-10.0)


def _abstract(model, *inputs):
  return jax.eval_shape(model.init, jax.random.PRNGKey(0), *inputs)["params"]


def _assert_trees_equal(a, b):
  assert tree_util.tree_names(a) == tree_util.tree_names(b)
  jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.fixture(scope="module")
def vit_params():
  model = vit.Model(5, **VIT)
  return {s: model.init(jax.random.PRNGKey(s), IMG)["params"] for s in (0, 1)}


@pytest.fixture(scope="module")
def tt_params():
  return _tt().init(jax.random.PRNGKey(0), IMG, TEXT)["params"]


def test_merge_round_trip_and_dtype(vit_params):
  loaded, init = vit_params[0], vit_params[1]
  _assert_trees_equal(common.merge_params(loaded, init), loaded)
  as_bf16 = jax.tree.map(lambda x: np.asarray(x).astype(jnp.bfloat16), loaded)
  merged = common.merge_params(as_bf16, init)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(merged))
  np.testing.assert_allclose(merged["pos_embedding"], loaded["pos_embedding"],
                             rtol=1e-2, atol=1e-2)
  # An abstract init (eval_shape) works when every value is loaded.
  abstract = _abstract(vit.Model(5, **VIT), IMG)
  _assert_trees_equal(common.merge_params(loaded, abstract), loaded)


def test_merge_dont_load(vit_params):
  loaded, init = vit_params[0], vit_params[1]
  merged = common.merge_params(loaded, init, dont_load=("head/.*", ".*/bias"))
  np.testing.assert_array_equal(merged["head"]["kernel"],
                                init["head"]["kernel"])
  np.testing.assert_array_equal(merged["embedding"]["bias"],
                                init["embedding"]["bias"])
  np.testing.assert_array_equal(merged["embedding"]["kernel"],
                                loaded["embedding"]["kernel"])
  # dont_load also drops checkpoint entries the model lacks (a headless model).
  headless = {k: v for k, v in init.items() if k != "head"}
  with pytest.raises(ValueError, match="head/kernel"):
    common.merge_params(loaded, headless)
  merged = common.merge_params(loaded, headless, dont_load="head/.*")
  assert "head" not in merged
  # fullmatch: "bias" alone matches no name.
  merged = common.merge_params(loaded, init, dont_load=("bias",))
  _assert_trees_equal(merged, loaded)


def test_merge_error_lists_all_problems(vit_params):
  loaded = {k: dict(v) if isinstance(v, dict) else v
            for k, v in vit_params[0].items()}
  del loaded["embedding"]["bias"]
  loaded["extra"] = {"w": np.zeros(3)}
  loaded["pos_embedding"] = np.zeros((1, 9, 32))
  with pytest.raises(ValueError) as e:
    common.merge_params(loaded, vit_params[1], where="ckpt.npz")
  msg = str(e.value)
  assert "ckpt.npz" in msg
  assert "in the model, not in the checkpoint (1):\n    embedding/bias" in msg
  assert "in the checkpoint, not in the model (1):\n    extra/w" in msg
  assert "pos_embedding: checkpoint (1, 9, 32) vs model (1, 16, 32)" in msg
  assert "head/kernel" not in msg


def test_load_into_resamples_vit_posemb(vit_params):
  big = vit.Model(5, **VIT)
  init = _abstract(big, jnp.zeros((1, 24, 24, 3)))
  loaded = vit_params[0]
  got = common.load_into(init, loaded)
  want = common.resample_posemb(loaded["pos_embedding"], 6)  # [1, 36, 32]
  np.testing.assert_allclose(got["pos_embedding"], want)
  _assert_trees_equal({**got, "pos_embedding": 0}, {**loaded,
                                                    "pos_embedding": 0})
  for model_name in ("vit", None):
    got = common.load_into(init, loaded, model=model_name)
    np.testing.assert_allclose(got["pos_embedding"], want)
  with pytest.raises(ValueError, match="pos_embedding: checkpoint"):
    common.load_into(init, loaded, model="text_transformer")


def test_load_into_two_towers_posemb(tt_params):
  init = _abstract(_tt(), jnp.zeros((1, 8, 8, 3)), TEXT)
  got = common.load_into(init, tt_params)
  assert got["img"]["pos_embedding"].shape == (1, 4, 32)
  np.testing.assert_array_equal(got["txt"]["pos_embedding"],
                                tt_params["txt"]["pos_embedding"])
  got = common.load_into(init, tt_params, model="two_towers")
  assert got["img"]["pos_embedding"].shape == (1, 4, 32)
  # The text tower's posemb is never resampled.
  longer = _abstract(_tt(), IMG, jnp.zeros((1, 9), jnp.int32))
  with pytest.raises(ValueError, match="txt/pos_embedding: checkpoint"):
    common.load_into(longer, tt_params)


def test_load_into_converts_scan_layouts(tt_params):
  scanned = _tt(scan=True)
  got = common.load_into(_abstract(scanned, IMG, TEXT), tt_params)
  kernel = got["txt"]["Encoder_0"]["encoderblock"]["MlpBlock_0"]["Dense_0"][
      "kernel"]
  assert kernel.shape == (2, 32, 128)
  assert "encoderblock" in got["img"]["Transformer"]
  want = _tt().apply({"params": tt_params}, IMG, TEXT)
  out = scanned.apply({"params": got}, IMG, TEXT)
  np.testing.assert_allclose(out[0], want[0], atol=1e-5)
  np.testing.assert_allclose(out[1], want[1], atol=1e-5)
  back = common.load_into(tt_params, got)
  _assert_trees_equal(back, tt_params)


def test_npz_checkpoint_loads(tt_params, tmp_path):
  # A big_vision-style .npz: flat '/'-joined names with a "params/" prefix.
  names = tree_util.tree_names(tt_params)
  flat = {f"params/{n}": np.asarray(v)
          for n, v in zip(names, jax.tree.leaves(tt_params))}
  path = os.path.join(tmp_path, "siglip.npz")
  np.savez(path, **flat)
  model = _tt()
  init = model.init(jax.random.PRNGKey(7), IMG, TEXT)["params"]
  params = common.merge_params(checkpoint.load_params(path), init)
  _assert_trees_equal(params, tt_params)
  zimg, ztxt, aux = model.apply({"params": params}, IMG, TEXT)
  want = model.apply({"params": tt_params}, IMG, TEXT)
  np.testing.assert_allclose(zimg, want[0], atol=1e-6)
  np.testing.assert_allclose(ztxt, want[1], atol=1e-6)
  # The image tower alone, into a plain ViT (path:subtree, via load_into).
  image_model = vit.Model(8, **VIT)
  vit_params = common.load_into(_abstract(image_model, IMG), path + ":img",
                                model="vit")
  logits, _ = image_model.apply({"params": vit_params}, IMG)
  np.testing.assert_allclose(logits, aux["img/logits"], atol=1e-5)


# common.dot_general: the operands rounded to bfloat16 and multiplied in
# float64 by NumPy are the reference; the CPU path accumulates in float32,
# so it agrees to float32 rounding (not to bfloat16's 3e-3).
DOT_CASES = [
    ("btd,df->btf", (2, 5, 8), (8, 6)),  # nn.Dense
    ("bhtd,bhsd->bhts", (2, 3, 5, 4), (2, 3, 7, 4)),  # attention logits
    ("bhts,bhsd->bhtd", (2, 3, 5, 7), (2, 3, 7, 4)),  # attention output
    ("bhtd,hde->bte", (2, 3, 5, 4), (3, 4, 6)),  # attention out projection
    ("bli,inhd->blnhd", (2, 5, 8), (8, 3, 2, 4)),  # stacked q, k, v kernels
    # The backward's other form, (other operand^T x product)^T: for dw
    # (m k > n (m + k)) and for dx (k n > m (n + k)).
    ("btd,df->btf", (2, 5, 16), (16, 2)),
    ("btd,df->btf", (1, 2, 8), (8, 8)),
]


@pytest.mark.parametrize("spec,sa,sb", DOT_CASES)
def test_bfloat16_dot_general_values_and_gradients(spec, sa, sb):
  rng = np.random.default_rng(0)
  a, b = (rng.standard_normal(s).astype(np.float32) for s in (sa, sb))
  g = rng.standard_normal(np.einsum(spec, a, b).shape).astype(np.float32)
  r = lambda x: np.asarray(jnp.asarray(x, jnp.bfloat16), np.float64)
  lhs, rhs = spec.split("->")[0].split(",")
  out = spec.split("->")[1]
  want = np.einsum(spec, r(a), r(b))
  want_da = np.einsum(f"{out},{rhs}->{lhs}", r(g), r(b))
  want_db = np.einsum(f"{lhs},{out}->{rhs}", r(a), r(g))

  def f(a, b):  # f32 in (as params), bf16 matmul, f32 out on CPU.
    return common.einsum(spec, a.astype(jnp.bfloat16), b.astype(jnp.bfloat16))

  y, vjp = jax.vjp(f, jnp.asarray(a), jnp.asarray(b))
  assert y.dtype == jnp.float32  # Not rounded to bfloat16 on CPU.
  da, db = vjp(jnp.asarray(g))
  # The cotangent is rounded to bf16 before the gradient matmuls, and the
  # gradients cross the f32 -> bf16 casts as bf16: 2^-8 relative.
  for got, ref, tol in [(y, want, 1e-5), (da, want_da, 8e-3),
                        (db, want_db, 8e-3)]:
    np.testing.assert_allclose(np.asarray(got, np.float64), ref,
                               rtol=tol, atol=tol * np.abs(ref).max())


# float32 cases where the right operand is read as [b, n, k] (no copy):
# logits, and dx = g w^T; and ones where dc = g^T a is computed both ways.
F32_CASES = DOT_CASES + [
    ("bsd,btd->bst", (2, 3, 4), (2, 6, 4)),
    ("btd,fd->btf", (2, 5, 8), (6, 8)),
    ("btd,fd->btf", (2, 5, 16), (2, 16)),
    ("td,fd->tf", (2, 8), (8, 8)),
]


@pytest.mark.parametrize("spec,sa,sb", F32_CASES)
def test_float32_dot_general_values_and_gradients(spec, sa, sb):
  rng = np.random.default_rng(1)
  a, b = (rng.standard_normal(s).astype(np.float32) for s in (sa, sb))
  g = rng.standard_normal(np.einsum(spec, a, b).shape).astype(np.float32)
  lhs, rhs = spec.split("->")[0].split(",")
  out = spec.split("->")[1]
  f64 = lambda x: np.asarray(x, np.float64)
  want = np.einsum(spec, f64(a), f64(b))
  want_da = np.einsum(f"{out},{rhs}->{lhs}", f64(g), f64(b))
  want_db = np.einsum(f"{lhs},{out}->{rhs}", f64(a), f64(g))
  y, vjp = jax.vjp(lambda a, b: common.einsum(spec, a, b), jnp.asarray(a),
                   jnp.asarray(b))
  da, db = vjp(jnp.asarray(g))
  for got, ref in [(y, want), (da, want_da), (db, want_db)]:
    assert got.dtype == jnp.float32 and got.shape == ref.shape
    np.testing.assert_allclose(f64(got), ref, rtol=1e-5,
                               atol=1e-5 * np.abs(ref).max())


def _stablehlo_dots(fn, *args):
  hlo = jax.jit(jax.value_and_grad(fn, tuple(range(len(args))))).lower(
      *args).as_text()
  return [l for l in hlo.splitlines() if "stablehlo.dot_general" in l]


def _matmul_form(line):
  """"nn" ([b, m, k] x [b, k, n] or [m, k] x [k, n]), "nt" (right operand
  [b, n, k] / [n, k]) or None, of a StableHLO dot_general line."""
  batched = "batching_dims = [0] x [0]" in line
  if not batched and "batching_dims" in line:
    return None
  last = 2 if batched else 1
  for form, rhs in (("nn", last - 1), ("nt", last)):
    if f"contracting_dims = [{last}] x [{rhs}]" in line:
      return form
  return None


def test_dot_general_fast_path_is_canonical_bfloat16_matmuls():
  """On CPU every dot of a bf16 dense layer's forward and backward reaches
  XLA as a canonical [b, m, k] x [b, k, n] bf16 dot with f32 output (the
  form XLA:CPU gives its bf16 kernels)."""
  x = jnp.ones((4, 6, 8), jnp.bfloat16)
  w = jnp.ones((8, 5), jnp.bfloat16)
  dots = _stablehlo_dots(
      lambda x, w: jnp.sum(common.einsum("btd,df->btf", x, w)), x, w)
  assert len(dots) == 3  # forward, d/dx, d/dw
  for line in dots:
    assert _matmul_form(line) == "nn", line
    assert "(tensor<" in line and "xbf16>, tensor<" in line, line
    assert line.rstrip().endswith("xf32>"), line
  # Other dtypes are left to lax unchanged (same HLO).
  mine = lambda x, w: common.einsum("btd,df->btf", x, w)
  plain = lambda x, w: jnp.einsum("btd,df->btf", x, w)
  x16, w16 = x.astype(jnp.float16), w.astype(jnp.float16)
  assert (jax.jit(mine).lower(x16, w16).as_text()
          == jax.jit(plain).lower(x16, w16).as_text())


@pytest.mark.parametrize("spec,sa,sb", [
    ("btd,df->btf", (4, 6, 8), (8, 5)),  # dw = x^T g: x copied transposed
    ("btd,df->btf", (4, 6, 32), (32, 2)),  # dw = (g^T x)^T
    ("bhtd,bhsd->bhts", (2, 3, 5, 4), (2, 3, 7, 4)),
    ("bhts,bhsd->bhtd", (2, 3, 5, 7), (2, 3, 7, 4)),
    ("bhtd,hde->bte", (2, 3, 5, 4), (3, 4, 6)),
])
def test_float32_dots_read_the_left_operand_along_its_last_axis(spec, sa, sb):
  """On CPU every float32 dot of the forward and backward contracts the left
  operand's last axis ([b, m, k] x [b, k, n] or [b, n, k], the forms
  XLA:CPU gives YNNPACK), and every gradient comes back in its operand's
  shape (no transposed weight gradient for the update to read)."""
  a, b = jnp.ones(sa, jnp.float32), jnp.ones(sb, jnp.float32)
  dots = _stablehlo_dots(lambda a, b: jnp.sum(common.einsum(spec, a, b)),
                         a, b)
  assert len(dots) == 3, dots
  for line in dots:
    assert _matmul_form(line) in ("nn", "nt"), line
  grads = jax.grad(lambda a, b: jnp.sum(common.einsum(spec, a, b)),
                   (0, 1))(a, b)
  assert [g.shape for g in grads] == [sa, sb]


def test_float32_vit_step_runs_no_generic_cpu_dot():
  """A ViT block's train-step gradient, compiled on CPU: every dot is in a
  YNNPACK fusion (XLA's generic dot runs about half as fast). Skipped where
  jaxlib's XLA:CPU has no YNNPACK fusions at all."""
  from big_vision_like.models import vit
  model = vit.Model(num_classes=4, variant="mu/8", pool_type="gap")
  x = jnp.ones((2, 32, 32, 3), jnp.float32)
  params = model.init(jax.random.key(0), x)["params"]
  loss = lambda p: jnp.sum(model.apply({"params": p}, x)[0] ** 2)
  hlo = jax.jit(jax.grad(loss)).lower(params).compile().as_text()
  if "__ynn_fusion" not in hlo:
    pytest.skip("this XLA:CPU has no YNNPACK fusions")
  entry = hlo[hlo.index("\nENTRY"):]
  generic = [l.strip()[:160] for l in entry.splitlines()
             if " dot(" in l and "fusion(" not in l]
  assert not generic, generic


@pytest.mark.parametrize("policy, saved", [
    ("dots_saveable", 2), ("checkpoint_dots", 2),
    ("dots_with_no_batch_dims_saveable", 1),
    ("checkpoint_dots_with_no_batch_dims", 1), ("nothing_saveable", 0)])
def test_remat_policies_save_the_cpu_products_as_dots(
    capsys, policy, saved):
  # A dense product (no batch dims) and an attention-logits one (batched):
  # on CPU common.einsum's are custom VJPs, which a policy does not see as
  # dots; remat_policy saves them as it saves jnp.einsum's plain dots.
  def fn(dtype, einsum=common.einsum):
    def f(w, x):
      h = jnp.tanh(einsum("bi,ij->bj", x.astype(dtype),
                          w.astype(dtype)))  # [64, 128]
      hb = h.reshape(4, 16, 128).astype(dtype)
      return jnp.sum(jnp.tanh(einsum("btd,bsd->bts", hb, hb)))
    return f
  w, x = jnp.full((32, 128), 0.01), jnp.ones((64, 32))

  def saved_products(dtype, marker, einsum=common.einsum):
    ad_checkpoint.print_saved_residuals(jax.checkpoint(
        fn(dtype, einsum), policy=common.remat_policy(policy)), w, x)
    return capsys.readouterr().out.count(marker)

  assert saved_products(jnp.float32, "output of dot_general",
                        jnp.einsum) == saved
  assert saved_products(jnp.float32, "named 'common.dot_general") == saved
  assert saved_products(jnp.bfloat16, "named 'common.dot_general") == saved
