"""RandAugment (Cubuk et al. 2019, arXiv:1909.13719) as the pp op `randaug`.

Works on uint8 [H, W, C] images (RGB, or one channel), with TF ops only, so
it runs eagerly and inside tf.data alike. Every random draw is stateless and
comes from the op's seed (`data["_rng"]`, see `pp.utils`): the same example
seed gives the same augmentation, which keeps input pipelines reproducible
and resumable.

Each of the `num_layers` layers picks one of the 16 sub-ops below uniformly
and applies it at `magnitude` (0..10). Ranges at magnitude 10 follow
big_vision's (TPU EfficientNet) RandAugment: rotate 30 degrees, shear 0.3,
translate 100 pixels, each with a random sign; Color/Contrast/Brightness/
Sharpness factor 0.1 + 1.8 * m / 10 (1.0 is the identity); Posterize keeps
int(4 * m / 10) bits; Solarize inverts pixels >= int(256 * m / 10) (so it is
the identity at magnitude 10, as in big_vision); SolarizeAdd adds
int(110 * m / 10) to pixels < 128; Cutout blanks a square of side
2 * int(40 * m / 10) around a random centre. Pixels uncovered by geometric
ops and the Cutout square get the value 128. Float results are rounded to
the nearest integer and saturated to 0..255.
"""

import math

import tensorflow as tf

from big_vision_like.pp import utils
from big_vision_like.registry import PP_OPS

MAX_MAGNITUDE = 10.0
FILL_VALUE = 128
_ROTATE_DEGREES = 30.0
_SHEAR = 0.3
_TRANSLATE_PIXELS = 100.0
_CUTOUT_HALF_SIDE = 40
_SOLARIZE_ADD = 110
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


def _fraction(magnitude):
  return float(magnitude) / MAX_MAGNITUDE


def _to_uint8(x):
  return utils.cast_like(x, tf.uint8)


def _blend(degenerate, image, factor):
  """`degenerate + factor * (image - degenerate)` as uint8 (factor 1: image)."""
  degenerate = tf.cast(degenerate, tf.float32)
  return _to_uint8(degenerate + factor * (tf.cast(image, tf.float32)
                                          - degenerate))


def _grayscale(image):
  """Float [H, W, 1] luma of an RGB (or one-channel) uint8 image."""
  image = tf.cast(image, tf.float32)
  if image.shape[-1] == 1:
    return image
  return tf.reduce_sum(image * tf.constant(_GRAY_WEIGHTS), -1, keepdims=True)


def _random_sign(seed):
  u = tf.random.stateless_uniform([], seed=seed)
  return tf.where(u < 0.5, -1.0, 1.0)


def _enhance_factor(magnitude):
  return 0.1 + 1.8 * _fraction(magnitude)


def _warp(image, transform):
  """Resamples `image` (nearest) at `transform` (output -> input pixels)."""
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=tf.cast(transform, tf.float32)[None],
      output_shape=tf.shape(image)[:2], fill_value=float(FILL_VALUE),
      interpolation="NEAREST", fill_mode="CONSTANT")
  return out[0]


def _affine(a0, a1, a2, b0, b1, b2):
  return tf.stack([tf.cast(v, tf.float32) for v in (a0, a1, a2, b0, b1, b2)]
                  + [tf.constant(0.0), tf.constant(0.0)])


# Sub-ops: fn(image uint8 [H, W, C], magnitude (Python number), seed) -> uint8.


def auto_contrast(image, magnitude, seed):
  """Stretches each channel to the full 0..255 range (PIL AutoContrast)."""
  del magnitude, seed
  x = tf.cast(image, tf.float32)
  lo = tf.reduce_min(x, axis=(0, 1))
  hi = tf.reduce_max(x, axis=(0, 1))
  scale = 255.0 / tf.maximum(hi - lo, 1.0)
  return tf.where(hi > lo, _to_uint8((x - lo) * scale), image)


def equalize(image, magnitude, seed):
  """Equalizes each channel's histogram (PIL ImageOps.equalize)."""
  del magnitude, seed
  channels = tf.transpose(tf.reshape(tf.cast(image, tf.int32),
                                     [-1, tf.shape(image)[-1]]))  # [C, N]
  hist = tf.math.bincount(channels, minlength=256, maxlength=256, axis=-1)
  # PIL ignores the count of the last non-empty bin (the channel's maximum).
  last = tf.gather(hist, tf.reduce_max(channels, axis=1), batch_dims=1)
  step = (tf.reduce_sum(hist, axis=1) - last) // 255  # [C]
  safe_step = tf.maximum(step, 1)[:, None]
  lut = (tf.cumsum(hist, axis=1) + safe_step // 2) // safe_step
  lut = tf.clip_by_value(tf.pad(lut[:, :-1], [[0, 0], [1, 0]]), 0, 255)
  mapped = tf.gather(lut, channels, batch_dims=1)
  mapped = tf.where(step[:, None] > 0, mapped, channels)
  return tf.cast(tf.reshape(tf.transpose(mapped), tf.shape(image)), tf.uint8)


def invert(image, magnitude, seed):
  """255 - image."""
  del magnitude, seed
  return 255 - image


def rotate(image, magnitude, seed):
  """Rotates about the centre by +-30 * m / 10 degrees."""
  angle = _random_sign(seed) * _ROTATE_DEGREES * _fraction(magnitude)
  angle = angle * math.pi / 180.0
  hw = tf.cast(tf.shape(image)[:2], tf.float32)
  cy, cx = (hw[0] - 1) / 2, (hw[1] - 1) / 2
  cos, sin = tf.cos(angle), tf.sin(angle)
  return _warp(image, _affine(cos, -sin, cx - cos * cx + sin * cy,
                              sin, cos, cy - sin * cx - cos * cy))


def posterize(image, magnitude, seed):
  """Keeps the int(4 * m / 10) most significant bits."""
  del seed
  bits = min(max(int(4 * _fraction(magnitude)), 0), 8)
  mask = (0xFF << (8 - bits)) & 0xFF
  return tf.bitwise.bitwise_and(image, tf.constant(mask, tf.uint8))


def solarize(image, magnitude, seed):
  """Inverts the pixels >= int(256 * m / 10)."""
  del seed
  threshold = int(256 * _fraction(magnitude))
  return tf.where(tf.cast(image, tf.int32) < threshold, image, 255 - image)


def solarize_add(image, magnitude, seed):
  """Adds int(110 * m / 10) to the pixels < 128 (saturating)."""
  del seed
  added = _to_uint8(tf.cast(image, tf.float32)
                    + int(_SOLARIZE_ADD * _fraction(magnitude)))
  return tf.where(image < 128, added, image)


def color(image, magnitude, seed):
  """Blends with the grayscale image (PIL ImageEnhance.Color)."""
  del seed
  return _blend(tf.round(_grayscale(image)), image, _enhance_factor(magnitude))


def contrast(image, magnitude, seed):
  """Blends with the mean gray level (PIL ImageEnhance.Contrast)."""
  del seed
  mean = tf.reduce_mean(_grayscale(image))
  return _blend(mean, image, _enhance_factor(magnitude))


def brightness(image, magnitude, seed):
  """Blends with black (PIL ImageEnhance.Brightness)."""
  del seed
  return _blend(0.0, image, _enhance_factor(magnitude))


def sharpness(image, magnitude, seed):
  """Blends with a smoothed image (PIL ImageEnhance.Sharpness).

  The smoothed image is PIL's SMOOTH filter inside, the image on the border.
  """
  del seed
  x = tf.cast(image, tf.float32)
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, tf.shape(image)[-1], 1])
  smooth = tf.nn.depthwise_conv2d(x[None], kernel, [1, 1, 1, 1], "VALID")[0]
  smooth = tf.round(tf.clip_by_value(smooth, 0.0, 255.0))
  border = tf.pad(tf.ones_like(smooth, tf.bool), [[1, 1], [1, 1], [0, 0]])
  smooth = tf.where(border, tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), x)
  return _blend(smooth, image, _enhance_factor(magnitude))


def shear_x(image, magnitude, seed):
  """Shears along x by +-0.3 * m / 10 (x_in = x + s * y)."""
  s = _random_sign(seed) * _SHEAR * _fraction(magnitude)
  return _warp(image, _affine(1.0, s, 0.0, 0.0, 1.0, 0.0))


def shear_y(image, magnitude, seed):
  """Shears along y by +-0.3 * m / 10 (y_in = y + s * x)."""
  s = _random_sign(seed) * _SHEAR * _fraction(magnitude)
  return _warp(image, _affine(1.0, 0.0, 0.0, s, 1.0, 0.0))


def translate_x(image, magnitude, seed):
  """Shifts horizontally by +-100 * m / 10 pixels."""
  t = _random_sign(seed) * _TRANSLATE_PIXELS * _fraction(magnitude)
  return _warp(image, _affine(1.0, 0.0, t, 0.0, 1.0, 0.0))


def translate_y(image, magnitude, seed):
  """Shifts vertically by +-100 * m / 10 pixels."""
  t = _random_sign(seed) * _TRANSLATE_PIXELS * _fraction(magnitude)
  return _warp(image, _affine(1.0, 0.0, 0.0, 0.0, 1.0, t))


def cutout(image, magnitude, seed):
  """Fills a square of side 2 * int(40 * m / 10) at a random centre."""
  half = int(_CUTOUT_HALF_SIDE * _fraction(magnitude))
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  center = tf.random.stateless_uniform([2], seed=seed, minval=0,
                                       maxval=tf.int32.max, dtype=tf.int32)
  cy, cx = center[0] % h, center[1] % w
  rows = tf.range(h)[:, None, None]
  cols = tf.range(w)[None, :, None]
  inside = ((rows >= cy - half) & (rows < cy + half)
            & (cols >= cx - half) & (cols < cx + half))
  return tf.where(inside, tf.constant(FILL_VALUE, tf.uint8), image)


# The order of big_vision's RandAugment op list.
OPS = {
    "AutoContrast": auto_contrast,
    "Equalize": equalize,
    "Invert": invert,
    "Rotate": rotate,
    "Posterize": posterize,
    "Solarize": solarize,
    "Color": color,
    "Contrast": contrast,
    "Brightness": brightness,
    "Sharpness": sharpness,
    "ShearX": shear_x,
    "ShearY": shear_y,
    "TranslateX": translate_x,
    "TranslateY": translate_y,
    "Cutout": cutout,
    "SolarizeAdd": solarize_add,
}
OP_NAMES = tuple(OPS)


def apply_op(image, index, magnitude, seed):
  """Applies sub-op number `index` (int or int32 tensor) of `OP_NAMES`.

  Args:
    image: uint8 [H, W, C].
    index: which op; a scalar tensor selects it with `tf.switch_case`.
    magnitude: the op's strength, 0..10 (a Python number).
    seed: stateless seed (shape [2]) for the op's random sign or position.

  Returns:
    The augmented uint8 image, of the input's shape.
  """
  branches = [lambda fn=fn: fn(image, magnitude, seed) for fn in OPS.values()]
  out = tf.switch_case(tf.convert_to_tensor(index, tf.int32), branches)
  out.set_shape(image.shape)
  return out


def _check_image(image):
  if image.dtype != tf.uint8:
    raise ValueError(f"randaug works on uint8 images, got {image.dtype.name} "
                     "(put it before value_range).")
  channels = image.shape[-1] if image.shape.rank else None
  if image.shape.rank not in (None, 3) or channels not in (None, 1, 3):
    raise ValueError(f"randaug works on [H, W, 3] or [H, W, 1] images, got "
                     f"shape {image.shape}.")


@PP_OPS.register("randaug")
@utils.keyed("image", random=True)
def get_randaug(num_layers=2, magnitude=10):
  """RandAugment: `num_layers` sub-ops, each picked uniformly, at `magnitude`.

  Args:
    num_layers: number of sub-ops applied in sequence (N in the paper).
    magnitude: shared strength of the sub-ops, 0..10 (M in the paper).

  Returns:
    The tensor function of (uint8 image [H, W, C], seed).
  """

  # Plain Python over static loops: autograph would only slow tracing down.
  @tf.autograph.experimental.do_not_convert
  def _randaug(image, seed):
    _check_image(image)
    for layer in range(num_layers):
      layer_seed = tf.random.experimental.stateless_fold_in(seed, layer)
      pick_seed, op_seed = tf.unstack(
          tf.random.experimental.stateless_split(layer_seed, 2))
      index = tf.random.stateless_uniform([], seed=pick_seed, minval=0,
                                          maxval=len(OPS), dtype=tf.int32)
      image = apply_op(image, index, magnitude, op_seed)
    return image

  return _randaug
