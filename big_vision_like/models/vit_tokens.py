"""The ViT's extra tokens and FLIP's patch dropout (used by `vit.py`).

Encoder input layout, left to right (each part only when its option is on):

  [cls (pool_type="tok"), dist (dist_token), patches, registers]

- `dist` ([1, 1, D], DeiT's distillation token, "Training data-efficient
  image transformers", Touvron et al. 2021) comes right after `cls`; its
  output feeds the second head, `head_dist`.
- `registers` ([1, N, D], "Vision Transformers Need Registers", Darcet et
  al. 2023) come AFTER the patches (timm and DINOv2 put them before; since
  self-attention is equivariant to the order of the tokens and no position
  embedding is added to them, the outputs are the same). Every block attends
  to them; they are split off after `encoder_norm`, before pooling.
- `patch_dropout` (FLIP, "Scaling Language-Image Pre-training via Masking",
  Li et al. 2023) keeps a random subset of the patch tokens (after the
  position embedding) in training, before the tokens above are added.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def check(*, pool_type, dist_token, num_registers, patch_dropout):
  """Raises a ValueError naming the bad argument of these options."""
  if dist_token and pool_type != "tok":
    raise ValueError(f"dist_token=True needs pool_type='tok' (DeiT pools "
                     f"the class token), got pool_type={pool_type!r}.")
  if (isinstance(num_registers, bool)
      or not isinstance(num_registers, (int, np.integer)) or num_registers < 0):
    raise ValueError(f"num_registers={num_registers!r}: expected an int "
                     ">= 0 (the number of register tokens).")
  if (isinstance(patch_dropout, bool)
      or not isinstance(patch_dropout, (int, float, np.floating))
      or not 0.0 <= patch_dropout < 1.0):
    raise ValueError(f"patch_dropout={patch_dropout!r}: expected a rate in "
                     "[0, 1), the fraction of patch tokens dropped in "
                     "training.")


def num_kept(num_patches, rate):
  """round((1 - rate) * num_patches) patches, at least one."""
  return max(1, round((1.0 - rate) * num_patches))


def drop_patches(x, rate, rng):
  """Keeps a random subset of tokens per example (FLIP).

  Args:
    x: [B, L, D] patch tokens (with their position embedding).
    rate: fraction dropped; `num_kept(L, rate)` tokens are kept.
    rng: a PRNG key.

  Returns:
    (kept [B, K, D], indices [B, K] into L, ascending).
  """
  b, length, _ = x.shape
  k = num_kept(length, rate)
  noise = jax.random.uniform(rng, (b, length))
  idx = jnp.sort(jnp.argsort(noise, axis=1)[:, :k], axis=1)  # [B, K]
  return jnp.take_along_axis(x, idx[:, :, None], axis=1), idx


def add_tokens(module, x, *, cls, dist, num_registers):
  """[B, L, D] patches -> [B, cls + dist + L + num_registers, D].

  Creates the params `cls` (zeros, big_vision's), `dist` (normal, std 0.02,
  DeiT's trunc-normal) and `registers` (normal, std 1e-6, DINOv2's) on
  `module`, which must be inside its compact `__call__`.
  """
  b, _, d = x.shape
  tile = lambda t: jnp.tile(t, [b, 1, 1]).astype(x.dtype)
  front = []
  if cls:
    front.append(tile(module.param("cls", nn.initializers.zeros, (1, 1, d))))
  if dist:
    front.append(tile(module.param(
        "dist", nn.initializers.normal(stddev=0.02), (1, 1, d))))
  back = []
  if num_registers:
    back.append(tile(module.param(
        "registers", nn.initializers.normal(stddev=1e-6),
        (1, num_registers, d))))
  if not front and not back:
    return x
  return jnp.concatenate([*front, x, *back], axis=1)


def split_registers(x, num_registers):
  """[B, L + N, D] -> (tokens [B, L, D], registers [B, N, D] or None)."""
  if not num_registers:
    return x, None
  return x[:, :-num_registers], x[:, -num_registers:]
