"""Text transformer: the text tower of CLIP / LiT / SigLIP two-tower models.

A pre-LN transformer encoder over token embeddings plus a learned position
embedding, pooled into one vector per text; bidirectional by default (as
big_vision's), causal with `causal=True` (as CLIP's / open_clip's). Parameter
names match big_vision (`Embed_0/embedding`, `pos_embedding`,
`Encoder_0/encoderblock_{i}/...`, `Encoder_0/encoder_norm`, `head`), so the
text towers of released SigLIP / LiT `.npz` checkpoints load without renaming.

Sizes come from the same variant letters as the ViT ("B", "So400m", ...).
"""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from big_vision_like.models import common, vit
from big_vision_like.registry import MODELS

POOL_TYPES = ("last", "first", "mean", "max", "map")


def decode_variant(variant):
  """Decodes "B" (a ViT variant letter, no patch size) into size kwargs."""
  if variant is None:
    return {}
  out = vit.decode_variant(variant)
  if "patch_size" in out:
    raise ValueError(f"Text variant {variant!r} has a patch size; use the "
                     f"variant letter alone, e.g. {variant.split('/')[0]!r}.")
  return out


class _Model(nn.Module):
  """Text transformer. `apply(..., text [B, L] int, train=False)` -> (out, aux).

  Attributes:
    num_classes: output size of the `head` Dense layer; None: no head, the
      output is the pooled representation.
    width, depth, mlp_dim, num_heads: transformer size (see `vit.VARIANTS`).
    vocab_size: rows of the token embedding.
    pool_type: "last" (the last position; with big_vision's "sticky" EOS
      padding that is an EOS token), "first", "mean", "max" (over positions)
      or "map" (attention pooling with a learned probe).
    pad_id: None (default, big_vision): every position is a real token. An
      int: tokens equal to `pad_id` are padding; they are not attended to,
      "mean"/"max"/"map" pool over the other tokens, and "last" picks the
      last non-padding token. Do not use it with "sticky" EOS padding where
      the pad id is also the EOS id that "last" pooling relies on (set
      `pad_id` only for a pad id that is not a real token, e.g. 0).
    dropout: dropout rate of embeddings and residual branches (train only).
    scan, remat, remat_policy: as in the ViT (`Encoder_0/encoderblock`
      with a leading depth axis when scanned). `remat` checkpoints every
      encoder block with `jax.checkpoint_policies.<remat_policy>` (same
      outputs, gradients and params; less memory, more compute); None
      (default, big_vision): only when scanned.
    dtype_mm: matmul dtype, e.g. "bfloat16".
    head_zeroinit: zero-initialise the head (default False, as big_vision's
      text tower; a zero head gives zero embeddings in a two-tower model).
    causal: each token attends only to itself and earlier tokens (CLIP's
      text tower; combined with the padding mask of `pad_id`). Default
      False: every token attends to every (non-padding) token.
    gelu: MLP activation, "tanh" (default), "erf" or "quick" (see `vit`).
    norm_eps: epsilon of every LayerNorm (default 1e-6; CLIP's is 1e-5).
  """
  num_classes: int | None = None
  width: int = 512
  depth: int = 12
  mlp_dim: int | None = None  # None: 4 * width
  num_heads: int = 8
  vocab_size: int = 32_000
  pool_type: str = "last"
  pad_id: int | None = None
  dropout: float = 0.0
  scan: bool = False
  remat_policy: str = "nothing_saveable"
  remat: bool | None = None
  dtype_mm: str = "float32"
  head_zeroinit: bool = False
  causal: bool = False
  gelu: str = "tanh"
  norm_eps: float = 1e-6
  attention_impl: str = "auto"  # see models/attention.py

  def _pool(self, x, valid):
    """x: [B, L, D], valid: [B, L] bool or None -> [B, D]."""
    if self.pool_type == "last":
      if valid is None:
        return x[:, -1]
      pos = jnp.arange(x.shape[1])[None, :]  # [1, L]
      last = jnp.max(jnp.where(valid, pos, 0), axis=1)  # [B]
      return jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]
    if self.pool_type == "first":
      return x[:, 0]
    if self.pool_type == "mean":
      if valid is None:
        return jnp.mean(x, axis=1)
      w = valid[..., None].astype(x.dtype)  # [B, L, 1]
      return jnp.sum(x * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)
    if self.pool_type == "max":
      if valid is None:
        return jnp.max(x, axis=1)
      low = jnp.finfo(x.dtype).min
      pooled = jnp.max(jnp.where(valid[..., None], x, low), axis=1)
      return jnp.where(jnp.any(valid, axis=1)[:, None], pooled, 0.0)
    if self.pool_type == "map":
      return vit.MAPHead(mlp_dim=self.mlp_dim or 4 * self.width,
                         num_heads=self.num_heads,
                         dtype_mm=self.dtype_mm, gelu=self.gelu,
                         norm_eps=self.norm_eps,
                         attention_impl=self.attention_impl)(x, valid)
    raise ValueError(f"Unknown pool_type {self.pool_type!r}; "
                     f"known: {POOL_TYPES}.")

  def _mask(self, valid, length):
    """Attention mask broadcastable to [B, H, L, L] (True: attend), or None."""
    mask = None if valid is None else valid[:, None, None, :]  # [B, 1, 1, L]
    if self.causal:
      causal = jnp.tril(jnp.ones((length, length), bool))[None, None]
      mask = causal if mask is None else mask & causal  # [B, 1, L, L]
    return mask

  @nn.compact
  def __call__(self, text, *, train=False):
    """text: [B, L] int token ids -> (logits or representation, aux dict).

    The aux dict holds "embedded" (token embeddings [B, L, D]),
    "with_posemb", "encoder_{i}" (unscanned only), "transformed" (after
    `encoder_norm`, [B, L, D]), "pre_logits" (pooled, [B, D]) and "logits"
    ([B, num_classes], with a head).
    """
    out = {}
    x = out["embedded"] = nn.Embed(
        self.vocab_size, self.width, name="Embed_0")(text)  # [B, L, D]
    _, length, d = x.shape
    posemb = self.param("pos_embedding",
                        nn.initializers.normal(stddev=1 / np.sqrt(d)),
                        (1, length, d))
    x = out["with_posemb"] = x + posemb  # [B, L, D]
    x = nn.Dropout(rate=self.dropout)(x, not train)

    valid = None if self.pad_id is None else text != self.pad_id  # [B, L]
    x, enc_out = vit.Encoder(
        depth=self.depth, mlp_dim=self.mlp_dim or 4 * self.width,
        num_heads=self.num_heads, dropout=self.dropout,
        dtype_mm=self.dtype_mm, scan=self.scan,
        remat_policy=self.remat_policy, remat=self.remat, gelu=self.gelu,
        norm_eps=self.norm_eps, attention_impl=self.attention_impl,
        name="Encoder_0",
    )(x, deterministic=not train, mask=self._mask(valid, length))
    out.update(enc_out)
    out["transformed"] = x  # [B, L, D]

    x = out["pre_logits"] = self._pool(x, valid)  # [B, D]
    if self.num_classes:
      x = out["logits"] = common.head(self.num_classes, self.head_zeroinit)(
          x)  # [B, num_classes]
    return x, out


def Model(num_classes=None, *, variant=None, **kw):  # pylint: disable=C0103
  """Builds a text transformer; `variant` ("B", "So400m", ...) sets its size.

  Explicit keyword arguments override what the variant decodes to.
  """
  return _Model(num_classes=num_classes, **{**decode_variant(variant), **kw})


Model.__signature__ = common.factory_signature(_Model, variant=None)
MODELS.register("text_transformer", Model)
