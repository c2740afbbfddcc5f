"""timm NFNet-F state dicts -> `models/nfnet.py` params.

`dm_nfnet_f*` (DeepMind's weights as ported by timm) map one-to-one:

  stem.conv{n}.*                      -> stem/conv{n-1}/*
  stages.{i}.{j}.{conv1,conv2,conv2b,conv3}.*
                                      -> stage_{i}/block_{j}/<same>/*
  stages.{i}.{j}.downsample.conv.*    -> stage_{i}/block_{j}/downsample/*
  stages.{i}.{j}.attn_last.fc{1,2}.*  -> stage_{i}/block_{j}/attn_last/fc{1,2}/*
  stages.{i}.{j}.skipinit_gain        -> stage_{i}/block_{j}/skipinit_gain
  final_conv.*, head.fc.*             -> final_conv/*, head/*

with conv weights OIHW -> HWIO (`kernel`), gains [O, 1, 1, 1] -> [O], 1x1
SE convs and the classifier [O, I(, 1, 1)] -> Dense kernels [I, O].

timm's own `nfnet_f*` differ in three ways, handled here or by the model:
no SkipInit gain (set to 1), the activation gamma folded into every conv
weight instead of the activations (see `_fold_gamma`) and PyTorch
symmetric padding (build the model with `conv_padding="symmetric"`, which
`timm_nfnet_model_kwargs` returns).

Weight standardisation differs slightly: timm divides by
`sqrt(var + eps)` (eps 1e-5), DeepMind and this codebase by
`sqrt(max(fan_in * var, 1e-4))`. By default the conversion folds the
per-channel factor `sqrt(var / (var + eps))` into each conv's gain, so the
converted model computes what the timm model computes (exactly, unless
`fan_in * var < 1e-4`); `timm_eps=0` keeps the gains as they are, i.e.
DeepMind's function of the weights. The difference is large for weights
with var ~ eps (a fresh timm init: up to ~0.4 in F0 logits), small for
trained ones.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_like.models import nfnet
from big_vision_like.tools import convert_torch as ct

_STEM = re.compile(r"stem\.conv(\d)\.(weight|bias|gain)")
_BLOCK = re.compile(r"stages\.(\d+)\.(\d+)\.(.+)")
_BLOCK_CONV = re.compile(r"(conv1|conv2|conv2b|conv3|downsample\.conv)\."
                         r"(weight|bias|gain)")
_SE = re.compile(r"attn_last\.(fc1|fc2)\.(weight|bias)")
_TOP = re.compile(r"(final_conv)\.(weight|bias|gain)|head\.fc\.(weight|bias)")


def _conv_leaf(kind, value):
  """timm conv param -> (leaf name, array)."""
  if kind == "weight":
    return "kernel", np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO
  if kind == "gain":
    return "gain", value.reshape(-1)
  return "bias", value


def _dense_leaf(kind, value):
  """timm Linear / 1x1 conv param -> (leaf name, array)."""
  if kind == "weight":
    return "kernel", value.reshape(value.shape[0], -1).T  # [O, I] -> [I, O]
  return "bias", value


def _map_key(key, value):
  """One timm key -> (param path tuple, array), or None if unknown."""
  if m := _STEM.fullmatch(key):
    leaf, v = _conv_leaf(m.group(2), value)
    return ("stem", f"conv{int(m.group(1)) - 1}", leaf), v
  if m := _BLOCK.fullmatch(key):
    prefix = (f"stage_{m.group(1)}", f"block_{m.group(2)}")
    rest = m.group(3)
    if rest == "skipinit_gain":
      return (*prefix, "skipinit_gain"), value.reshape(())
    if c := _BLOCK_CONV.fullmatch(rest):
      leaf, v = _conv_leaf(c.group(2), value)
      return (*prefix, c.group(1).split(".")[0], leaf), v
    if c := _SE.fullmatch(rest):
      leaf, v = _dense_leaf(c.group(2), value)
      return (*prefix, "attn_last", c.group(1), leaf), v
    return None
  if m := _TOP.fullmatch(key):
    if m.group(1):
      leaf, v = _conv_leaf(m.group(2), value)
      return ("final_conv", leaf), v
    leaf, v = _dense_leaf(m.group(3), value)
    return ("head", leaf), v
  return None


def _depths(sd):
  depths = []
  while True:
    blocks = {int(m.group(2)) for k in sd
              if (m := _BLOCK.fullmatch(k)) and int(m.group(1)) == len(depths)}
    if not blocks:
      return tuple(depths)
    depths.append(max(blocks) + 1)


def _shape(sd, key):
  if key not in sd:
    raise ValueError(f"Not a timm NFNet-F state dict: no {key!r} (keys: "
                     f"{sorted(sd)[:8]} ...).")
  return sd[key].shape


def timm_nfnet_model_kwargs(state_dict):
  """`nfnet.Model` keyword arguments read off a timm NFNet-F state dict.

  Args:
    state_dict: {name: array or torch tensor} of a timm `dm_nfnet_f*` or
      `nfnet_f*` model (any number of classes, or none).

  Returns:
    A dict of depths, widths, stem_widths, group_size, bottleneck, se_ratio,
    final_conv_mult, conv_padding and num_classes (None without a head).
  """
  sd = ct.float32_state_dict(state_dict)
  depths = _depths(sd)
  if len(depths) != 4:
    raise ValueError("Not a timm NFNet-F state dict: expected 4 stages "
                     f"`stages.0..3.*`, found depths {depths}.")
  widths = tuple(_shape(sd, f"stages.{i}.0.conv3.weight")[0]
                 for i in range(4))
  # Read off the widest stage: rounding to whole groups distorts the others
  # (F0+'s first stage has 128 = 384 / 3 bottleneck channels).
  mid = _shape(sd, "stages.3.0.conv1.weight")[0]
  stem = tuple(_shape(sd, f"stem.conv{n}.weight")[0] for n in (1, 2, 3))
  head = sd.get("head.fc.weight")
  dm = any(k.endswith("skipinit_gain") for k in sd)
  return {
      "depths": depths,
      "widths": widths,
      "stem_widths": stem,
      "group_size": _shape(sd, "stages.0.0.conv2.weight")[1],
      "bottleneck": mid / widths[3],
      "se_ratio": _shape(sd, "stages.3.0.attn_last.fc1.weight")[0] / widths[3],
      "final_conv_mult": _shape(sd, "final_conv.weight")[0] / widths[-1],
      "conv_padding": "SAME" if dm else "symmetric",
      "num_classes": None if head is None else head.shape[0],
  }


def _check_variant(kw, variant):
  want = nfnet.decode_variant(variant)
  got = {k: kw[k] for k in ("depths", "widths")}
  if {k: want[k] for k in got} != got:
    raise ValueError(f"The state dict is not NFNet-{variant}: it has "
                     f"{got}, {variant} has depths={want['depths']}, "
                     f"widths={want['widths']}.")


def _expected_shapes(kw):
  """{name: shape} of the params of the nfnet model built from `kw`."""
  return ct.param_shapes(nfnet.Model(variant=None, **kw),
                         jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))


def _fold_gamma(params, act="gelu"):
  """timm nfnet_f*: moves its gamma from conv weights into activations.

  timm scales every conv's weight by gamma and uses plain activations; the
  model scales every activation by gamma instead. The two agree wherever a
  conv follows an activation; the first stem conv (on the image) and
  `final_conv` (on the residual stream) take gamma into their gains, and
  the head, after the final (gamma-scaled) activation, is divided by it.
  """
  gamma = np.float32(nfnet.GAMMAS[act])
  for node in (params.get("stem", {}).get("conv0", {}),
               params.get("final_conv", {})):
    if "gain" in node:
      node["gain"] = node["gain"] * gamma
  if "kernel" in params.get("head", {}):
    params["head"]["kernel"] = params["head"]["kernel"] / gamma


def _fold_timm_eps(node, eps):
  """Scales a converted conv's gain so DeepMind's WS equals timm's."""
  if not isinstance(node, dict):
    return
  if {"kernel", "gain"} <= set(node) and np.ndim(node["kernel"]) == 4:
    var = np.var(node["kernel"].astype(np.float64), axis=(0, 1, 2))  # [O]
    factor = np.sqrt(var / (var + eps))
    node["gain"] = (node["gain"] * factor).astype(np.float32)
  for child in node.values():
    _fold_timm_eps(child, eps)


def timm_nfnet_to_params(state_dict, variant=None, *, timm_eps=1e-5):
  """Converts a timm `dm_nfnet_f*` / `nfnet_f*` state dict to nfnet params.

  Args:
    state_dict: {name: numpy array or torch tensor}.
    variant: optional NFNet variant ("F0".."F7", "F0+".."F7+") the state
      dict must be; None accepts any depths/widths (see
      `timm_nfnet_model_kwargs` for the model arguments to use).
    timm_eps: the eps of timm's weight standardisation, folded into the
      gains so the outputs match timm's (see the module docstring); 0 or
      None keeps DeepMind's standardisation of the same weights.

  Returns:
    A nested dict of float32 numpy arrays with `nfnet.Model`'s param names.

  Raises:
    ValueError: naming every timm key that maps to no param, every model
      param the state dict lacks and every shape mismatch, in one message;
      or saying how the state dict differs from `variant`.
  """
  sd = ct.float32_state_dict(state_dict)
  kw = timm_nfnet_model_kwargs(sd)
  if variant is not None:
    _check_variant(kw, variant)
  params, unmapped = {}, []
  for key in sorted(sd):
    mapped = _map_key(key, sd[key])
    if mapped is None:
      unmapped.append(key)
    else:
      ct.set_path(params, *mapped)
  if kw["conv_padding"] == "symmetric":  # timm nfnet_f*: no SkipInit.
    for stage, blocks in params.items():
      for block in blocks.values() if stage.startswith("stage_") else ():
        block["skipinit_gain"] = np.ones((), np.float32)
    _fold_gamma(params)
  if timm_eps:
    _fold_timm_eps(params, timm_eps)
  problems = ct.param_problems(params, unmapped, _expected_shapes(kw),
                               "nfnet")
  if problems:
    raise ValueError("timm_nfnet_to_params: the state dict does not match "
                     f"the nfnet model {kw}:\n" + "\n".join(problems))
  return params
