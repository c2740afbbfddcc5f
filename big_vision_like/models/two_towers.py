"""Two-tower image-text model (CLIP, LiT, SigLIP).

An image tower (`img`) and a text tower (`txt`), each any registered model
(ViT, NFNet, text transformer, ...), map their inputs to embeddings that are
L2-normalised; a learned log-temperature `t` and, for the sigmoid loss, a
learned bias `b` live next to them. The contrastive logits are
`zimg @ ztxt.T * exp(t) + b`; the losses compute them. Parameter names match
big_vision (`img/...`, `txt/...`, `t`, `b`).

LiT locks a loaded image tower (`config.schedule` rule `("img/.*", None)`),
so the image head, `img/head`, must either come from the checkpoint too or
be trained. Without an image head (`out_dim[0]=None`) the image embedding
is the tower's pre-logits, e.g. those of a classifier whose own head is not
loaded. `configs/lit_shapes.py` (`img_head=load|none|train`) has the three.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from big_vision_like.registry import MODELS


def _normalize(z):
  """L2-normalises the last axis; a zero vector stays zero."""
  return z / (jnp.linalg.norm(z, axis=-1, keepdims=True) + 1e-8)


class _Model(nn.Module):
  """Two towers. `apply(..., image, text, train=False)` -> (zimg, ztxt, aux).

  Attributes:
    image, text: keyword arguments of the towers (e.g. `variant`), without
      `num_classes`, which is `out_dim`.
    image_model, text_model: registered model names of the towers.
    out_dim: (image, text) embedding sizes: the towers' `num_classes`; None
      uses the tower's representation as the embedding (no head).
    temperature_init: initial exp(t).
    bias_init: initial `b`; None: no bias parameter (aux["b"] is None).
  """
  image: Any = None
  text: Any = None
  image_model: str = "vit"
  text_model: str = "text_transformer"
  out_dim: tuple[int | None, int | None] = (None, None)
  temperature_init: float = 1.0
  bias_init: float | None = None

  def _tower(self, kind, x, train, out):
    """Runs tower `kind` ("img" or "txt") on x; returns its embedding [B, D]."""
    if kind == "img":
      name, kw, dim = self.image_model, self.image, self.out_dim[0]
    else:
      name, kw, dim = self.text_model, self.text, self.out_dim[1]
    tower = MODELS.get(name)(num_classes=dim, **dict(kw or {}), name=kind)
    z, aux = tower(x, train=train)  # [B, D]
    out.update({f"{kind}/{k}": v for k, v in aux.items()})
    out[f"{kind}/norm"] = jnp.linalg.norm(z, axis=-1)  # [B]
    return _normalize(z)

  @nn.compact
  def __call__(self, image=None, text=None, *, train=False):
    """Embeds images and/or texts.

    Args:
      image: [B, H, W, C] images, or None (then zimg is None and the image
        tower is not run).
      text: [B, L] token ids, or None (then ztxt is None).
      train: training mode (dropout etc. in the towers).

    Returns:
      (zimg [B, D] or None, ztxt [B, D] or None, aux) with unit-norm
      embeddings; aux holds the towers' aux dicts under "img/..." and
      "txt/..." (plus "img/norm", "txt/norm": norms before normalisation),
      "t" = exp(t) [1], "t/parameterized" = t [1] and "b" ([1] or None).
    """
    out = {}
    zimg = None if image is None else self._tower("img", image, train, out)
    ztxt = None if text is None else self._tower("txt", text, train, out)

    log_t = float(np.log(self.temperature_init))
    t = self.param("t", nn.initializers.constant(log_t), (1,), jnp.float32)
    out["t/parameterized"] = t
    out["t"] = jnp.exp(t)
    out["b"] = None
    if self.bias_init is not None:
      out["b"] = self.param("b", nn.initializers.constant(self.bias_init),
                            (1,), jnp.float32)
    return zimg, ztxt, out


def _as_dict(cfg, what):
  if cfg is None:
    return {}
  if hasattr(cfg, "to_dict"):  # ml_collections.ConfigDict
    cfg = cfg.to_dict()
  cfg = dict(cfg)
  if "num_classes" in cfg:
    raise ValueError(f"two_towers: set the {what} embedding size with "
                     f"out_dim, not {what}.num_classes.")
  return cfg


def Model(image=None, text=None, image_model="vit",  # pylint: disable=C0103
          text_model="text_transformer", out_dim=(None, None),
          temperature_init=1.0, bias_init=None):
  """Builds a two-tower model (big_vision's `two_towers` config keys).

  Args:
    image: dict of image-tower kwargs, e.g. dict(variant="B/16",
      pool_type="map"). With an image head (out_dim[0] set) on a model that
      has `head_zeroinit` (vit, nfnet), it defaults to False: a zero head
      would make every image embedding zero.
    text: dict of text-tower kwargs, e.g. dict(variant="B", vocab_size=32_000).
      Each tower's own options apply, e.g. `remat=True` (with
      `remat_policy`) in either dict checkpoints that tower's blocks.
    image_model: registered name of the image tower.
    text_model: registered name of the text tower.
    out_dim: (image, text) embedding sizes (heads), or one int for both;
      None: no head on that tower.
    temperature_init: initial temperature exp(t) (SigLIP: 10, CLIP: 1/0.07).
    bias_init: initial bias `b` (SigLIP: -10); None: no bias.

  Returns:
    A flax module.
  """
  if out_dim is None or isinstance(out_dim, int):
    out_dim = (out_dim, out_dim)
  out_dim = tuple(out_dim)
  if len(out_dim) != 2:
    raise ValueError(f"two_towers: out_dim must be (image, text), got "
                     f"{out_dim}.")
  image, text = _as_dict(image, "image"), _as_dict(text, "text")
  for what, name, kw, dim in (("image", image_model, image, out_dim[0]),
                              ("text", text_model, text, out_dim[1])):
    try:  # Unknown tower kwargs fail here, not at the first init.
      tower = MODELS.get(name)(num_classes=dim, **kw)
    except TypeError as e:
      raise TypeError(f"two_towers {what} tower ({name!r}): {e}") from None
    if what == "image" and dim and hasattr(tower, "head_zeroinit"):
      image.setdefault("head_zeroinit", False)
  return _Model(image=image, text=text, image_model=image_model,
                text_model=text_model, out_dim=out_dim,
                temperature_init=temperature_init, bias_init=bias_init)


MODELS.register("two_towers", Model)
