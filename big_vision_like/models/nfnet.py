"""Normaliser-free ResNets (NFNet-F0..F7 and the wider F0+..F7+).

"High-Performance Large-Scale Image Recognition Without Normalization"
(Brock, De, Smith, Simonyan 2021), as in DeepMind's reference: a deep
"quad" stem, SE-ResNeXt-D style bottleneck blocks with two grouped 3x3
convs, scaled weight standardisation on every conv, activations scaled by
a gamma constant, and residual blocks

  x_{k+1} = x_k + alpha * skipinit_gain * f_k(beta_k * act(x_k)),

where beta_k = 1 / sqrt(Var[x_k]) is the analytically tracked expected
variance (it grows by alpha^2 per block and is reset at the first block of
each stage, whose shortcut is a conv of the scaled input). No batch
statistics are used anywhere.

Parameter names follow timm's `dm_nfnet_f*` layout (so its state dicts map
one-to-one, see `tools/convert_nfnet.py`), with DeepMind's 0-based stem:
`stem/conv0..conv3`, `stage_{i}/block_{j}/{conv1,conv2,conv2b,conv3,
downsample,attn_last/fc1,attn_last/fc2,skipinit_gain}`, `final_conv`, `head`.
Every conv holds `kernel` [kh, kw, in/groups, out], `bias` and `gain` [out].
"""

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from big_vision_like.models import common
from big_vision_like.registry import MODELS

# name: (depth multiplier k of BASE_DEPTHS, train res, test res, dropout).
VARIANTS = {
    "F0": (1, 192, 256, 0.2),
    "F1": (2, 224, 320, 0.3),
    "F2": (3, 256, 352, 0.4),
    "F3": (4, 320, 416, 0.4),
    "F4": (5, 384, 512, 0.5),
    "F5": (6, 416, 544, 0.5),
    "F6": (7, 448, 576, 0.5),
    "F7": (8, 480, 608, 0.5),
}
BASE_DEPTHS = (1, 2, 6, 3)
WIDTHS = (256, 512, 1536, 1536)
WIDTHS_PLUS = (384, 768, 2048, 2048)  # The "F0+".."F7+" variants.
STEM_WIDTHS = (16, 32, 64)  # Then a stride-2 conv to widths[0] // 2.
STAGE_STRIDES = (1, 2, 2, 2)
GROUP_SIZE = 128
BOTTLENECK = 0.5
SE_RATIO = 0.5
SE_GAIN = 2.0  # The SE gate is ~0.5 at init; x2 keeps the variance.
ALPHA = 0.2
FINAL_CONV_MULT = 2
WS_EPS = 1e-4
# Published parameter counts (1000 classes), from the paper's table.
PUBLISHED_PARAMS_M = {
    "F0": 71.5, "F1": 132.6, "F2": 193.8, "F3": 254.9,
    "F4": 316.1, "F5": 377.2, "F6": 438.4, "F7": 499.5,
}

# gamma = 1 / std(act(z)), z ~ N(0, 1): makes act(z) * gamma unit-variance.
# The values are DeepMind's (Monte-Carlo estimates, within 0.1% of the
# exact integrals; tests check that), kept as is for pretrained weights.
GAMMAS = {
    "identity": 1.0,
    "gelu": 1.7015043497085571,
    "relu": 1.7139588594436646,
    "silu": 1.7881293296813965,
    "elu": 1.2716004848480225,
    "tanh": 1.5939117670059204,
    "softplus": 1.9203323125839233,
    "sigmoid": 4.803835391998291,
}
# Exact (erf) gelu, as timm's port of the DeepMind weights.
_ACT_FNS = {
    "identity": lambda x: x,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
    "sigmoid": jax.nn.sigmoid,
}


def decode_variant(variant):
  """Decodes "F0".."F7" or "F0+".."F7+" into `_Model` keyword arguments."""
  if variant is None:
    return {}
  name = variant.removesuffix("+")
  if name not in VARIANTS:
    known = list(VARIANTS) + [f"{k}+" for k in VARIANTS]
    raise ValueError(f"Unknown NFNet variant {variant!r}. Known: {known}.")
  k, _, _, dropout = VARIANTS[name]
  return {"depths": tuple(k * d for d in BASE_DEPTHS),
          "widths": WIDTHS_PLUS if variant.endswith("+") else WIDTHS,
          "dropout": dropout}


def resolutions(variant):
  """(train, test) image sizes of a variant, e.g. (192, 256) for "F0"."""
  decode_variant(variant)  # Checks the name.
  _, train, test, _ = VARIANTS[variant.removesuffix("+")]
  return train, test


def activation(name):
  """The activation `name` times its gamma constant (unit output variance)."""
  if name not in GAMMAS:
    raise ValueError(f"Unknown activation {name!r}; known: {list(GAMMAS)}.")
  fn, gamma = _ACT_FNS[name], GAMMAS[name]
  return lambda x: fn(x) * jnp.asarray(gamma, x.dtype)


def expected_variances(depths, alpha=ALPHA):
  """Expected Var[x_k] at the input of every block k, in order.

  The stem output has unit variance; each block adds alpha^2; the first
  block of each stage (a transition: its shortcut is a conv of the
  unit-variance `beta * act(x)`) resets the running variance to 1 first.
  Each block's beta is 1 / sqrt of its entry.
  """
  out, var = [], 1.0
  for depth in depths:
    for j in range(depth):
      out.append(var)
      var = (1.0 if j == 0 else var) + alpha ** 2
  return out


def standardize(kernel, gain, eps=WS_EPS):
  """Scaled weight standardisation of an HWIO kernel (DeepMind's form).

  Returns (w - mean) * gain / sqrt(max(fan_in * var, eps)), with mean and
  var over the fan-in axes (all but the last), so each output unit has zero
  mean and fan-in-normalised unit norm, times its learned gain.
  """
  fan_in = np.prod(kernel.shape[:-1])
  mean = jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
  var = jnp.var(kernel, axis=(0, 1, 2), keepdims=True)
  scale = jax.lax.rsqrt(jnp.maximum(var * fan_in, eps)) * gain
  return kernel * scale - mean * scale


def _padding(mode, k):
  if mode == "SAME":
    return "SAME"
  if mode == "symmetric":
    return [(k // 2, k // 2)] * 2
  raise ValueError(f"Unknown conv_padding {mode!r}; known: 'SAME' "
                   "(TF/DeepMind), 'symmetric' (PyTorch).")


class WSConv(nn.Module):
  """Conv with scaled weight standardisation, learnable gain and bias."""
  features: int
  kernel_size: int = 1
  strides: int = 1
  groups: int = 1
  eps: float = WS_EPS
  dtype_mm: str = "float32"
  padding: str = "SAME"  # Or "symmetric": k // 2 on each side (PyTorch).

  @nn.compact
  def __call__(self, x):
    """x: [B, H, W, C] -> [B, ceil(H / strides), ceil(W / strides), O]."""
    k, cin = self.kernel_size, x.shape[-1]
    if cin % self.groups:
      raise ValueError(f"{cin} input channels do not split into "
                       f"{self.groups} groups.")
    kernel = self.param(
        "kernel", nn.initializers.variance_scaling(1.0, "fan_in", "normal"),
        (k, k, cin // self.groups, self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    gain = self.param("gain", nn.initializers.ones, (self.features,))
    dtype = common.to_dtype(self.dtype_mm)
    w = standardize(kernel, gain, self.eps).astype(dtype)  # [k, k, I/g, O]
    y = jax.lax.conv_general_dilated(
        x.astype(dtype), w, (self.strides,) * 2, _padding(self.padding, k),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=self.groups)
    return y + bias.astype(y.dtype)


class SqueezeExcite(nn.Module):
  """x * sigmoid(fc2(relu(fc1(mean_hw(x))))); fc1 has `hidden` units."""
  hidden: int
  dtype_mm: str = "float32"

  @nn.compact
  def __call__(self, x):
    """x: [B, H, W, C] -> [B, H, W, C]."""
    dtype = common.to_dtype(self.dtype_mm)
    h = jnp.mean(x, axis=(1, 2))  # [B, C]
    h = nn.relu(nn.Dense(self.hidden, dtype=dtype, name="fc1")(h))
    h = nn.Dense(x.shape[-1], dtype=dtype, name="fc2")(h)  # [B, C]
    return x * nn.sigmoid(h)[:, None, None, :].astype(x.dtype)


def _drop_path(x, rate, rng):
  """DeepMind's stochastic depth: zeroes whole examples, no rescaling."""
  keep = jax.random.bernoulli(rng, 1.0 - rate, (x.shape[0], 1, 1, 1))
  return jnp.where(keep, x, jnp.zeros_like(x))


class BlockSpec(NamedTuple):
  """Static description of one NF block."""
  out_ch: int
  mid_ch: int
  groups: int
  stride: int
  beta: float
  drop_path: float


class NFBlock(nn.Module):
  """Pre-activation bottleneck: x + alpha * gain * SE(convs(beta * act(x)))."""
  spec: BlockSpec
  alpha: float = ALPHA
  se_ratio: float = SE_RATIO
  act: str = "gelu"
  eps: float = WS_EPS
  dtype_mm: str = "float32"
  padding: str = "SAME"

  def _conv(self, ch, k, name, strides=1, groups=1):
    return WSConv(ch, k, strides, groups, self.eps, self.dtype_mm,
                  self.padding, name=name)

  @nn.compact
  def __call__(self, x, train=False):
    """x: [B, H, W, Cin] -> [B, H / stride, W / stride, out_ch]."""
    s, act = self.spec, activation(self.act)
    out = act(x) * s.beta  # [B, H, W, Cin], ~unit variance
    shortcut = x
    if s.stride > 1 or x.shape[-1] != s.out_ch:
      pooled = out
      if s.stride > 1:
        pooled = nn.avg_pool(out, (s.stride,) * 2, (s.stride,) * 2, "SAME",
                             count_include_pad=False)
      shortcut = self._conv(s.out_ch, 1, "downsample")(pooled)
    y = self._conv(s.mid_ch, 1, "conv1")(out)  # [B, H, W, mid]
    y = self._conv(s.mid_ch, 3, "conv2", s.stride, s.groups)(act(y))
    y = self._conv(s.mid_ch, 3, "conv2b", 1, s.groups)(act(y))
    y = self._conv(s.out_ch, 1, "conv3")(act(y))  # [B, h, w, out]
    hidden = max(1, int(s.out_ch * self.se_ratio))
    y = SE_GAIN * SqueezeExcite(hidden, self.dtype_mm, name="attn_last")(y)
    if train and s.drop_path > 0.0:
      y = _drop_path(y, s.drop_path, self.make_rng("dropout"))
    gain = self.param("skipinit_gain", nn.initializers.zeros, ())
    return shortcut + y * (self.alpha * gain).astype(y.dtype)


class NFStage(nn.Module):
  """A sequence of NF blocks `block_0..`; returns the output and each one's.

  With `remat`, every block is checkpointed with `remat_policy` (a
  `common.REMAT_POLICIES` name); see `_Model`.
  """
  specs: tuple[BlockSpec, ...]
  block_kw: Any = None
  remat: bool = False
  remat_policy: str = "nothing_saveable"

  @nn.compact
  def __call__(self, x, train=False):
    """x: [B, H, W, C] -> ([B, h, w, D], [per-block outputs])."""
    # `train` (argument 2, after self and x) is a Python bool: static.
    block = common.maybe_remat(NFBlock, self.remat, self.remat_policy, (2,))
    outs = []
    for j, spec in enumerate(self.specs):
      x = block(spec, **(self.block_kw or {}), name=f"block_{j}")(x, train)
      outs.append(x)
    return x, outs


class Stem(nn.Module):
  """Four 3x3 WS convs, strides 2, 1, 1, 2, activations in between."""
  widths: tuple[int, ...]
  act: str = "gelu"
  eps: float = WS_EPS
  dtype_mm: str = "float32"
  padding: str = "SAME"

  @nn.compact
  def __call__(self, x):
    """x: [B, H, W, 3] -> [B, H/4, W/4, widths[-1]]."""
    strides = (2, 1, 1, 2)
    for i, (ch, st) in enumerate(zip(self.widths, strides)):
      if i:
        x = activation(self.act)(x)
      x = WSConv(ch, 3, st, 1, self.eps, self.dtype_mm, self.padding,
                 name=f"conv{i}")(x)
    return x


def _scaled(ch, mult):
  return max(1, int(ch * mult))


def block_specs(depths, widths, *, alpha=ALPHA, group_size=GROUP_SIZE,
                bottleneck=BOTTLENECK, drop_path=0.0, strides=STAGE_STRIDES):
  """Per-stage tuples of `BlockSpec` (channels, groups, stride, beta, rate).

  The bottleneck width is `out * bottleneck` rounded down to a multiple of
  `group_size` (one group when it is narrower). Stochastic-depth rates grow
  linearly with the block index: `drop_path * k / num_blocks`.
  """
  betas = [float(v ** -0.5) for v in expected_variances(depths, alpha)]
  total, k, stages = sum(depths), 0, []
  for i, (depth, out_ch) in enumerate(zip(depths, widths)):
    mid = int(out_ch * bottleneck)
    groups = max(1, mid // group_size)
    mid = groups * group_size if mid >= group_size else mid
    specs = []
    for j in range(depth):
      stride = strides[i] if j == 0 else 1
      specs.append(BlockSpec(out_ch, mid, groups, stride, betas[k],
                             drop_path * k / total))
      k += 1
    stages.append(tuple(specs))
  return tuple(stages)


class _Model(nn.Module):
  """NFNet. `apply(..., images [B, H, W, 3], train=False)` -> (out, aux)."""
  num_classes: int | None = None
  depths: tuple[int, ...] = BASE_DEPTHS
  widths: tuple[int, ...] = WIDTHS
  strides: tuple[int, ...] = STAGE_STRIDES  # Of each stage's first block.
  width_mult: float = 1.0  # Scales the stem and stage widths.
  stem_widths: tuple[int, ...] = STEM_WIDTHS
  group_size: int = GROUP_SIZE
  bottleneck: float = BOTTLENECK
  se_ratio: float = SE_RATIO
  alpha: float = ALPHA
  act: str = "gelu"
  dropout: float = 0.2  # Before the head; the variants set theirs.
  # Stochastic depth: block k of n drops its branch with drop_path * k / n
  # (0.25: DeepMind's ImageNet recipe).
  drop_path: float = 0.25
  final_conv_mult: float = FINAL_CONV_MULT
  ws_eps: float = WS_EPS
  conv_padding: str = "SAME"  # "symmetric" for timm's (non-dm_) nfnet_f*.
  head_zeroinit: bool = True
  dtype_mm: str = "float32"
  remat: bool = False  # Checkpoint every block (see `Model`).
  remat_policy: str = "nothing_saveable"  # A common.REMAT_POLICIES name.

  def _stage_widths(self):
    return tuple(_scaled(w, self.width_mult) for w in self.widths)

  @nn.compact
  def __call__(self, image, *, train=False):
    """image: [B, H, W, 3] float -> (logits or representation, aux dict)."""
    out = {}
    conv_kw = {"eps": self.ws_eps, "dtype_mm": self.dtype_mm,
               "padding": self.conv_padding}
    stem = tuple(_scaled(w, self.width_mult)
                 for w in (*self.stem_widths, self.widths[0] // 2))
    x = out["stem"] = Stem(stem, self.act, name="stem", **conv_kw)(
        image)  # [B, H/4, W/4, C0/2]
    stages = block_specs(
        self.depths, self._stage_widths(), alpha=self.alpha,
        group_size=self.group_size, bottleneck=self.bottleneck,
        drop_path=self.drop_path, strides=self.strides)
    block_kw = dict(alpha=self.alpha, se_ratio=self.se_ratio, act=self.act,
                    **conv_kw)
    k = 0
    for i, specs in enumerate(stages):
      x, block_outs = NFStage(specs, block_kw, self.remat, self.remat_policy,
                              name=f"stage_{i}")(x, train)
      for y in block_outs:
        out[f"block_{k}"], k = y, k + 1
      out[f"stage_{i}"] = x  # [B, h_i, w_i, C_i]

    final = int(self.final_conv_mult * x.shape[-1])
    x = WSConv(final, 1, name="final_conv", **conv_kw)(x)
    x = out["final_conv"] = activation(self.act)(x)  # [B, h, w, 2 C_3]
    x = out["pre_logits"] = jnp.mean(x, axis=(1, 2))  # [B, 2 C_3]
    x = nn.Dropout(rate=self.dropout)(x, not train)
    if self.num_classes:
      x = out["logits"] = common.head(self.num_classes, self.head_zeroinit)(
          x)  # [B, num_classes]
    return x, out


def Model(num_classes=None, *, variant="F0", **kw):  # pylint: disable=C0103
  """Builds an NFNet; `variant` ("F0".."F7", "F0+".."F7+") sets its size.

  Explicit keyword arguments override what the variant decodes to (e.g.
  `dropout`, or `width_mult=0.25` for a small test model). With
  `train=True`, dropout and stochastic depth draw from the "dropout" rng.
  `aux` holds "stem", "block_{k}", "stage_{i}", "final_conv", "pre_logits"
  (pooled features) and, with a head, "logits".

  `remat=True` checkpoints every block (`nn.remat`): the backward pass
  recomputes the activations that `remat_policy` (default
  "nothing_saveable"; any name in `common.REMAT_POLICIES`, e.g.
  "dots_saveable") does not save. Outputs, gradients and param names are
  the same as without it; it trades compute for memory.
  """
  return _Model(num_classes=num_classes, **{**decode_variant(variant), **kw})


Model.__signature__ = common.factory_signature(_Model, variant="F0")
MODELS.register("nfnet", Model)
