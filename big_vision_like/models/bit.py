"""ResNet-v1 with GroupNorm and weight standardisation (big_vision's `bit`).

The post-activation ResNet of "Big Transfer (BiT)" (Kolesnikov et al. 2020)
as big_vision trains it from scratch: every conv is weight-standardised
(zero mean, unit standard deviation over its fan-in) and followed by a
32-group GroupNorm; bottleneck units put the stride on the 3x3 conv and
the ReLU after the residual sum. For the pre-activation ResNet-v2 of the
released BiT weights see `bit_paper.py`.

Parameter names are big_vision's, so its `.npz` checkpoints load as they are:

  conv_root/kernel [7, 7, 3, W]          gn_root/{scale,bias} [W]
  block{i}/unit{j}/conv1/kernel [1, 1, C, m]   .../gn1/{scale,bias} [m]
  block{i}/unit{j}/conv2/kernel [3, 3, m, m]   .../gn2/{scale,bias} [m]
  block{i}/unit{j}/conv3/kernel [1, 1, m, 4m]  .../gn3/{scale,bias} [4m]
  block{i}/unit1/conv_proj/kernel [1, 1, C, 4m], .../gn_proj/{scale,bias}
  head/{kernel,bias}

with W = 64 * width, m = W * 2^(i-1) in stage i = 1..4, units numbered
from 1 without padding (`unit1`, `unit2`, ...). Convs have no bias.
"""

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp

from big_vision_like.models import common
from big_vision_like.registry import MODELS

# Units per stage of the standard depths (26 from timm; no 18/34: those
# need basic, non-bottleneck units).
BLOCKS = {
    26: (2, 2, 2, 2),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}
WS_EPS = 1e-5  # Added to the kernel's standard deviation (not inside sqrt).
GN_GROUPS = 32
_VARIANT = re.compile(r"R(\d+)x(\d+(?:\.\d+)?)")


def block_counts(depth):
  """Units per stage: a `BLOCKS` depth (26, 50, ...) or a list of counts."""
  if isinstance(depth, int):
    if depth not in BLOCKS:
      raise ValueError(f"Unknown BiT depth {depth}; known: {sorted(BLOCKS)}, "
                       "or a list of units per stage, e.g. [3, 4, 6, 3].")
    return BLOCKS[depth]
  try:
    counts = tuple(int(n) for n in depth)
  except (TypeError, ValueError):
    raise ValueError(f"BiT depth must be one of {sorted(BLOCKS)} or a list "
                     f"of units per stage, got {depth!r}.") from None
  if not counts or any(n < 1 for n in counts) or counts != tuple(depth):
    raise ValueError(f"BiT depth {depth!r}: every stage needs a whole number "
                     "of units >= 1.")
  return counts


def decode_variant(variant):
  """"R50x1", "R101x3", "R152x4", ... -> dict(depth=..., width=...)."""
  if variant is None:
    return {}
  m = _VARIANT.fullmatch(variant)
  if not m or int(m.group(1)) not in BLOCKS:
    raise ValueError(f"Unknown BiT variant {variant!r}; expected R<depth>x"
                     f"<width> with depth in {sorted(BLOCKS)}, e.g. 'R50x1'.")
  width = float(m.group(2))
  return {"depth": int(m.group(1)),
          "width": int(width) if width.is_integer() else width}


def standardize(kernel, eps=WS_EPS):
  """big_vision `bit`'s weight standardisation of an HWIO kernel.

  (w - mean) / (std + eps), mean and (biased) std over the fan-in axes
  (0, 1, 2), per output channel.
  """
  w = kernel - jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
  return w / (jnp.std(w, axis=(0, 1, 2), keepdims=True) + eps)


def stem_width(width):
  """Channels of the root conv, int(64 * width), checked against GroupNorm."""
  w = int(64 * width)
  if w < GN_GROUPS or w % GN_GROUPS:
    raise ValueError(f"BiT width={width} gives {w} root channels; GroupNorm "
                     f"needs a multiple of {GN_GROUPS} (width a multiple of "
                     "0.5).")
  return w


class StdConv(nn.Module):
  """Bias-free conv of a standardised kernel (`standardize_fn(kernel)`).

  `padding` is "SAME" (TF/flax) or an int p, p rows/columns on each side.
  The kernel is standardised in float32, then both operands are cast to
  `dtype_mm`.
  """
  features: int
  kernel_size: int = 1
  strides: int = 1
  padding: str | int = "SAME"
  standardize_fn: object = standardize
  dtype_mm: str = "float32"

  @nn.compact
  def __call__(self, x):
    """x: [B, H, W, C] -> [B, H', W', features]."""
    k = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (k, k, x.shape[-1], self.features))  # HWIO
    dtype = common.to_dtype(self.dtype_mm)
    w = self.standardize_fn(kernel.astype(jnp.float32)).astype(dtype)
    pad = self.padding
    pad = pad if isinstance(pad, str) else [(pad, pad), (pad, pad)]
    return jax.lax.conv_general_dilated(
        x.astype(dtype), w, (self.strides,) * 2, pad,
        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def group_norm(x, groups, eps):
  """Standardises x [B, H, W, C] over H, W and each group of C / groups
  channels: (x - mean) / sqrt(mean((x - mean)^2) + eps), in float32."""
  b, h, w, c = x.shape
  if c % groups:
    raise ValueError(f"GroupNorm({groups} groups): {c} channels do not "
                     "split into equal groups.")
  g = x.astype(jnp.float32).reshape(b, h, w, groups, c // groups)
  g = g - jnp.mean(g, axis=(1, 2, 4), keepdims=True)
  var = jnp.mean(jnp.square(g), axis=(1, 2, 4), keepdims=True)
  return (g / jnp.sqrt(var + eps)).reshape(b, h, w, c)


class GroupNorm(nn.Module):
  """GroupNorm with a learned per-channel `scale` and `bias`.

  The defaults are flax's `nn.GroupNorm` as big_vision's `bit` uses it (32
  groups, eps 1e-6, params of shape [C]); the variance is computed in two
  passes (flax's default one-pass E[x^2] - E[x]^2 is the same function
  up to float rounding, less accurate when |mean| >> std).
  """
  groups: int = GN_GROUPS
  eps: float = 1e-6
  zero_scale: bool = False  # The last norm of a residual branch.
  params_4d: bool = False  # [1, 1, 1, C] params (bit_paper) instead of [C].

  @nn.compact
  def __call__(self, x):
    """x: [B, H, W, C] -> [B, H, W, C] float32."""
    c = x.shape[-1]
    shape = (1, 1, 1, c) if self.params_4d else (c,)
    init = nn.initializers.zeros if self.zero_scale else nn.initializers.ones
    scale = self.param("scale", init, shape)
    bias = self.param("bias", nn.initializers.zeros, shape)
    return group_norm(x, self.groups, self.eps) * scale + bias


def _gn(name, zero_scale=False):
  return GroupNorm(zero_scale=zero_scale, name=name)


class ResidualUnit(nn.Module):
  """Post-activation bottleneck, the stride on the 3x3 conv:

    y = relu(gn1(conv1(x))); y = relu(gn2(conv2(y))); y = gn3(conv3(y))
    out = relu(proj(x) + y)

  with `proj` = gn_proj(conv_proj(.)) where the shape changes, else identity.
  """
  nmid: int
  strides: int = 1
  dtype_mm: str = "float32"

  @nn.compact
  def __call__(self, x):
    """x: [B, H, W, C] -> [B, H / strides, W / strides, 4 nmid]."""
    nout = 4 * self.nmid
    conv = functools.partial(StdConv, dtype_mm=self.dtype_mm)
    residual = x
    if x.shape[-1] != nout or self.strides != 1:
      residual = conv(nout, 1, self.strides, name="conv_proj")(x)
      residual = _gn("gn_proj")(residual)  # [B, h, w, 4m]
    y = nn.relu(_gn("gn1")(conv(self.nmid, 1, name="conv1")(x)))
    y = conv(self.nmid, 3, self.strides, name="conv2")(y)  # [B, h, w, m]
    y = nn.relu(_gn("gn2")(y))
    y = _gn("gn3", zero_scale=True)(conv(nout, 1, name="conv3")(y))
    return nn.relu(residual + y)


class ResNetStage(nn.Module):
  """`units` residual units `unit1..`, the first one strided."""
  units: int
  nmid: int
  first_stride: int = 1
  dtype_mm: str = "float32"

  @nn.compact
  def __call__(self, x):
    """x: [B, H, W, C] -> [B, H / first_stride, W / first_stride, 4 nmid]."""
    for j in range(self.units):
      x = ResidualUnit(self.nmid, self.first_stride if j == 0 else 1,
                       self.dtype_mm, name=f"unit{j + 1}")(x)
    return x


class _Model(nn.Module):
  """ResNet-v1 + GN + WS. `apply(..., image [B, H, W, C])` -> (out, aux)."""
  num_classes: int | None = None
  width: float = 1
  depth: int | tuple[int, ...] = 50
  head_zeroinit: bool = True
  dtype_mm: str = "float32"

  @nn.compact
  def __call__(self, image, *, train=False):
    """image: [B, H, W, C] float -> (logits or pre-logits, aux dict)."""
    del train  # No dropout, no batch statistics.
    blocks, width = block_counts(self.depth), stem_width(self.width)
    out = {}
    x = StdConv(width, 7, 2, dtype_mm=self.dtype_mm, name="conv_root")(image)
    x = nn.relu(_gn("gn_root")(x))  # [B, H/2, W/2, W]
    x = out["stem"] = nn.max_pool(x, (3, 3), (2, 2), "SAME")  # [B, H/4, ...]
    for i, units in enumerate(blocks):
      x = out[f"stage{i + 1}"] = ResNetStage(
          units, width * 2 ** i, 1 if i == 0 else 2, self.dtype_mm,
          name=f"block{i + 1}")(x)  # [B, h_i, w_i, 4 W 2^i]
    out["pre_logits_2d"] = x
    x = out["pre_logits"] = jnp.mean(x, axis=(1, 2))  # [B, 4 W 2^(n-1)]
    if self.num_classes:
      head = common.head(self.num_classes, self.head_zeroinit)
      out["logits_2d"] = head(out["pre_logits_2d"])  # [B, h, w, classes]
      x = out["logits"] = head(x)  # [B, classes]
    return x, out


def normalize_kwargs(variant, kw):
  """The variant's depth/width overridden by `kw`; depth checked, a tuple."""
  kw = {**decode_variant(variant), **kw}
  if "depth" in kw:
    depth = kw["depth"]
    kw["depth"] = depth if isinstance(depth, int) else block_counts(depth)
    block_counts(kw["depth"])  # Names an unknown depth now, not at init.
  if "width" in kw:
    stem_width(kw["width"])
  return kw


def Model(num_classes=None, *, variant=None, **kw):  # pylint: disable=C0103
  """Builds big_vision's `bit` (ResNet-v1, GroupNorm, weight standardisation).

  Args:
    num_classes: size of the zero-initialised `head` (`head_zeroinit`);
      None: no head, the output is the pooled representation.
    variant: optional "R<depth>x<width>", e.g. "R50x1", "R101x3".
    **kw: `_Model` fields: `depth` (26, 50, 101, 152, 200 or a list of
      units per stage), `width` (multiplier of 64 root channels),
      `head_zeroinit`, `dtype_mm`; they override the variant.

  `aux` holds "stem", "stage1".."stage4", "pre_logits_2d" (the last
  stage's map), "pre_logits" (its spatial mean) and, with a head,
  "logits_2d" (the head on every position) and "logits".
  """
  return _Model(num_classes=num_classes, **normalize_kwargs(variant, kw))


Model.__signature__ = common.factory_signature(_Model, variant=None)
MODELS.register("bit", Model)
