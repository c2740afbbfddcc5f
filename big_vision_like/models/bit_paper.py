"""The BiT paper's pre-activation ResNet-v2 (big_vision's `bit_paper`).

The architecture of the released "Big Transfer (BiT)" weights (BiT-S,
BiT-M; Kolesnikov et al. 2020): a 7x7/2 root conv and a 3x3/2 max pool,
then bottleneck units that normalise and activate their input first
(`gn1` + ReLU; the projection shortcut, where the shape changes, reads
that pre-activated input), the stride on the 3x3 conv and a plain sum;
a final GroupNorm + ReLU (`norm-pre-head`), a spatial mean and the head.

Numerics follow big_vision's (and the original BiT code's) exactly, since
released weights are sensitive to them: kernels are standardised as
(w - mean) / sqrt(mean((w - mean)^2) + 1e-10) over the fan-in axes, and
GroupNorm divides by sqrt(mean((x - mean)^2) + 1e-5) over the spatial
and within-group axes, with scale/bias stored as [1, 1, 1, C].

Parameter names are big_vision's:

  root_block/conv_root/kernel [7, 7, 3, W]
  block{i}/unit{jj}/gn1/{scale,bias} [1, 1, 1, C]
  block{i}/unit{jj}/conv1/kernel [1, 1, C, m], gn2, conv2 [3, 3, m, m],
      gn3, conv3 [1, 1, m, 4m]
  block{i}/unit01/conv_proj/kernel [1, 1, C, 4m]
  norm-pre-head/{scale,bias} [1, 1, 1, 4m], head/{kernel,bias}

with W = 64 * width, m = W * 2^(i-1), units numbered with two digits
(`unit01`, `unit02`, ...). `from_big_transfer` renames the BiT release
files (`resnet/block1/unit01/a/standardized_conv2d/kernel`, ...) to these.

The max pool pads with -inf (big_vision); the original BiT code and timm's
ports pad with zeros (`root_pool_pad="zero"`), which differs at borders
where every value of a window is negative.
"""

import re

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from big_vision_like import tree_util
from big_vision_like.models import bit, common
from big_vision_like.registry import MODELS

WS_EPS = 1e-10  # Inside the sqrt of the kernel's variance.
GN_EPS = 1e-5
POOL_PADS = ("-inf", "zero")


def standardize(x, axis, eps):
  """(x - mean) / sqrt(mean((x - mean)^2) + eps) over `axis`."""
  x = x - jnp.mean(x, axis=axis, keepdims=True)
  return x / jnp.sqrt(jnp.mean(jnp.square(x), axis=axis, keepdims=True) + eps)


def standardize_kernel(kernel, eps=WS_EPS):
  """Weight standardisation of an HWIO kernel over its fan-in (0, 1, 2)."""
  return standardize(kernel, (0, 1, 2), eps)


class GroupNorm(bit.GroupNorm):
  """BiT's GroupNorm: eps 1e-5 inside the sqrt, params [1, 1, 1, C]."""
  eps: float = GN_EPS
  params_4d: bool = True


def _conv(*args, dtype_mm, **kw):
  return bit.StdConv(*args, standardize_fn=standardize_kernel,
                     dtype_mm=dtype_mm, **kw)


def max_pool_3x3s2(x, pad):
  """3x3 / stride-2 max pool with one row/column of `pad` on every side."""
  if pad == "-inf":
    return nn.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))
  if pad == "zero":
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return nn.max_pool(x, (3, 3), (2, 2), "VALID")
  raise ValueError(f"Unknown root_pool_pad {pad!r}; known: {POOL_PADS} "
                   "('zero': the original BiT code and timm).")


class RootBlock(nn.Module):
  """7x7/2 conv (padding 3), then the 3x3/2 max pool (padding 1)."""
  width: int
  pool_pad: str = "-inf"
  dtype_mm: str = "float32"

  @nn.compact
  def __call__(self, x):
    """x: [B, H, W, C] -> [B, ~H/4, ~W/4, width]."""
    x = _conv(self.width, 7, 2, 3, dtype_mm=self.dtype_mm,
              name="conv_root")(x)  # [B, ~H/2, ~W/2, width]
    return max_pool_3x3s2(x, self.pool_pad)


class ResidualUnit(nn.Module):
  """Pre-activation bottleneck: x' = relu(gn1(x)); proj(x') + convs(x')."""
  nmid: int
  strides: int = 1
  dtype_mm: str = "float32"

  @nn.compact
  def __call__(self, x):
    """x: [B, H, W, C] -> [B, H / strides, W / strides, 4 nmid]."""
    nout, kw = 4 * self.nmid, {"dtype_mm": self.dtype_mm}
    residual = x
    x = nn.relu(GroupNorm(name="gn1")(x))
    if x.shape[-1] != nout or self.strides != 1:
      residual = _conv(nout, 1, self.strides, name="conv_proj", **kw)(x)
    x = _conv(self.nmid, 1, name="conv1", **kw)(x)  # [B, H, W, m]
    x = nn.relu(GroupNorm(name="gn2")(x))
    x = _conv(self.nmid, 3, self.strides, 1, name="conv2", **kw)(x)
    x = nn.relu(GroupNorm(name="gn3")(x))  # [B, h, w, m]
    x = _conv(nout, 1, name="conv3", **kw)(x)  # [B, h, w, 4m]
    return x.astype(jnp.float32) + residual  # The stream stays float32.


class ResNetStage(nn.Module):
  """Units `unit01..`, the first strided; returns (x, {unit: output})."""
  units: int
  nmid: int
  first_stride: int = 1
  dtype_mm: str = "float32"

  @nn.compact
  def __call__(self, x):
    """x: [B, H, W, C] -> ([B, H / stride, W / stride, 4 nmid], dict)."""
    outs = {}
    for j in range(self.units):
      name = f"unit{j + 1:02d}"
      x = outs[name] = ResidualUnit(
          self.nmid, self.first_stride if j == 0 else 1, self.dtype_mm,
          name=name)(x)
    return x, outs


class _Model(nn.Module):
  """ResNet-v2 of BiT. `apply(..., image [B, H, W, C])` -> (out, aux)."""
  num_classes: int | None = None
  width: float = 1
  depth: int | tuple[int, ...] = 50
  head_zeroinit: bool = True
  root_pool_pad: str = "-inf"  # "zero": the original BiT code, timm.
  dtype_mm: str = "float32"

  @nn.compact
  def __call__(self, image, *, train=False):
    """image: [B, H, W, C] float -> (logits or pre-logits, aux dict)."""
    del train  # No dropout, no batch statistics.
    blocks, width = bit.block_counts(self.depth), bit.stem_width(self.width)
    out = {}
    x = out["stem"] = RootBlock(width, self.root_pool_pad, self.dtype_mm,
                                name="root_block")(image)  # [B, h, w, W]
    for i, units in enumerate(blocks):
      x, units_out = ResNetStage(
          units, width * 2 ** i, 1 if i == 0 else 2, self.dtype_mm,
          name=f"block{i + 1}")(x)  # [B, h_i, w_i, 4 W 2^i]
      out[f"stage{i + 1}"] = x
      out.update({f"stage{i + 1}/{k}": v for k, v in units_out.items()})
    x = out["norm_pre_head"] = GroupNorm(name="norm-pre-head")(x)
    x = out["pre_logits_2d"] = nn.relu(x)  # [B, h, w, D]
    x = out["pre_logits"] = jnp.mean(x, axis=(1, 2))  # [B, D]
    if self.num_classes:
      head = common.head(self.num_classes, self.head_zeroinit)
      out["logits_2d"] = head(out["pre_logits_2d"])  # [B, h, w, classes]
      x = out["logits"] = head(x)  # [B, classes]
    return x, out


def Model(num_classes=None, *, variant=None, **kw):  # pylint: disable=C0103
  """Builds big_vision's `bit_paper` (the BiT releases' ResNet-v2).

  Args:
    num_classes: size of the `head` (zero-initialised unless
      `head_zeroinit=False`); None: no head, the output is the pooled
      representation. BiT-M upstream heads have 21843 classes, BiT-S 1000.
    variant: optional "R<depth>x<width>", e.g. "R50x1", "R152x4".
    **kw: `_Model` fields: `depth` (26, 50, 101, 152, 200 or a list of
      units per stage), `width`, `head_zeroinit`, `root_pool_pad` ("-inf",
      big_vision's; "zero", the original BiT code's and timm's) and
      `dtype_mm`; they override the variant.

  `aux` holds "stem", "stage{i}" and "stage{i}/unit{jj}" (big_vision
  nests the unit outputs as a dict under "stage{i}"; here "stage{i}" is
  the stage's output, as in `bit`), "norm_pre_head", "pre_logits_2d",
  "pre_logits" and, with a head, "logits_2d" and "logits".
  """
  kw = bit.normalize_kwargs(variant, kw)
  if kw.get("root_pool_pad", "-inf") not in POOL_PADS:
    raise ValueError(f"Unknown root_pool_pad {kw['root_pool_pad']!r}; "
                     f"known: {POOL_PADS}.")
  return _Model(num_classes=num_classes, **kw)


Model.__signature__ = common.factory_signature(_Model, variant=None)
MODELS.register("bit_paper", Model)


# ------------------------------------------------ the BiT release files

_CONV = "standardized_conv2d"
_UNIT = re.compile(r"(block\d+)/(unit\d+)/([abc])/(.+)")


def _gn_leaf(value):
  return np.asarray(value).reshape(1, 1, 1, -1)


def _map_release_name(name, value):
  """One release name (without "resnet/") -> (path, value), or None."""
  name = re.sub(rf"/{_CONV}_\d+/", f"/{_CONV}/", name)  # Stray suffixes.
  if name == f"root_block/{_CONV}/kernel":
    return ("root_block", "conv_root", "kernel"), value
  if m := re.fullmatch(r"group_norm/(gamma|beta)", name):
    leaf = "scale" if m.group(1) == "gamma" else "bias"
    return ("norm-pre-head", leaf), _gn_leaf(value)
  if m := re.fullmatch(r"head/conv2d/(kernel|bias)", name):
    value = np.asarray(value)
    return ("head", m.group(1)), value.reshape(value.shape[-2:]) if (
        m.group(1) == "kernel") else value
  if not (m := _UNIT.fullmatch(name)):
    return None
  block, unit, part, rest = m.groups()
  n = "abc".index(part) + 1
  if rest == f"{_CONV}/kernel":
    return (block, unit, f"conv{n}", "kernel"), value
  if part == "a" and rest == f"proj/{_CONV}/kernel":
    return (block, unit, "conv_proj", "kernel"), value
  if g := re.fullmatch(r"group_norm/(gamma|beta)", rest):
    leaf = "scale" if g.group(1) == "gamma" else "bias"
    return (block, unit, f"gn{n}", leaf), _gn_leaf(value)
  return None


def from_big_transfer(params):
  """Renames a BiT release `.npz` tree (`resnet/...`) to `bit_paper` names.

  The files of the BiT paper (`BiT-M-R50x1.npz`, ...) name parameters as
  the original code: `resnet/root_block/standardized_conv2d/kernel`,
  `resnet/block{i}/unit{jj}/{a,b,c}/{standardized_conv2d/kernel,
  group_norm/gamma,group_norm/beta}`, `.../a/proj/standardized_conv2d/
  kernel`, `resnet/group_norm/*` (the pre-head norm) and
  `resnet/head/conv2d/*` (a 1x1 conv). Unit parts a, b, c are
  conv1/gn1, conv2/gn2, conv3/gn3. Trees without a `resnet` entry are
  returned unchanged (already big_vision's names).

  Args:
    params: nested dict (as `checkpoint.load_params` returns) or flat dict
      with `/`-joined names.

  Returns:
    A nested dict with `bit_paper.Model`'s param names.

  Raises:
    ValueError: naming every `resnet/` entry with no `bit_paper` param.
  """
  flat = tree_util.flatten(params)
  if not any(k.startswith("resnet/") for k in flat):
    return params
  out, unknown = {}, []
  for name, value in sorted(flat.items()):
    mapped = (_map_release_name(name[len("resnet/"):], value)
              if name.startswith("resnet/") else None)
    if mapped is None:
      unknown.append(name)
      continue
    path, value = mapped
    node = out
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = value
  if unknown:
    raise ValueError("from_big_transfer: entries that are not BiT ResNet-v2 "
                     f"params ({len(unknown)}): {unknown[:20]}.")
  return out
