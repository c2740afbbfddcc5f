"""MLP-Mixer with big_vision's arguments and parameter names.

"MLP-Mixer: An all-MLP Architecture for Vision" (Tolstikhin et al. 2021).
Released big_vision / Mixer-paper `.npz` checkpoints load with
`checkpoint.load_params` and give the same outputs. Params:

- `stem/{kernel,bias}`: the patch conv, kernel [ph, pw, 3, D], stride = patch
- `MixerBlock_{i}/LayerNorm_0/{scale,bias}` [D]
- `MixerBlock_{i}/token_mixing/Dense_0/kernel` [tokens, tokens_mlp_dim],
  `.../Dense_1/kernel` [tokens_mlp_dim, tokens] (and biases): the token MLP,
  applied to the transposed [B, D, tokens] view, so the param shapes fix
  the number of patches (the image size)
- `MixerBlock_{i}/LayerNorm_1/...`, `MixerBlock_{i}/channel_mixing/Dense_0`
  [D, channels_mlp_dim], `.../Dense_1` [channels_mlp_dim, D]
- `pre_head_layer_norm/{scale,bias}`, then the mean over tokens, then
  `head/{kernel,bias}` (zero-initialised) when `num_classes` is set.

`aux` holds "stem" [B, h, w, D], "input_tokens" [B, h*w, D], "block_{i}"
[B, h*w, D], "pre_logits" [B, D] and, with a head, "logits".

Stochastic depth is big_vision's: block i of N drops each of its two
residual branches, per example, with probability
`stoch_depth * i / max(N - 1, 1)` (the first block never), and the kept
branches are NOT rescaled (unlike timm's DropPath, which divides by the keep
probability). Eval (`train=False`) never drops.

Options for weights trained elsewhere, off by default: `gelu="erf"` for
timm's exact GELU (big_vision, like flax's `nn.gelu`, uses the tanh
approximation, `gelu="tanh"`); both use LayerNorm eps 1e-6.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from big_vision_like.models import common, vit
from big_vision_like.registry import MODELS

# name: (hidden_dim, num_blocks, tokens_mlp_dim, channels_mlp_dim), paper's
# Table 1.
VARIANTS = {
    "S": (512, 8, 256, 2048),
    "B": (768, 12, 384, 3072),
    "L": (1024, 24, 512, 4096),
    "H": (1280, 32, 640, 5120),
}
# Published parameter counts in millions at 224px with a 1000-class head
# (timm's model cards of the Mixer-paper weights; the paper rounds down).
PUBLISHED_PARAMS_M = {"S/32": 19.1, "S/16": 18.5, "B/32": 60.3, "B/16": 59.9,
                      "L/32": 206.9, "L/16": 208.2}


def decode_variant(variant):
  """Decodes "B/16" (or "B") into `_Model` keyword arguments."""
  if variant is None:
    return {}
  name, _, patch = variant.partition("/")
  if name not in VARIANTS:
    raise ValueError(f"Unknown MLP-Mixer variant {name!r} (in {variant!r}). "
                     f"Known: {list(VARIANTS)}, e.g. 'B/16'.")
  hidden, blocks, tokens, channels = VARIANTS[name]
  out = {"hidden_dim": hidden, "num_blocks": blocks,
         "tokens_mlp_dim": tokens, "channels_mlp_dim": channels}
  if patch:
    if not patch.isdigit():
      raise ValueError(f"Bad patch size {patch!r} in MLP-Mixer variant "
                       f"{variant!r}; expected e.g. 'B/16'.")
    out["patch_size"] = (int(patch), int(patch))
  return out


def stoch_depth_rates(num_blocks, stoch_depth):
  """Per-block drop probabilities: linear from 0 to `stoch_depth`."""
  return [stoch_depth * i / max(num_blocks - 1, 1) for i in range(num_blocks)]


def _keep_mask(rng, rate, x):
  """A [B, 1, ...] float mask: 0 for dropped examples (prob. `rate`), else 1."""
  shape = (x.shape[0],) + (1,) * (x.ndim - 1)
  return 1.0 - jax.random.bernoulli(rng, rate, shape).astype(x.dtype)


class MlpBlock(nn.Module):
  """Dense(mlp_dim) -> GELU -> Dense(input width), over the last axis."""
  mlp_dim: int
  gelu: str = "tanh"
  dtype_mm: str = "float32"

  @nn.compact
  def __call__(self, x):
    """x: [..., N] -> [..., N]."""
    dtype = common.to_dtype(self.dtype_mm)
    dense = functools.partial(nn.Dense, dtype=dtype,
                              dot_general=common.dot_general)
    y = dense(self.mlp_dim)(x)  # [..., mlp_dim]
    y = vit.gelu_fn(self.gelu)(y)
    return dense(x.shape[-1])(y)  # [..., N]


class MixerBlock(nn.Module):
  """x + token_mixing(LN(x)^T)^T, then x + channel_mixing(LN(x))."""
  tokens_mlp_dim: int
  channels_mlp_dim: int
  drop_p: float = 0.0
  gelu: str = "tanh"
  dtype_mm: str = "float32"

  def _drop(self, y, train):
    if train and self.drop_p > 0.0:
      return y * _keep_mask(self.make_rng("dropout"), self.drop_p, y)
    return y

  @nn.compact
  def __call__(self, x, *, train=False):
    """x: [B, L, D] -> [B, L, D]."""
    kw = {"gelu": self.gelu, "dtype_mm": self.dtype_mm}
    y = nn.LayerNorm(epsilon=1e-6)(x)
    y = jnp.swapaxes(y, 1, 2)  # [B, D, L]: mix over tokens
    y = MlpBlock(self.tokens_mlp_dim, name="token_mixing", **kw)(y)
    x = x + self._drop(jnp.swapaxes(y, 1, 2), train)  # [B, L, D]
    y = nn.LayerNorm(epsilon=1e-6)(x)
    y = MlpBlock(self.channels_mlp_dim, name="channel_mixing", **kw)(y)
    return x + self._drop(y, train)  # [B, L, D]


class _Model(nn.Module):
  """MLP-Mixer. `apply(..., images [B, H, W, C], train=False)` -> (out, aux)."""
  num_classes: int | None = None
  patch_size: Any = (16, 16)
  num_blocks: int = 12
  hidden_dim: int = 768
  tokens_mlp_dim: int = 384
  channels_mlp_dim: int = 3072
  stoch_depth: float = 0.0  # Drop rate of the last block (see docstring).
  head_zeroinit: bool = True
  head_bias_init: float = 0.0  # E.g. -6.9 = -log(1000) (big_vision's recipe).
  gelu: str = "tanh"  # vit.GELUS; "erf" for timm's weights.
  dtype_mm: str = "float32"

  @nn.compact
  def __call__(self, image, *, train=False):
    """image: [B, H, W, C] float -> (logits or representation, aux dict)."""
    out = {}
    ps = self.patch_size
    ps = (ps, ps) if isinstance(ps, int) else tuple(ps)
    x = out["stem"] = nn.Conv(
        self.hidden_dim, ps, strides=ps, padding="SAME", name="stem",
        dtype=common.to_dtype(self.dtype_mm))(image)  # [B, h, w, D]
    b, h, w, d = x.shape
    x = out["input_tokens"] = jnp.reshape(x, (b, h * w, d))  # [B, L, D]
    rates = stoch_depth_rates(self.num_blocks, self.stoch_depth)
    for i, rate in enumerate(rates):
      x = out[f"block_{i}"] = MixerBlock(
          self.tokens_mlp_dim, self.channels_mlp_dim, rate, self.gelu,
          self.dtype_mm, name=f"MixerBlock_{i}")(x, train=train)
    x = nn.LayerNorm(epsilon=1e-6, name="pre_head_layer_norm")(x)
    x = out["pre_logits"] = jnp.mean(x, axis=1)  # [B, D]
    if self.num_classes:
      x = out["logits"] = nn.Dense(
          self.num_classes, name="head",
          kernel_init=(nn.initializers.zeros if self.head_zeroinit
                       else nn.linear.default_kernel_init),
          bias_init=nn.initializers.constant(self.head_bias_init),
      )(x)  # [B, num_classes]
    return x, out


def Model(num_classes=None, *, variant="B/16", **kw):  # pylint: disable=C0103
  """Builds an MLP-Mixer; `variant` ("S/32", "B/16", "L/16", "H/14", ...).

  Explicit keyword arguments (`patch_size`, `num_blocks`, `hidden_dim`,
  `tokens_mlp_dim`, `channels_mlp_dim`, ...) override what the variant
  decodes to; `variant=None` uses only them (B/16 sizes by default). With
  `train=True`, stochastic depth draws from the "dropout" rng.
  """
  return _Model(num_classes=num_classes, **{**decode_variant(variant), **kw})


Model.__signature__ = common.factory_signature(_Model, variant="B/16")
MODELS.register("mlp_mixer", Model)
