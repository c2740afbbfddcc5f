"""timm BiT ResNet-v2 state dicts (`resnetv2_*_bit*`) -> `bit_paper` params.

timm's `ResNetV2` with `StdConv2d` and `GroupNormAct` (pre-activation, the
BiT weights as published for PyTorch) maps one-to-one:

  stem.conv.weight             -> root_block/conv_root/kernel
  stages.{i}.blocks.{j}.norm{n}.{weight,bias}
                               -> block{i+1}/unit{j+1:02d}/gn{n}/{scale,bias}
  stages.{i}.blocks.{j}.conv{n}.weight -> .../conv{n}/kernel (n = 1, 2, 3)
  stages.{i}.blocks.{j}.downsample.conv.weight -> .../conv_proj/kernel
  norm.{weight,bias}           -> norm-pre-head/{scale,bias}
  head.fc.{weight,bias}        -> head/{kernel,bias}

with conv weights OIHW -> HWIO, GroupNorm weights [C] -> [1, 1, 1, C] and
the 1x1-conv classifier [N, C, 1, 1] -> a Dense kernel [C, N].

Two details of timm's BiT models differ from big_vision's `bit_paper`:

- Weight standardisation: timm divides by sqrt(var + 1e-8), big_vision by
  sqrt(var + 1e-10). Standardisation is invariant to scaling a kernel,
  except for the eps: scaling every kernel by c = sqrt(1e-10 / 1e-8) = 0.1
  makes big_vision's function of the scaled kernel exactly timm's function
  of the original one (c(w - m) / sqrt(c^2 var + 1e-10) = (w - m) /
  sqrt(var + 1e-8)). The converter does that by default (`timm_eps`);
  `timm_eps=None` keeps the kernels as they are (then kernels with
  var ~ 1e-8 compute differently; trained BiT kernels have var >> 1e-8, so
  the difference is far below float32 noise there).
- The stem max pool: timm's BiT stem ("fixed") pads with zeros, as the
  original BiT code; big_vision pads with -inf. The model kwargs say
  `root_pool_pad="zero"` (`timm_resnetv2_model_kwargs`).

GroupNorm is the same function (eps 1e-5 inside the sqrt, biased variance).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_like.models import bit, bit_paper
from big_vision_like.tools import convert_torch as ct

TIMM_WS_EPS = 1e-8  # timm's `_create_resnetv2_bit`: StdConv2d(eps=1e-8).
_BLOCK = re.compile(r"stages\.(\d+)\.blocks\.(\d+)\.(.+)")
_UNIT_PARAM = re.compile(
    r"(norm[123])\.(weight|bias)|(conv[123]|downsample\.conv)\.weight")


def _conv(w):
  return np.transpose(w, (2, 3, 1, 0))  # OIHW -> HWIO


def _gn(v):
  return v.reshape(1, 1, 1, -1)


def map_key(key, value):
  """One timm key -> (bit_paper path tuple, converted array), or None."""
  if key == "stem.conv.weight":
    return ("root_block", "conv_root", "kernel"), _conv(value)
  if key in ("norm.weight", "norm.bias"):
    leaf = "scale" if key.endswith("weight") else "bias"
    return ("norm-pre-head", leaf), _gn(value)
  if key == "head.fc.weight":
    return ("head", "kernel"), value.reshape(value.shape[0], -1).T
  if key == "head.fc.bias":
    return ("head", "bias"), value
  if not (m := _BLOCK.fullmatch(key)):
    return None
  prefix = (f"block{int(m.group(1)) + 1}", f"unit{int(m.group(2)) + 1:02d}")
  if not (p := _UNIT_PARAM.fullmatch(m.group(3))):
    return None
  if p.group(1):
    leaf = "scale" if p.group(2) == "weight" else "bias"
    return (*prefix, f"gn{p.group(1)[-1]}", leaf), _gn(value)
  conv = "conv_proj" if p.group(3).startswith("downsample") else p.group(3)
  return (*prefix, conv, "kernel"), _conv(value)


def _require(sd, key):
  if key not in sd:
    raise ValueError(f"Not a timm BiT ResNetV2 state dict: no {key!r} (keys: "
                     f"{sorted(sd)[:8]} ...).")
  return sd[key]


def _depth(sd):
  """Units per stage, from the `stages.{i}.blocks.{j}` keys."""
  units = {}
  for k in sd:
    if m := _BLOCK.fullmatch(k):
      i, j = int(m.group(1)), int(m.group(2))
      units[i] = max(units.get(i, 0), j + 1)
  if sorted(units) != list(range(len(units))) or not units:
    raise ValueError("Not a timm ResNetV2 state dict: stages "
                     f"{sorted(units)} (from `stages.{{i}}.blocks.{{j}}.*`) "
                     "are not 0, 1, ...")
  return [units[i] for i in range(len(units))]


def timm_resnetv2_model_kwargs(state_dict):
  """`bit_paper.Model` keyword arguments read off a timm BiT state dict.

  Returns:
    dict(num_classes (None without a head), depth (a standard depth, or a
    list of units per stage), width, root_pool_pad="zero").
  """
  sd = ct.float32_state_dict(state_dict)
  if any(k.endswith("running_mean") for k in sd):
    raise ValueError("A BatchNorm ResNetV2 (timm `resnetv2_50`, ...) is not "
                     "BiT: only GroupNorm + StdConv2d models (`resnetv2_*_bit`"
                     ") convert to bit_paper.")
  stem = _require(sd, "stem.conv.weight").shape
  width = stem[0] / 64
  depth = _depth(sd)
  standard = {v: k for k, v in bit.BLOCKS.items()}
  head = sd.get("head.fc.weight")
  return {
      "num_classes": None if head is None else int(head.shape[0]),
      "depth": standard.get(tuple(depth), depth),
      "width": int(width) if width.is_integer() else width,
      "root_pool_pad": "zero",
  }


def _expected_shapes(kw):
  """{name: shape} of the params of the bit_paper model built from `kw`."""
  return ct.param_shapes(bit_paper.Model(**kw),
                         jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))


def timm_resnetv2_to_params(state_dict, *, timm_eps=TIMM_WS_EPS):
  """Converts a timm `resnetv2_*_bit*` state dict to `bit_paper` params.

  Args:
    state_dict: {name: numpy array or torch tensor} of a timm BiT ResNetV2
      (any depth, width and number of classes, or no head).
    timm_eps: the eps of timm's weight standardisation; every kernel is
      scaled by sqrt(bit_paper.WS_EPS / timm_eps) so the converted model
      computes exactly what timm computes (see the module docstring).
      None keeps the kernels unscaled.

  Returns:
    A nested dict of float32 numpy arrays with `bit_paper.Model`'s names;
    build the model with `timm_resnetv2_model_kwargs(state_dict)`.

  Raises:
    ValueError: naming every timm key that maps to no param, every model
      param the state dict lacks and every shape mismatch, in one message.
  """
  sd = ct.float32_state_dict(state_dict)
  kw = timm_resnetv2_model_kwargs(sd)
  scale = np.float32(np.sqrt(bit_paper.WS_EPS / timm_eps)) if timm_eps else 1
  params, unmapped = {}, []
  for key in sorted(sd):
    mapped = map_key(key, sd[key])
    if mapped is None:
      unmapped.append(key)
      continue
    path, value = mapped
    if path[-1] == "kernel" and value.ndim == 4:
      value = value * scale
    ct.set_path(params, path, np.ascontiguousarray(value, np.float32))
  try:
    expected = _expected_shapes(kw)
  except ValueError as e:  # E.g. a width GroupNorm cannot split.
    raise ValueError(f"timm_resnetv2_to_params: {e}") from None
  problems = ct.param_problems(params, unmapped, expected, "bit_paper")
  if problems:
    raise ValueError("timm_resnetv2_to_params: the state dict does not match "
                     f"the bit_paper model {kw}:\n" + "\n".join(problems))
  return params
