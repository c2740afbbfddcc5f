"""Tests for big_vision_like.models.nfnet and tools.convert_nfnet."""

import dataclasses
import functools
import importlib.util
import os
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from big_vision_like import registry
from big_vision_like.models import nfnet
from big_vision_like.tools import convert_nfnet

# F0's depths at 1/8 width (stages 32, 64, 192, 192; one group per conv).
SMALL = {"variant": "F0", "width_mult": 0.125}
# One block per stage: the fastest model with every kind of block.
TINY = {**SMALL, "depths": (1, 1, 1, 1)}
ALL_VARIANTS = list(nfnet.VARIANTS) + [f"{v}+" for v in nfnet.VARIANTS]


def _flat(params):
  return {"/".join(k): v for k, v in
          flax.traverse_util.flatten_dict(flax.core.unfreeze(params)).items()}


def _init(model, x):
  # XLA:CPU compiles threefry-based inits very slowly; rbg keys are fast.
  return jax.jit(model.init)(jax.random.key(0, impl="rbg"), x)["params"]


def _set_skipinit(params, value):
  return flax.traverse_util.unflatten_dict({
      k: jnp.full_like(v, value) if k[-1] == "skipinit_gain" else v
      for k, v in flax.traverse_util.flatten_dict(params).items()})


@functools.lru_cache
def _jitted_apply(model):
  return jax.jit(model.apply, static_argnames="train")


def _apply(model, params, x, train=False, seed=0):
  """model.apply, compiled once per model (XLA:CPU compiles slowly)."""
  return _jitted_apply(model)({"params": params}, x, train=train,
                              rngs={"dropout": jax.random.key(seed)})


def _normal(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape),
                     jnp.float32)


def _conv(k, cin, cout, groups=1):
  return k * k * cin // groups * cout + 2 * cout  # kernel, bias, gain


def _param_count(depths, widths, classes=1000, stem=nfnet.STEM_WIDTHS):
  """NFNet-F parameter count, computed independently of the model code."""
  conv = _conv
  n, cin = 0, 3
  for ch in (*stem, widths[0] // 2):
    n, cin = n + conv(3, cin, ch), ch
  for depth, out in zip(depths, widths):
    mid = out // 2 // 128 * 128  # Whole groups of 128 channels.
    for j in range(depth):
      n += conv(1, cin, mid) + 2 * conv(3, mid, mid, mid // 128)
      n += conv(1, mid, out) + 1  # + skipinit_gain
      n += out * (out // 2) + out // 2 + (out // 2) * out + out  # SE
      n += conv(1, cin, out) if j == 0 else 0  # downsample
      cin = out
  return n + conv(1, cin, 2 * cin) + 2 * cin * classes + classes


# ----------------------------------------------------------------------------
# Variants and sizes.


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_variant_builds_with_published_size(variant):
  k = nfnet.VARIANTS[variant.rstrip("+")][0]
  widths = nfnet.WIDTHS_PLUS if variant.endswith("+") else nfnet.WIDTHS
  img = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  model = nfnet.Model(1000, variant=variant)
  shapes = {n: p.shape for n, p in _flat(jax.eval_shape(
      model.init, jax.random.key(0), img)["params"]).items()}
  depths = [len({n.split("/")[1] for n in shapes
                 if n.startswith(f"stage_{i}/")}) for i in range(4)]
  assert depths == [k * d for d in (1, 2, 6, 3)]
  for i, w in enumerate(widths):
    mid = w // 2 // 128 * 128  # F+: 384 -> 128 (DeepMind rounds to groups)
    assert shapes[f"stage_{i}/block_0/conv3/kernel"] == (1, 1, mid, w)
  assert shapes["stem/conv3/kernel"] == (3, 3, 64, widths[0] // 2)
  assert shapes["final_conv/kernel"] == (1, 1, widths[-1], 2 * widths[-1])
  assert shapes["head/kernel"] == (2 * widths[-1], 1000)
  count = sum(int(np.prod(s)) for s in shapes.values())
  assert count == _param_count(depths, widths)
  if variant in nfnet.PUBLISHED_PARAMS_M:
    assert abs(count / 1e6 - nfnet.PUBLISHED_PARAMS_M[variant]) < 0.05
  if variant == "F0":
    assert count == 71_489_284  # timm's dm_nfnet_f0.


def test_variant_defaults_and_errors():
  assert nfnet.Model(variant="F3").dropout == 0.4
  assert nfnet.Model(variant="F7+").dropout == 0.5
  assert nfnet.Model(variant="F1", dropout=0.0).dropout == 0.0
  assert nfnet.resolutions("F0") == (192, 256)
  assert nfnet.resolutions("F6+") == (448, 576)
  assert registry.MODELS.get("nfnet") is nfnet.Model
  with pytest.raises(ValueError, match=r"'F9'.*Known.*'F0\+'"):
    nfnet.Model(variant="F9")
  with pytest.raises(ValueError, match="Unknown activation"):
    nfnet.activation("swish9")


@pytest.mark.parametrize("name", sorted(nfnet.GAMMAS))
def test_gamma_makes_activation_unit_variance(name):
  z = np.linspace(-12, 12, 400_001)
  pdf = np.exp(-z**2 / 2) / np.sqrt(2 * np.pi)
  y = np.asarray(nfnet.activation(name)(jnp.asarray(z, jnp.float32)),
                 np.float64)
  mean = np.trapezoid(y * pdf, z)
  var = np.trapezoid((y - mean)**2 * pdf, z)
  np.testing.assert_allclose(var, 1.0, rtol=2e-3)  # Constants are MC values.


def test_expected_variances_and_betas():
  a2 = nfnet.ALPHA**2
  # Block inputs: the stem (1), then reset-and-grow at each stage's start.
  expected = [1, 1 + a2, 1 + a2, 1 + 2 * a2, 1 + a2, 1 + 2 * a2,
              1 + 3 * a2, 1 + 4 * a2, 1 + 5 * a2, 1 + 6 * a2, 1 + a2,
              1 + 2 * a2]
  np.testing.assert_allclose(nfnet.expected_variances((1, 2, 6, 3)),
                             expected, rtol=1e-12)
  specs = [s for stage in nfnet.block_specs((1, 2, 6, 3), nfnet.WIDTHS)
           for s in stage]
  np.testing.assert_allclose([s.beta for s in specs],
                             np.asarray(expected)**-0.5, rtol=1e-12)
  assert [s.stride for s in specs if s.stride > 1] == [2, 2, 2]
  assert {(s.mid_ch, s.groups) for s in specs} == {
      (128, 1), (256, 2), (768, 6)}


# ----------------------------------------------------------------------------
# Signal propagation at initialisation.


def _block_input_variances(model, params, x):
  _, aux = _apply(model, params, x)
  n = sum(model.depths)
  ins = [aux["stem"]] + [aux[f"block_{k}"] for k in range(n - 1)]
  return np.asarray([float(jnp.mean(jnp.var(a, axis=(0, 1, 2))))
                     for a in ins])  # Mean over channels of Var[x_k].


def test_activations_keep_tracked_variance_at_init():
  """Var[x_k] at every block input stays near the analytic expectation.

  Runs F0's 12 blocks at full resolution (no stage strides), since an
  average-pool shortcut quarters the variance of spatially white noise,
  which the analysis (made for natural images) does not model; the
  strided transition is checked on its own below.
  """
  model = nfnet.Model(10, **SMALL, strides=(1, 1, 1, 1))
  x = _normal((4, 24, 24, 3))  # Stem: [4, 6, 6, 16].
  params = _init(model, x)
  expected = np.asarray(nfnet.expected_variances(model.depths))
  # gain 0 is SkipInit's init (residual branches off); gain 1 is the
  # regime the betas are designed for (every branch on, unit variance).
  for gain in (0.0, 1.0):
    ratio = _block_input_variances(
        model, _set_skipinit(params, gain), x) / expected
    assert np.all((ratio > 0.5) & (ratio < 2)), (gain, ratio.round(2))
  # The check does catch a wrong scaling: 3x too large branches drift away.
  ratio = _block_input_variances(
      model, _set_skipinit(params, 3.0), x) / expected
  assert ratio[-1] > 2


def test_strided_transition_keeps_variance_of_smooth_input():
  var_in = 1.3
  spec = nfnet.block_specs((1,), (64,), strides=(2,))[0][0]
  block = nfnet.NFBlock(spec._replace(beta=var_in**-0.5))
  cells = np.sqrt(var_in) * np.random.default_rng(0).standard_normal(
      (8, 4, 4, 32))
  x = jnp.asarray(cells.repeat(2, 1).repeat(2, 2), jnp.float32)  # 2x2 cells
  params = _set_skipinit(_init(block, x), 1.0)
  y = jax.jit(block.apply)({"params": params}, x)  # [8, 4, 4, 64]
  var_out = float(jnp.mean(jnp.var(y, axis=(0, 1, 2))))
  assert 0.5 < var_out / (1 + nfnet.ALPHA**2) < 2


# ----------------------------------------------------------------------------
# Forward, backward, train/eval behaviour.


@pytest.fixture(scope="module")
def tiny():
  """TINY with a random head and high drop rates, its params (SkipInit
  gains 1, so every branch matters) and an input."""
  model = nfnet.Model(5, **TINY, head_zeroinit=False, dropout=0.5,
                      drop_path=0.9)
  x = _normal((8, 16, 16, 3))
  return model, _set_skipinit(_init(model, x), 1.0), x


def _head(params, pre_logits):
  return pre_logits @ params["head"]["kernel"] + params["head"]["bias"]


def test_forward_backward_jit_and_outputs(tiny):
  model, params, x = tiny
  logits, aux = _apply(model, params, x)
  assert logits.shape == (8, 5)
  assert aux["stem"].shape == (8, 4, 4, 16)
  assert [aux[f"stage_{i}"].shape for i in range(4)] == [
      (8, 4, 4, 32), (8, 2, 2, 64), (8, 1, 1, 192), (8, 1, 1, 192)]
  assert aux["final_conv"].shape == (8, 1, 1, 384)
  np.testing.assert_array_equal(aux["logits"], logits)
  headless = jax.eval_shape(nfnet.Model(None, **TINY).apply,
                            {"params": params}, x)
  assert headless[0].shape == (8, 384)

  def loss(p):
    out, _ = model.apply({"params": p}, x, train=True,
                         rngs={"dropout": jax.random.key(1)})
    return jnp.mean(jnp.square(out))

  grads = jax.jit(jax.grad(loss))(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  flat = _flat(grads)
  for name in ("head/kernel", "stage_1/block_0/skipinit_gain",
               "stage_1/block_0/conv2/kernel", "stem/conv0/gain"):
    assert np.any(flat[name] != 0), name


def test_dropout_and_drop_path_only_in_training(tiny):
  model, params, x = tiny
  (logits, aux), (other, _) = (_apply(model, params, x, False, seed)
                               for seed in (1, 2))
  np.testing.assert_array_equal(other, logits)  # Eval: no randomness ...
  np.testing.assert_allclose(_head(params, aux["pre_logits"]), logits,
                             rtol=1e-5, atol=1e-6)  # ... and no dropout.
  (t_logits, t_aux), (t_other, _) = (_apply(model, params, x, True, seed)
                                     for seed in (1, 2))
  assert not np.allclose(t_other, t_logits)
  # Drop path acts before the pooled features, dropout after them.
  assert not np.allclose(t_aux["pre_logits"], aux["pre_logits"])
  assert not np.allclose(_head(params, t_aux["pre_logits"]), t_logits)
  dropped = np.all(np.asarray(t_aux["stage_3"] == 0), axis=(1, 2, 3))
  assert not dropped.any()  # Drop path zeroes a branch, not the stream.


def test_bfloat16_matmuls(tiny):
  model, params, x = tiny
  out, aux = _apply(model.clone(dtype_mm="bfloat16"), params, x)
  assert aux["stage_3"].dtype == jnp.bfloat16
  ref, _ = _apply(model, params, x)
  np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=0.1,
                             rtol=0.1)


# ----------------------------------------------------------------------------
# timm parity and conversion (torch side in a subprocess, see below).

HAVE_TIMM = all(importlib.util.find_spec(m) is not None
                for m in ("torch", "timm"))
# Small timm NFNet-F configs (both flavours) and the inputs they are run on;
# an odd size tells SAME (dm_) from symmetric (nfnet_f*) padding apart.
SMALL_TIMM = {"depths": (1, 2, 1, 1), "channels": (32, 64, 96, 96),
              "stem_chs": 16, "group_size": 16, "num_features": 192}
CASES = {"dm_small": ("dm_nfnet_f0", (35,)),
         "nf_small": ("nfnet_f0", (35,)),
         "dm_f0": ("dm_nfnet_f0", (64,))}


def _randomise(tmodel):
  """Nonzero SkipInit gains, random gains and biases (timm zero-inits)."""
  import torch  # pylint: disable=C0415
  gen = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for name, p in tmodel.named_parameters():
      if name.endswith("gain"):
        p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
      elif name.endswith("bias") or name.startswith("head"):
        p.copy_(0.1 * torch.randn(p.shape, generator=gen))
  return tmodel.eval()


def _make_timm_refs(out):
  """Writes each case's state dict, inputs, logits and block betas."""
  import timm  # pylint: disable=C0415
  import torch  # pylint: disable=C0415
  from timm.models import nfnet as timm_nfnet  # pylint: disable=C0415
  for case, (name, sizes) in CASES.items():
    if case.endswith("small"):
      cfg = dataclasses.replace(timm_nfnet.model_cfgs[name], **SMALL_TIMM)
      tmodel = timm_nfnet.NormFreeNet(cfg, num_classes=7)
    else:
      tmodel = timm.create_model(name, pretrained=False)
    tmodel = _randomise(tmodel)
    arrays = {f"sd/{k}": v.numpy() for k, v in tmodel.state_dict().items()}
    arrays["betas"] = np.asarray([b.beta for s in tmodel.stages for b in s])
    for res in sizes:
      x = np.random.default_rng(res).standard_normal((2, 3, res, res))
      x = x.astype(np.float32)
      with torch.no_grad():
        arrays[f"logits_{res}"] = tmodel(torch.from_numpy(x)).numpy()
      arrays[f"x_{res}"] = x
    np.savez(os.path.join(out, f"{case}.npz"), **arrays)


@pytest.fixture(scope="module")
def timm_refs(tmp_path_factory):
  """{case: arrays}, built once by running this file in a subprocess.

  timm (via torchvision/triton) can crash when imported after TensorFlow,
  which conftest imports, so torch never runs in the test process.
  """
  if not HAVE_TIMM:
    pytest.skip("needs torch and timm")
  out = str(tmp_path_factory.mktemp("nfnet_refs"))
  root = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  proc = subprocess.run(
      [sys.executable, os.path.abspath(__file__), out], cwd=root,
      env={**os.environ, "PYTHONPATH": root}, capture_output=True, text=True,
      timeout=300, check=False)
  if proc.returncode:
    pytest.fail(f"building the timm references failed:\n{proc.stderr[-3000:]}")
  refs = {}
  for case in CASES:
    with np.load(os.path.join(out, f"{case}.npz")) as data:
      refs[case] = {k: data[k] for k in data.files}
  return refs


def _state_dict(arrays):
  return {k[3:]: v for k, v in arrays.items() if k.startswith("sd/")}


def _logits_diff(arrays, res, variant=None, **kw):
  """Max |logits - timm logits| of the converted case."""
  sd = _state_dict(arrays)
  params = convert_nfnet.timm_nfnet_to_params(sd, variant=variant, **kw)
  model = nfnet.Model(variant=None,
                      **convert_nfnet.timm_nfnet_model_kwargs(sd))
  x = arrays[f"x_{res}"].transpose(0, 2, 3, 1)  # NCHW -> NHWC
  out, _ = _apply(model, params, x)
  return float(np.abs(np.asarray(out) - arrays[f"logits_{res}"]).max())


def _check_parity(arrays, res, variant=None, tol=1e-5):
  diff = _logits_diff(arrays, res, variant)
  scale = max(1.0, np.abs(arrays[f"logits_{res}"]).max())
  assert diff < tol * scale, (res, diff)
  return diff


@pytest.mark.parametrize("case", ["dm_small", "nf_small"])
def test_small_timm_parity(timm_refs, case):
  """Both timm flavours (incl. their padding, at an odd image size)."""
  for res in CASES[case][1]:
    _check_parity(timm_refs[case], res)


def test_dm_nfnet_f0_parity(timm_refs):
  arrays = timm_refs["dm_f0"]
  specs = [s for st in nfnet.block_specs((1, 2, 6, 3), nfnet.WIDTHS)
           for s in st]
  np.testing.assert_allclose(arrays["betas"], [s.beta for s in specs],
                             rtol=1e-6)
  diff = _check_parity(arrays, 64, variant="F0", tol=1e-4)
  # Without folding timm's WS eps into the gains: DeepMind's function.
  dm_diff = _logits_diff(arrays, 64, timm_eps=0)
  print(f"dm_nfnet_f0 max |logits diff| {diff:.2e} ({dm_diff:.2e} with "
        f"timm_eps=0), max |logit| {np.abs(arrays['logits_64']).max():.2f}")
  assert dm_diff > 100 * diff


def test_converter_reports_bad_state_dicts(timm_refs):
  sd = _state_dict(timm_refs["dm_small"])
  bad = dict(sd)
  del bad["stages.1.0.conv2b.gain"]
  bad["stages.1.0.extra.weight"] = np.zeros(3)
  bad["stages.2.0.conv1.weight"] = np.zeros((48, 64, 3, 3), np.float32)
  with pytest.raises(ValueError) as e:
    convert_nfnet.timm_nfnet_to_params(bad)
  msg = str(e.value)
  assert "stages.1.0.extra.weight" in msg
  assert "stage_1/block_0/conv2b/gain" in msg
  assert "stage_2/block_0/conv1/kernel: got (3, 3, 64, 48)" in msg
  with pytest.raises(ValueError, match="not NFNet-F0"):
    convert_nfnet.timm_nfnet_to_params(sd, variant="F0")
  with pytest.raises(ValueError, match="Not a timm NFNet-F state dict.*4"):
    convert_nfnet.timm_nfnet_to_params({"stages.0.0.conv9.weight": sd[
        "stages.0.0.conv1.weight"]})
  headless = {k: v for k, v in sd.items() if not k.startswith("head.")}
  params = convert_nfnet.timm_nfnet_to_params(headless)
  assert "head" not in params
  assert convert_nfnet.timm_nfnet_model_kwargs(headless)["num_classes"] is None


def test_converter_accepts_tensor_like_values(timm_refs):
  """torch tensors are read through .detach().cpu().float().numpy()."""

  class FakeTensor:
    def __init__(self, a):
      self.a = a

    def detach(self):
      return self

    def cpu(self):
      return self

    def float(self):
      return self

    def numpy(self):
      return self.a

  sd = _state_dict(timm_refs["dm_small"])
  got = convert_nfnet.timm_nfnet_to_params(
      {f"module.{k}": FakeTensor(v) for k, v in sd.items()})
  want = convert_nfnet.timm_nfnet_to_params(sd)
  jax.tree.map(np.testing.assert_array_equal, got, want)


if __name__ == "__main__":  # The `timm_refs` fixture's subprocess.
  _make_timm_refs(sys.argv[1])
