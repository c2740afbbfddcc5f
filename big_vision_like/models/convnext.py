"""ConvNeXt (V1 and V2).

"A ConvNet for the 2020s" (Liu et al. 2022) and "ConvNeXt V2: Co-designing
and Scaling ConvNets with Masked Autoencoders" (Woo et al. 2023): a
patchify stem (4x4 conv, stride 4, then LayerNorm), four stages of blocks

  x + drop_path(layerscale * fc2(GRN(gelu(fc1(LN(dwconv7x7(x)))))))

(V1: no GRN, LayerScale initialised to 1e-6; V2: GRN, no LayerScale), a
LayerNorm + 2x2/2 conv between stages, global average pooling, a LayerNorm
and the classifier. Every LayerNorm has eps 1e-6 (`norm_eps`); GELU is the
exact (erf) one, as the papers' PyTorch code (`gelu="tanh"` is flax's).

Variants: "T", "S", "B", "L", "XL" (V1 paper, Table 1 / Sec. 2.6), timm's
smaller "A" (atto), "F" (femto), "P" (pico), "N" (nano); V2 as "V2-A",
"V2-F", "V2-P", "V2-N", "V2-T", "V2-B", "V2-L", "V2-H" (V2 paper, Table 3).
Explicit `depths` / `dims` / ... override what a variant decodes to.

Params (the names are part of the interface; `tools/convert_convnext.py`
maps timm's state dicts onto them):

- `stem/conv/{kernel [p, p, 3, C0], bias}`, `stem/norm/{scale,bias}`
- `stage{i}/downsample/norm/{scale,bias}`, `stage{i}/downsample/conv/
  {kernel [2, 2, C_{i-1}, C_i], bias}` for stages i = 1, 2, 3
- `stage{i}/block{j}/dwconv/{kernel [k, k, 1, C], bias}` (depthwise),
  `.../norm/{scale,bias}`, `.../fc1/{kernel [C, 4C], bias}`,
  `.../grn/{gamma,beta}` [4C] (V2 only), `.../fc2/{kernel [4C, C], bias}`,
  `.../layerscale` [C] (when `layerscale` is not None)
- `head_norm/{scale,bias}`, then `head/{kernel,bias}` with `num_classes`.

`aux`: "stem" [B, H/4, W/4, C0], "stage{i}" (i = 0..3, each stage's
output), "pre_logits" [B, C3] (pooled, after `head_norm`) and "logits".

Stochastic depth (`drop_path`, the rate of the last block, linear from 0
over all blocks as in the papers) zeroes a block's residual branch for a
whole example and scales the kept ones by 1 / (1 - rate), as timm's
DropPath; it only acts with `train=True` (rng "dropout").
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from big_vision_like.models import common, vit
from big_vision_like.registry import MODELS

# name: (depths, dims).
SIZES = {
    "A": ((2, 2, 6, 2), (40, 80, 160, 320)),
    "F": ((2, 2, 6, 2), (48, 96, 192, 384)),
    "P": ((2, 2, 6, 2), (64, 128, 256, 512)),
    "N": ((2, 2, 8, 2), (80, 160, 320, 640)),
    "T": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "S": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "B": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "L": ((3, 3, 27, 3), (192, 384, 768, 1536)),
    "XL": ((3, 3, 27, 3), (256, 512, 1024, 2048)),
    "H": ((3, 3, 27, 3), (352, 704, 1408, 2816)),
}
V1_SIZES = ("A", "F", "P", "N", "T", "S", "B", "L", "XL")
V2_SIZES = ("A", "F", "P", "N", "T", "B", "L", "H")
VARIANTS = V1_SIZES + tuple(f"V2-{s}" for s in V2_SIZES)
# Parameter counts in millions at 224px with a 1000-class head (timm's
# model cards; the V1 paper rounds them to 28, 50, 89, 198, 350).
PUBLISHED_PARAMS_M = {"T": 28.6, "S": 50.2, "B": 88.6, "L": 197.8,
                      "XL": 350.2, "V2-A": 3.7, "V2-T": 28.6}
LAYERSCALE_INIT = 1e-6


def decode_variant(variant):
  """Decodes "T" or "V2-T" (...) into `_Model` keyword arguments."""
  if variant is None:
    return {}
  if variant not in VARIANTS:
    raise ValueError(f"Unknown ConvNeXt variant {variant!r}. Known: "
                     f"{list(VARIANTS)}.")
  v2 = variant.startswith("V2-")
  depths, dims = SIZES[variant.removeprefix("V2-")]
  return {"depths": depths, "dims": dims, "grn": v2,
          "layerscale": None if v2 else LAYERSCALE_INIT}


def drop_path_rates(depths, drop_path):
  """Per-stage tuples of block drop rates: linear from 0 over all blocks."""
  rates = np.linspace(0.0, drop_path, sum(depths)).tolist()
  out, k = [], 0
  for d in depths:
    out.append(tuple(rates[k:k + d]))
    k += d
  return tuple(out)


def drop_path(x, rate, rng):
  """Zeroes x for whole examples with prob. `rate`; rescales the others."""
  keep = 1.0 - rate
  mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros_like(x))


_INIT = nn.initializers.truncated_normal(0.02)  # The papers' conv/linear init.


class GRN(nn.Module):
  """Global response normalisation (ConvNeXt V2), over [B, H, W, C]."""
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x):
    """x + beta + gamma * x * N(x), N: per-channel L2 norm over H, W,
    divided by its mean over the channels."""
    c = x.shape[-1]
    gamma = self.param("gamma", nn.initializers.zeros, (c,))
    beta = self.param("beta", nn.initializers.zeros, (c,))
    gx = jnp.sqrt(jnp.sum(jnp.square(x), axis=(1, 2), keepdims=True))
    nx = gx / (jnp.mean(gx, axis=-1, keepdims=True) + self.eps)  # [B,1,1,C]
    return x + beta.astype(x.dtype) + gamma.astype(x.dtype) * (x * nx)


class Block(nn.Module):
  """One ConvNeXt block: [B, H, W, C] -> [B, H, W, C]."""
  kernel_size: int = 7
  mlp_ratio: float = 4.0
  grn: bool = False
  layerscale: float | None = LAYERSCALE_INIT
  drop_path: float = 0.0
  norm_eps: float = 1e-6
  gelu: str = "erf"
  dtype_mm: str = "float32"

  @nn.compact
  def __call__(self, x, train=False):
    c, k = x.shape[-1], self.kernel_size
    dtype = common.to_dtype(self.dtype_mm)
    y = nn.Conv(c, (k, k), padding=[(k // 2, (k - 1) // 2)] * 2,
                feature_group_count=c, kernel_init=_INIT, dtype=dtype,
                name="dwconv")(x)  # [B, H, W, C]
    y = nn.LayerNorm(epsilon=self.norm_eps, name="norm")(y)
    y = nn.Dense(int(self.mlp_ratio * c), kernel_init=_INIT, dtype=dtype,
                 dot_general=common.dot_general, name="fc1")(y)  # [B, H, W, 4C]
    y = vit.gelu_fn(self.gelu)(y)
    if self.grn:
      y = GRN(eps=1e-6, name="grn")(y)
    y = nn.Dense(c, kernel_init=_INIT, dtype=dtype,
                 dot_general=common.dot_general, name="fc2")(y)
    if self.layerscale is not None:
      scale = self.param("layerscale",
                         nn.initializers.constant(self.layerscale), (c,))
      y = y * scale.astype(y.dtype)
    if train and self.drop_path > 0.0:
      y = drop_path(y, self.drop_path, self.make_rng("dropout"))
    return x + y


class Patchify(nn.Module):
  """A kernel = stride conv `conv` and a LayerNorm `norm`, in the order
  `norm_first` says (the stem: conv first; between stages: norm first)."""
  dim: int
  patch: int
  norm_first: bool = False
  norm_eps: float = 1e-6
  dtype_mm: str = "float32"

  @nn.compact
  def __call__(self, x):
    """x: [B, H, W, C] -> [B, H / patch, W / patch, dim] (floor)."""
    norm = nn.LayerNorm(epsilon=self.norm_eps, name="norm")
    conv = nn.Conv(self.dim, (self.patch,) * 2, strides=(self.patch,) * 2,
                   padding="VALID", kernel_init=_INIT, name="conv",
                   dtype=common.to_dtype(self.dtype_mm))
    return conv(norm(x)) if self.norm_first else norm(conv(x))


class Stage(nn.Module):
  """Optional `downsample` (LayerNorm, 2x2/2 conv), then `block{j}`s."""
  dim: int
  rates: tuple[float, ...]
  downsample: bool
  block_kw: dict | None = None

  @nn.compact
  def __call__(self, x, train=False):
    """x: [B, H, W, C_in] -> [B, H/2 (or H), W/2 (or W), dim]."""
    kw = dict(self.block_kw or {})
    if self.downsample:
      x = Patchify(self.dim, 2, norm_first=True, norm_eps=kw["norm_eps"],
                   dtype_mm=kw["dtype_mm"], name="downsample")(x)
    for j, rate in enumerate(self.rates):
      x = Block(drop_path=rate, name=f"block{j}", **kw)(x, train)
    return x


class _Model(nn.Module):
  """ConvNeXt. `apply(..., images [B, H, W, C], train=False)` -> (out, aux)."""
  num_classes: int | None = None
  depths: tuple[int, ...] = SIZES["T"][0]
  dims: tuple[int, ...] = SIZES["T"][1]
  patch_size: int = 4  # Of the stem.
  kernel_size: int = 7  # Of the depthwise convs.
  mlp_ratio: float = 4.0
  grn: bool = False  # V2's global response normalisation.
  layerscale: float | None = LAYERSCALE_INIT  # Init value; None: none.
  drop_path: float = 0.0  # Rate of the last block; linear from 0.
  dropout: float = 0.0  # On the pooled features, before the head.
  norm_eps: float = 1e-6
  gelu: str = "erf"  # vit.GELUS
  head_zeroinit: bool = True
  dtype_mm: str = "float32"

  @nn.compact
  def __call__(self, image, *, train=False):
    """image: [B, H, W, C] float -> (logits or representation, aux dict)."""
    if len(self.depths) != len(self.dims):
      raise ValueError(f"ConvNeXt: depths {self.depths} and dims "
                       f"{self.dims} must have the same length.")
    out = {}
    x = out["stem"] = Patchify(
        self.dims[0], self.patch_size, norm_eps=self.norm_eps,
        dtype_mm=self.dtype_mm, name="stem")(image)  # [B, H/p, W/p, C0]
    block_kw = dict(kernel_size=self.kernel_size, mlp_ratio=self.mlp_ratio,
                    grn=self.grn, layerscale=self.layerscale,
                    norm_eps=self.norm_eps, gelu=self.gelu,
                    dtype_mm=self.dtype_mm)
    rates = drop_path_rates(self.depths, self.drop_path)
    for i, dim in enumerate(self.dims):
      x = out[f"stage{i}"] = Stage(dim, rates[i], i > 0, block_kw,
                                   name=f"stage{i}")(x, train)
    x = jnp.mean(x, axis=(1, 2))  # [B, C3]
    x = out["pre_logits"] = nn.LayerNorm(epsilon=self.norm_eps,
                                         name="head_norm")(x)
    x = nn.Dropout(rate=self.dropout)(x, not train)
    if self.num_classes:
      x = out["logits"] = common.head(self.num_classes, self.head_zeroinit)(
          x)  # [B, num_classes]
    return x, out


def Model(num_classes=None, *, variant="T", **kw):  # pylint: disable=C0103
  """Builds a ConvNeXt; `variant` ("T", "S", "B", "L", "XL", "V2-T", ...).

  Explicit keyword arguments override what the variant decodes to;
  `variant=None` uses only them (ConvNeXt-T by default).
  """
  return _Model(num_classes=num_classes, **{**decode_variant(variant), **kw})


Model.__signature__ = common.factory_signature(_Model, variant="T")
MODELS.register("convnext", Model)
