"""Vision Transformer with big_vision's parameter names.

"An Image is Worth 16x16 Words" (Dosovitskiy et al. 2020), with the options
of "Scaling Vision Transformers", "Better plain ViT baselines" (sincos2d, gap)
and "Getting ViT in Shape" (So400m). Released big_vision `.npz` checkpoints
load without renaming; see `scan_to_unscanned` / `unscanned_to_scan` for the
two layouts of the encoder.

Options for weights trained elsewhere (timm, open_clip / OpenAI CLIP), all
off by default so big_vision params and outputs are unchanged:

- `norm_pre=True`: a LayerNorm over the tokens after the position embedding
  and class token, before the encoder (CLIP's `ln_pre`, timm's `norm_pre`);
  its params are the top-level `norm_pre/{scale,bias}`.
- `gelu`: the MLP activation, "tanh" (flax's approximation, big_vision's;
  default), "erf" (exact, torch's `nn.GELU()`) or "quick" (OpenAI CLIP's
  QuickGELU, x * sigmoid(1.702 x)).
- `norm_eps`: the epsilon of every LayerNorm (default 1e-6 as big_vision;
  torch's and open_clip's default is 1e-5).

The two options of "Three things everyone should know about Vision
Transformers" (Touvron et al. 2022):

- `parallel=P` (default 1, big_vision's block): each encoder block computes
  `x = x + sum_k attn_k(LN_k(x))`, then `x = x + sum_k mlp_k(LN'_k(x))` over
  k = 0..P-1 branches, each with its own dropout, LayerScale and drop-path
  mask. E.g. a ViT-S with 2 branches and half the depth (as many params as
  S/16): `Model(variant="S/16", depth=6, parallel=2)`. Params of
  `Transformer/encoderblock_{i}` (scanned: `Transformer/encoderblock`, with a
  leading depth axis): attention branch k has `LayerNorm_{k}`,
  `MultiHeadDotProductAttention_{k}` (and `LayerScale_{k}`), MLP branch k has
  `LayerNorm_{P+k}`, `MlpBlock_{k}` (and `LayerScale_{P+k}`). P = 1 gives
  big_vision's `LayerNorm_0`, `MultiHeadDotProductAttention_0`, `LayerNorm_1`,
  `MlpBlock_0`.
- Fine-tuning the attention only: `attention_only_schedule(...)` is a
  `config.schedule` (see optim.py) that trains the encoder's attention
  weights (and, by default, the head) and freezes all else: frozen params get
  no gradient, no optimizer state and no update.

Options of other papers, each off by default (token layout and inits in
`vit_tokens.py`); a bad value is a ValueError naming the argument:

- `dist_token=True` (DeiT, "Training data-efficient image transformers";
  needs `pool_type="tok"`): a learned `dist` token [1, 1, D] after `cls` and
  a second head `head_dist` on its output (zero-initialised like `head` when
  `head_zeroinit`). With `train=True` the model returns the class head's
  logits and `aux["dist_logits"]` (the distillation head's); with
  `train=False` it returns DeiT's inference rule, the mean of the two, with
  `aux["logits"]` (class head) and `aux["dist_logits"]`. `aux["pre_logits"]`
  is the class token's representation, `aux["dist_pre_logits"]` the
  distillation token's (both through `pre_logits` when `rep_size`; timm's
  `pre_logits` is their mean). Without `num_classes` the output is
  `aux["pre_logits"]`. `configs/deit_i1k.py` trains it.
- `num_registers=N` ("Vision Transformers Need Registers"): N learned
  tokens `registers` [1, N, D] appended AFTER the patch tokens (same outputs
  as timm's/DINOv2's placement before them). Every block attends to them;
  after `encoder_norm` they are split off into `aux["registers"]` [B, N, D],
  and `aux["encoded"]`, the pooling (gap/map/tok/none) and everything after
  it see the other tokens only. `aux["encoder_{i}"]` keep them.
- `patch_dropout=r` (FLIP, "Scaling Language-Image Pre-training via
  Masking"): in training (`train=True`, "dropout" rng) each example keeps a
  random subset of round((1 - r) L) of its L patch tokens (after the position
  embedding, before cls/dist/registers are added; indices, ascending, in
  `aux["kept_patches"]` [B, K]); the encoder runs on the shorter sequence.
  Off at `train=False`. E.g. the image tower of `two_towers` with
  `image=dict(..., patch_dropout=0.5)` for about 2x faster contrastive
  pretraining.
- `qk_norm=True`: LayerNorm (scale only, eps `norm_eps`) of the queries and
  keys of every encoder attention, per head; params `query_ln`, `key_ln`
  under `MultiHeadDotProductAttention_{k}` (flax's `normalize_qk`).
- `mlp_type="swiglu"`: encoder MLPs are `Dense_out(silu(Dense_gate(x)) *
  Dense_up(x))` (params `MlpBlock_{k}/{Dense_gate,Dense_up,Dense_out}`,
  hidden size `mlp_dim` as given, as timm's `SwiGLU`) instead of GELU's
  `Dense_0`, `Dense_1`.
- `use_bias=False`: no biases in the encoder's attention projections
  (query/key/value/out) and MLP Dense layers (LayerNorms, patch embedding,
  heads keep theirs).

`qk_norm`, `mlp_type` and `use_bias` configure the encoder blocks only; the
`map` pooling head keeps big_vision's attention and GELU MLP.

Memory: `scan=True` runs the encoder as one `nn.scan` over blocks (faster
compiles; params `Transformer/encoderblock` with a leading depth axis).
`remat` checkpoints every encoder block (`nn.remat`): the backward pass
recomputes the activations that `remat_policy` does not save, for less
memory at the cost of compute; outputs, gradients and param names do not
change. `remat=None` (default) is big_vision's behaviour: blocks are
rematerialised exactly when `scan=True`. `remat=True` also checkpoints the
unscanned blocks, `remat=False` scans without it. `remat_policy` (default
"nothing_saveable") names an argument-free `jax.checkpoint_policies` policy
(`common.REMAT_POLICIES`: "nothing_saveable", "dots_saveable",
"dots_with_no_batch_dims_saveable", "everything_saveable", ...); an unknown
name is a ValueError listing them.
"""

import functools
import operator
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from big_vision_like.models import attention, common, vit_tokens
from big_vision_like.registry import MODELS

# name: (width, depth, mlp_dim, num_heads)
VARIANTS = {
    "mu": (32, 1, 128, 2),
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "M": (512, 12, 2048, 8),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "So400m": (1152, 27, 4304, 16),
    "H": (1280, 32, 5120, 16),
    "g": (1408, 40, 6144, 16),
    "g-opt": (1536, 40, 6144, 16),
    "G": (1664, 48, 8192, 16),
    "G-opt": (1536, 48, 8192, 16),
    "e": (1792, 56, 15360, 16),
}

POOL_TYPES = ("gap", "tok", "map", "0", "none")
GELUS = ("tanh", "erf", "quick")
MLP_TYPES = ("gelu", "swiglu")


def decode_variant(variant):
  """Decodes "B/16" (or "B", or "B/16x8") into `_Model` keyword arguments."""
  if variant is None:
    return {}
  name, _, patch = variant.partition("/")
  if name not in VARIANTS:
    raise ValueError(f"Unknown ViT variant {name!r} (in {variant!r}). "
                     f"Known: {list(VARIANTS)}.")
  width, depth, mlp_dim, num_heads = VARIANTS[name]
  out = {"width": width, "depth": depth, "mlp_dim": mlp_dim,
         "num_heads": num_heads}
  if patch:
    if not re.fullmatch(r"\d+(x\d+)?", patch):
      raise ValueError(f"Bad patch size {patch!r} in ViT variant {variant!r}; "
                       "expected e.g. '16' or '16x8'.")
    sizes = tuple(int(p) for p in patch.split("x"))
    out["patch_size"] = sizes * 2 if len(sizes) == 1 else sizes
  return out


def gelu_fn(name):
  """The activation called `name` (see `GELUS`)."""
  if name == "tanh":
    return nn.gelu  # approximate=True
  if name == "erf":
    return lambda x: nn.gelu(x, approximate=False)
  if name == "quick":
    return lambda x: x * nn.sigmoid(1.702 * x)
  raise ValueError(f"Unknown gelu {name!r}; known: {GELUS}.")


def _drop_path(x, rate, rng):
  """Stochastic depth: drops the whole residual branch per example."""
  keep = 1.0 - rate
  mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros_like(x))


class MlpBlock(nn.Module):
  """Transformer MLP, `mlp_type` "gelu" or "swiglu" (see MLP_TYPES).

  "gelu" (big_vision's): Dense_0 -> gelu -> dropout -> Dense_1.
  "swiglu" (timm's `SwiGLU`): Dense_out(dropout(silu(Dense_gate(x)) *
  Dense_up(x))), `mlp_dim` the hidden size as given (not 2/3 of it).
  `use_bias=False` drops the biases of the Dense layers.
  """
  mlp_dim: int | None = None  # None: 4 * input width
  dropout: float = 0.0
  dtype_mm: str = "float32"
  gelu: str = "tanh"  # see GELUS; "gelu" MLPs only
  mlp_type: str = "gelu"  # see MLP_TYPES
  use_bias: bool = True

  @nn.compact
  def __call__(self, x, deterministic=True):
    """x: [..., D] -> [..., D]."""
    d = x.shape[-1]
    dense = lambda n, name=None: nn.Dense(
        n, dtype=common.to_dtype(self.dtype_mm), use_bias=self.use_bias,
        dot_general=common.dot_general,
        kernel_init=nn.initializers.xavier_uniform(),
        bias_init=nn.initializers.normal(stddev=1e-6), name=name)
    hidden = self.mlp_dim or 4 * d
    if self.mlp_type == "gelu":
      x = gelu_fn(self.gelu)(dense(hidden)(x))  # [..., mlp]
      x = nn.Dropout(rate=self.dropout)(x, deterministic)
      return dense(d)(x)  # [..., D]
    if self.mlp_type == "swiglu":
      x = (nn.silu(dense(hidden, "Dense_gate")(x))
           * dense(hidden, "Dense_up")(x))  # [..., mlp]
      x = nn.Dropout(rate=self.dropout)(x, deterministic)
      return dense(d, "Dense_out")(x)  # [..., D]
    raise ValueError(f"Unknown mlp_type {self.mlp_type!r}; known: "
                     f"{MLP_TYPES}.")


class LayerScale(nn.Module):
  """Per-channel learned scale of a residual branch ("Going deeper", CaiT)."""
  init_value: float = 1e-5

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.initializers.constant(self.init_value),
                       (x.shape[-1],))
    return x * scale.astype(x.dtype)


class Encoder1DBlock(nn.Module):
  """Pre-LN block: x + sum_k attn_k(LN_k(x)), then x + sum_k mlp_k(LN'_k(x)).

  k runs over `parallel` branches (1: big_vision's sequential block); see the
  module docstring for the param names. Each branch has its own dropout,
  LayerScale and drop-path mask.
  """
  mlp_dim: int | None = None
  num_heads: int = 12
  dropout: float = 0.0
  layerscale: float | None = None
  dtype_mm: str = "float32"
  gelu: str = "tanh"
  norm_eps: float = 1e-6
  parallel: int = 1
  attention_impl: str = "auto"  # see attention.IMPLEMENTATIONS
  qk_norm: bool = False  # LayerNorm of q and k (query_ln, key_ln)
  use_bias: bool = True  # of the attention projections and MLP Dense layers
  mlp_type: str = "gelu"  # see MLP_TYPES
  return_attention: bool = False  # also return the weights [B, H, L, L]

  def _branch(self, y, index, drop_path_rate, deterministic):
    """Dropout, LayerScale_{index} and drop-path of one residual branch."""
    y = nn.Dropout(rate=self.dropout)(y, deterministic)
    if self.layerscale is not None:
      y = LayerScale(self.layerscale, name=f"LayerScale_{index}")(y)
    # A Python 0.0 means "off"; a traced rate (scan) is always applied.
    static_zero = (isinstance(drop_path_rate, (int, float))
                   and not drop_path_rate)
    if not deterministic and not static_zero:
      y = _drop_path(y, drop_path_rate, self.make_rng("dropout"))
    return y

  def _attention(self, x, k, mask, deterministic):
    """Attention branch k: x [B, L, D] -> attn_k(LN_k(x)) [B, L, D] (and
    its weights [B, H, L, L] with `return_attention`)."""
    y = nn.LayerNorm(epsilon=self.norm_eps, name=f"LayerNorm_{k}")(x)
    return attention.MultiHeadAttention(
        num_heads=self.num_heads, dtype_mm=self.dtype_mm,
        implementation=self.attention_impl, qk_norm=self.qk_norm,
        use_bias=self.use_bias, norm_eps=self.norm_eps,
        return_weights=self.return_attention,
        name=f"MultiHeadDotProductAttention_{k}",
    )(y, mask=mask, deterministic=deterministic)  # [B, L, D]

  def _mlp(self, x, k, deterministic):
    """MLP branch k: x [B, L, D] -> mlp_k(LN'_k(x)) [B, L, D]."""
    y = nn.LayerNorm(epsilon=self.norm_eps,
                     name=f"LayerNorm_{self.parallel + k}")(x)
    return MlpBlock(mlp_dim=self.mlp_dim, dropout=self.dropout,
                    dtype_mm=self.dtype_mm, gelu=self.gelu,
                    mlp_type=self.mlp_type, use_bias=self.use_bias,
                    name=f"MlpBlock_{k}")(y, deterministic)  # [B, L, D]

  @nn.compact
  def __call__(self, x, drop_path_rate=0.0, deterministic=True, mask=None):
    """x: [B, L, D] -> ([B, L, D], weights); scan's per-layer output is
    the attention weights [B, H, L, L] with `return_attention`, else None.

    Args:
      x: [B, L, D] tokens.
      drop_path_rate: stochastic-depth rate of this block.
      deterministic: whether dropout and drop-path are off.
      mask: optional bool attention mask broadcastable to [B, H, L, L]
        (True: attend), e.g. [B, 1, 1, L] to ignore padding keys.
    """
    p = self.parallel
    if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 1:
      raise ValueError(f"parallel={p!r}: expected an int >= 1 (the number "
                       "of parallel attention and MLP branches per block).")
    if self.return_attention and p != 1:
      raise NotImplementedError(
          f"return_attention with parallel={p}: only for one branch.")
    ys = [self._attention(x, k, mask, deterministic) for k in range(p)]
    weights = None
    if self.return_attention:
      ((y, weights),) = ys
      ys = [y]
    ys = [self._branch(y, k, drop_path_rate, deterministic)
          for k, y in enumerate(ys)]
    x = x + functools.reduce(operator.add, ys)  # [B, L, D]
    ys = [self._branch(self._mlp(x, k, deterministic), p + k,
                       drop_path_rate, deterministic) for k in range(p)]
    x = x + functools.reduce(operator.add, ys)  # [B, L, D]
    return x, weights


class Encoder(nn.Module):
  """Stack of `depth` blocks followed by `encoder_norm`.

  `remat` (None: only when `scan`, as big_vision) checkpoints every block
  with `jax.checkpoint_policies.<remat_policy>`; see the module docstring.
  """
  depth: int
  mlp_dim: int | None = None
  num_heads: int = 12
  dropout: float = 0.0
  drop_path: float = 0.0
  layerscale: float | None = None
  dtype_mm: str = "float32"
  scan: bool = False
  remat_policy: str = "nothing_saveable"
  remat: bool | None = None
  gelu: str = "tanh"
  norm_eps: float = 1e-6
  parallel: int = 1  # branches per block; see Encoder1DBlock
  attention_impl: str = "auto"  # see attention.IMPLEMENTATIONS
  qk_norm: bool = False  # see Encoder1DBlock
  use_bias: bool = True
  mlp_type: str = "gelu"
  return_attention: bool = False  # aux["attention"] [depth, B, H, L, L]

  def _remat(self):
    return self.scan if self.remat is None else bool(self.remat)

  def _scanned(self, x, rates, deterministic, mask, kw):
    """The blocks as one `nn.scan` over `encoderblock` (depth-axis params)."""
    if self.drop_path:  # one traced rate per layer
      rate_arg, rate_axis, static = jnp.asarray(rates, jnp.float32), 0, (3,)
    else:
      rate_arg, rate_axis, static = 0.0, nn.broadcast, (2, 3)
    block = common.maybe_remat(Encoder1DBlock, self._remat(),
                               self.remat_policy, static, prevent_cse=False)
    x, weights = nn.scan(
        block,
        variable_axes={"params": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(rate_axis, nn.broadcast, nn.broadcast),
        length=self.depth,
    )(name="encoderblock", **kw)(x, rate_arg, deterministic, mask)
    return x, weights

  @nn.compact
  def __call__(self, x, deterministic=True, mask=None):
    """x: [B, L, D] -> (encoded [B, L, D], {"encoder_{i}": [B, L, D]}).

    `mask` (optional, bool, broadcastable to [B, H, L, L]) is passed to every
    block's attention; True means "attend". With `return_attention`, the
    dict also holds "attention": every block's softmax weights, stacked
    [depth, B, H, L, L].
    """
    out = {}
    kw = {"mlp_dim": self.mlp_dim, "num_heads": self.num_heads,
          "dropout": self.dropout, "layerscale": self.layerscale,
          "dtype_mm": self.dtype_mm, "gelu": self.gelu,
          "norm_eps": self.norm_eps, "parallel": self.parallel,
          "attention_impl": self.attention_impl, "qk_norm": self.qk_norm,
          "use_bias": self.use_bias, "mlp_type": self.mlp_type,
          "return_attention": self.return_attention}
    rates = np.linspace(0.0, self.drop_path, self.depth)  # stochastic depth
    if self.scan:
      x, weights = self._scanned(x, rates, deterministic, mask, kw)
    else:
      weights = []
      # The rate (a Python float) and `deterministic` are static.
      block = common.maybe_remat(Encoder1DBlock, self._remat(),
                                 self.remat_policy, (2, 3))
      for i in range(self.depth):
        x, w = block(name=f"encoderblock_{i}", **kw)(
            x, float(rates[i]), deterministic, mask)
        out[f"encoder_{i}"] = x
        weights.append(w)
      weights = jnp.stack(weights) if self.return_attention else None
    if self.return_attention:
      out["attention"] = weights  # [depth, B, H, L, L]
    x = nn.LayerNorm(epsilon=self.norm_eps, name="encoder_norm")(x)
    return x, out


class MAPHead(nn.Module):
  """Multihead attention pooling with a learned probe."""
  mlp_dim: int | None = None
  num_heads: int = 12
  dtype_mm: str = "float32"
  gelu: str = "tanh"
  norm_eps: float = 1e-6
  attention_impl: str = "auto"  # see attention.IMPLEMENTATIONS
  return_attention: bool = False  # -> ([B, D], the probe's [B, H, 1, L])

  @nn.compact
  def __call__(self, x, mask=None):
    """x: [B, L, D] -> [B, D]; `mask` [B, L] bool (True: pool) is optional.

    With `return_attention`: ([B, D], the probe's weights [B, H, 1, L]).
    """
    b, _, d = x.shape
    probe = self.param("probe", nn.initializers.xavier_uniform(), (1, 1, d))
    probe = jnp.tile(probe, [b, 1, 1])  # [B, 1, D]
    if mask is not None:
      mask = mask[:, None, None, :]  # [B, 1, 1, L]
    x = attention.MultiHeadAttention(
        num_heads=self.num_heads, dtype_mm=self.dtype_mm,
        implementation=self.attention_impl,
        return_weights=self.return_attention,
        name="MultiHeadDotProductAttention_0",
    )(probe, x, mask=mask)  # [B, 1, D]
    if self.return_attention:
      x, weights = x
    y = nn.LayerNorm(epsilon=self.norm_eps)(x)
    x = x + MlpBlock(mlp_dim=self.mlp_dim, dtype_mm=self.dtype_mm,
                     gelu=self.gelu)(y)
    return (x[:, 0], weights) if self.return_attention else x[:, 0]


class _Model(nn.Module):
  """ViT. `apply(..., images [B, H, W, C], train=False)` -> (out, aux)."""
  num_classes: int | None = None
  patch_size: Any = (16, 16)
  width: int = 768
  depth: int = 12
  mlp_dim: int | None = None  # None: 4 * width
  num_heads: int = 12
  posemb: str = "learn"  # or "sincos2d"
  rep_size: int | bool = False
  dropout: float = 0.0
  drop_path: float = 0.0  # rate of the last block; linear from 0 over depth
  pool_type: str = "gap"
  head_zeroinit: bool = True
  layerscale: float | None = None
  dtype_mm: str = "float32"
  scan: bool = False
  remat_policy: str = "nothing_saveable"  # a common.REMAT_POLICIES name
  remat: bool | None = None  # None: remat iff scan (big_vision)
  norm_pre: bool = False  # LayerNorm `norm_pre` before the encoder (CLIP)
  gelu: str = "tanh"  # see GELUS
  norm_eps: float = 1e-6  # of every LayerNorm
  parallel: int = 1  # attention / MLP branches per block ("Three things")
  attention_impl: str = "auto"  # see attention.IMPLEMENTATIONS
  # Options of other papers (module docstring; vit_tokens.py), off by default.
  dist_token: bool = False  # DeiT: `dist` token, `head_dist`
  num_registers: int = 0  # register tokens, discarded before pooling
  patch_dropout: float = 0.0  # FLIP: fraction of patches dropped in training
  qk_norm: bool = False  # LayerNorm of queries and keys
  use_bias: bool = True  # False: no attention / MLP biases in the encoder
  mlp_type: str = "gelu"  # or "swiglu"; see MLP_TYPES
  # aux "attention" [depth, B, H, L, L] (every block's softmax weights over
  # the encoder's tokens) and, with pool_type "map", "map_attention"
  # [B, H, 1, L'] (the probe's, over the tokens without registers);
  # computed with the "einsum" attention. For inspection (attention maps).
  return_attention: bool = False

  def __post_init__(self):
    vit_tokens.check(pool_type=self.pool_type, dist_token=self.dist_token,
                     num_registers=self.num_registers,
                     patch_dropout=self.patch_dropout)
    if self.mlp_type not in MLP_TYPES:
      raise ValueError(f"Unknown mlp_type {self.mlp_type!r}; known: "
                       f"{MLP_TYPES}.")
    super().__post_init__()

  def _posemb(self, h, w, d):
    if self.posemb == "learn":
      return self.param("pos_embedding",
                        nn.initializers.normal(stddev=1 / np.sqrt(d)),
                        (1, h * w, d))
    if self.posemb == "sincos2d":
      return common.posemb_sincos_2d(h, w, d)
    raise ValueError(f"Unknown posemb {self.posemb!r}; "
                     "known: 'learn', 'sincos2d'.")

  def _pool(self, x, out):
    """x: [B, L, D] -> [B, D] (or [B, L, D] for pool_type "0"/"none")."""
    if self.pool_type == "gap":
      return jnp.mean(x, axis=1)
    if self.pool_type == "tok":
      return x[:, 0]
    if self.pool_type == "map":
      x = MAPHead(mlp_dim=self.mlp_dim, num_heads=self.num_heads,
                  dtype_mm=self.dtype_mm, gelu=self.gelu,
                  norm_eps=self.norm_eps, attention_impl=self.attention_impl,
                  return_attention=self.return_attention)(x)
      if self.return_attention:
        x, out["map_attention"] = x  # [B, H, 1, L]
      return x
    if self.pool_type in ("0", "none"):
      return x
    raise ValueError(f"Unknown pool_type {self.pool_type!r}; "
                     f"known: {POOL_TYPES}.")

  @nn.compact
  def __call__(self, image, *, train=False):
    """image: [B, H, W, C] float -> (logits or representation, aux dict).

    aux: "stem", "with_posemb", "kept_patches" (patch_dropout, training),
    "encoder_{i}" (unscanned), "attention" and "map_attention" (with
    return_attention), "encoded" (without registers), "registers",
    "head_input", "pre_logits", "logits" and, with dist_token,
    "dist_pre_logits", "dist_logits" (see the module docstring).
    """
    out = {}
    ps = self.patch_size
    ps = (ps, ps) if isinstance(ps, int) else tuple(ps)
    x = out["stem"] = nn.Conv(
        self.width, ps, strides=ps, padding="VALID", name="embedding",
        dtype=common.to_dtype(self.dtype_mm))(image)  # [B, h, w, D]
    b, h, w, d = x.shape
    x = jnp.reshape(x, (b, h * w, d))  # [B, h*w, D]
    x = out["with_posemb"] = x + self._posemb(h, w, d)
    if train and self.patch_dropout:  # FLIP: [B, K, D], K kept patches.
      x, out["kept_patches"] = vit_tokens.drop_patches(
          x, self.patch_dropout, self.make_rng("dropout"))

    # [cls, dist, patches, registers], each when its option is on.
    x = vit_tokens.add_tokens(self, x, cls=self.pool_type == "tok",
                              dist=self.dist_token,
                              num_registers=self.num_registers)
    x = nn.Dropout(rate=self.dropout)(x, not train)  # [B, L, D]
    if self.norm_pre:
      x = nn.LayerNorm(epsilon=self.norm_eps, name="norm_pre")(x)

    x, enc_out = Encoder(
        depth=self.depth, mlp_dim=self.mlp_dim or 4 * self.width,
        num_heads=self.num_heads, dropout=self.dropout,
        drop_path=self.drop_path, layerscale=self.layerscale,
        dtype_mm=self.dtype_mm, scan=self.scan,
        remat_policy=self.remat_policy, remat=self.remat, gelu=self.gelu,
        norm_eps=self.norm_eps, parallel=self.parallel,
        attention_impl=self.attention_impl, qk_norm=self.qk_norm,
        use_bias=self.use_bias, mlp_type=self.mlp_type,
        return_attention=self.return_attention, name="Transformer",
    )(x, deterministic=not train)
    out.update(enc_out)
    x, registers = vit_tokens.split_registers(x, self.num_registers)
    if registers is not None:
      out["registers"] = registers  # [B, N, D]
    out["encoded"] = x  # [B, L, D], without the registers

    pre_logits = None
    if self.rep_size:
      rep = self.width if self.rep_size is True else self.rep_size
      pre_logits = nn.Dense(rep, name="pre_logits")
    x = out["head_input"] = self._pool(x, out)  # [B, D]
    if pre_logits:
      x = nn.tanh(pre_logits(x))  # [B, rep]
    out["pre_logits"] = x
    if self.num_classes:
      x = out["logits"] = common.head(self.num_classes, self.head_zeroinit)(
          x)  # [B, num_classes]
    if self.dist_token:
      x = self._distillation_head(out, pre_logits, x, train)
    return x, out

  def _distillation_head(self, out, pre_logits, x, train):
    """DeiT's second head on the `dist` token (encoded[:, 1]).

    Sets aux "dist_pre_logits" and (with a head) "dist_logits". Returns the
    model output: the class head's logits `x` in training, the mean of both
    heads' logits at inference (DeiT's rule); without a head, `x`.
    """
    y = out["encoded"][:, 1]  # [B, D]
    if pre_logits:
      y = nn.tanh(pre_logits(y))  # [B, rep], the class token's layer
    out["dist_pre_logits"] = y
    if not self.num_classes:
      return x
    init = (nn.initializers.zeros if self.head_zeroinit
            else nn.linear.default_kernel_init)
    y = out["dist_logits"] = nn.Dense(
        self.num_classes, kernel_init=init, name="head_dist")(y)
    return x if train else (x + y) / 2


def Model(num_classes=None, *, variant=None, **kw):  # pylint: disable=C0103
  """Builds a ViT; `variant` ("B/16", "So400m/14", ...) sets its size.

  Explicit keyword arguments override what the variant decodes to.
  """
  return _Model(num_classes=num_classes, **{**decode_variant(variant), **kw})


Model.__signature__ = common.factory_signature(_Model, variant=None)
MODELS.register("vit", Model)

def attention_rollout(attention, residual=0.5):
  """Attention rollout (Abnar & Zuidema 2020) of aux["attention"].

  Args:
    attention: [depth, B, H, L, L] softmax weights (`return_attention=True`).
    residual: weight of the identity (the skip connection) mixed into each
      layer's head-averaged attention before the rows are re-normalised.

  Returns:
    [B, L, L]: how much each output token (row) draws on each input token
    through all layers, the product of the layers' mixed matrices.
  """
  a = jnp.mean(jnp.asarray(attention, jnp.float32), axis=2)  # [depth, B, L, L]
  a = residual * jnp.eye(a.shape[-1]) + (1 - residual) * a
  a = a / jnp.sum(a, axis=-1, keepdims=True)
  rollout = a[0]
  for layer in a[1:]:
    rollout = layer @ rollout  # [B, L, L]
  return rollout


# Every attention of the encoder, unscanned (`encoderblock_{i}`) or scanned.
ATTENTION_REGEX = (r"Transformer/encoderblock(?:_\d+)?/"
                   r"MultiHeadDotProductAttention_\d+/.*")
# The classifier and what feeds it (pre-logits, attention pooling).
HEAD_REGEX = r"(?:head|head_dist|pre_logits|MAPHead_0)/.*"


def attention_only_schedule(schedule="cosine", *, head=True,
                            pos_embedding=False, embedding=False, extra=(),
                            prefix=""):
  """`config.schedule` fine-tuning only the attention ("Three things", Sec. 4).

  Example: `config.schedule = vit.attention_only_schedule(
  dict(decay_type="cosine", warmup_steps=500), pos_embedding=True)`.

  Args:
    schedule: the schedule of the trained params: a decay type ("cosine",
      ...) or a full schedule dict (see `optim.make_schedule`).
    head: also train `head/`, `pre_logits/` and `MAPHead_0/` (`HEAD_REGEX`);
      needed when the classes change.
    pos_embedding: also train `pos_embedding` (e.g. at a new resolution).
    embedding: also train the patch embedding `embedding/{kernel,bias}`.
    extra: more regexes of params to train (e.g. "cls").
    prefix: prepended (escaped) to every trained regex, e.g. "img/" for the
      image tower of a two-tower model.

  Returns:
    `[(trained_regex, schedule_dict), (".*", None)]`: one schedule group
    matching `ATTENTION_REGEX` and what the flags add; the final None
    freezes everything else.
  """
  if isinstance(schedule, str):
    schedule = {"decay_type": schedule}
  trained = [ATTENTION_REGEX]
  trained += [HEAD_REGEX] if head else []
  trained += ["pos_embedding"] if pos_embedding else []
  trained += [r"embedding/.*"] if embedding else []
  trained += list(extra)
  regex = re.escape(prefix) + "(?:" + "|".join(
      f"(?:{r})" for r in trained) + ")"
  return [(regex, dict(schedule)), (".*", None)]


def _split_key(k):
  m = re.fullmatch(r"encoderblock_(\d+)", k)
  return int(m.group(1)) if m else None


def scan_to_unscanned(params):
  """Splits `Transformer/encoderblock` (leading depth axis) into blocks.

  Args:
    params: a ViT param tree (with a "Transformer" key) or its Transformer
      subtree itself.

  Returns:
    A new dict with `encoderblock_{i}` entries; other entries are shared.
  """
  if "Transformer" in params:
    return {**params, "Transformer": scan_to_unscanned(params["Transformer"])}
  tree = dict(params)
  stacked = tree.pop("encoderblock")
  depth = jax.tree.leaves(stacked)[0].shape[0]
  for i in range(depth):
    tree[f"encoderblock_{i}"] = jax.tree.map(lambda a, i=i: a[i], stacked)
  return tree


def unscanned_to_scan(params):
  """Stacks `Transformer/encoderblock_{i}` into one `encoderblock` subtree.

  Args:
    params: a ViT param tree (with a "Transformer" key) or its Transformer
      subtree itself.

  Returns:
    A new dict with `encoderblock` whose leaves have a leading depth axis.
  """
  if "Transformer" in params:
    return {**params, "Transformer": unscanned_to_scan(params["Transformer"])}
  tree = {k: v for k, v in params.items() if _split_key(k) is None}
  ids = sorted(i for i in map(_split_key, params) if i is not None)
  if ids != list(range(len(ids))) or not ids:
    raise ValueError(f"Expected encoderblock_0..N-1, got block ids {ids}.")
  blocks = [params[f"encoderblock_{i}"] for i in ids]
  tree["encoderblock"] = jax.tree.map(lambda *a: jnp.stack(a), *blocks)
  return tree


# Block names of google-research/vision_transformer's files (the AugReg and
# original ViT releases) -> big_vision's.
_LEGACY_BLOCK_NAMES = {"MultiHeadDotProductAttention_1":
                       "MultiHeadDotProductAttention_0",
                       "LayerNorm_2": "LayerNorm_1", "MlpBlock_3": "MlpBlock_0"}


def is_legacy_layout(params):
  """Whether a ViT tree is in vision_transformer's older layout."""
  transformer = params.get("Transformer") if hasattr(params, "get") else None
  return hasattr(transformer, "get") and "posembed_input" in transformer


def from_legacy_layout(params):
  """A ViT tree of google-research/vision_transformer -> big_vision's names.

  Those files (e.g. AugReg's `B_16-i21k-300ep-...npz`) keep the position
  embedding in `Transformer/posembed_input/pos_embedding`, with the class
  token's position first when there is a `cls` token (it is added after the
  token is prepended), and number the block's layers `LayerNorm_0`,
  `MultiHeadDotProductAttention_1`, `LayerNorm_2`, `MlpBlock_3`. Here the
  position embedding is added to the patches before the class token is
  prepended, so the class position is folded into `cls` (exactly the same
  function). Trees already in big_vision's layout are returned unchanged.
  """
  if not is_legacy_layout(params):
    return params
  params = dict(params)
  transformer = dict(params["Transformer"])
  posemb = np.asarray(transformer.pop("posembed_input")["pos_embedding"])
  if "cls" in params:  # [1, 1 + N, D]: the class position comes first.
    params["cls"] = np.asarray(params["cls"]) + posemb[:, :1]
    posemb = posemb[:, 1:]
  params["pos_embedding"] = posemb
  for name, block in transformer.items():
    if name.startswith("encoderblock"):
      transformer[name] = {_LEGACY_BLOCK_NAMES.get(k, k): v
                           for k, v in block.items()}
  params["Transformer"] = transformer
  return params
