"""Image pp ops (on HWC tensors), with big_vision's names and signatures.

Every op reads and writes `data["image"]` unless given `key=` or
`inkey=`/`outkey=` (see `utils.keyed`).

dtype convention (big_vision's): the resampling ops `resize`, `resize_small`,
`resize_long`, `inception_crop` and `decode_jpeg_and_inception_crop` (given a
`size`) and `random_affine` return the input's dtype. They resample in
float32, clip to the range of the input's dtype and cast back with `tf.cast`
(`utils.cast_back`): integer inputs (uint8 after `decode`) are truncated
toward zero (4.9 -> 4, 255.6 -> 255), not rounded, exactly as big_vision;
float32 inputs give `tf.image.resize`'s values bit for bit (float inputs are
never rounded); `method="nearest"` keeps the input's values. The keyword-only
option `rounding=True` rounds integer outputs to nearest (halves to even)
before the clip instead: closer to the float result (by half a level on
average), but not big_vision's values.

`resize_small` / `resize_long` compute the new sides as big_vision does, in
float32: `round(side * (size / shorter_or_longer_side))`, halves to even.
`value_range`, `vgg_value_range` and `clip_value_range` return float32.

Arguments are checked when an op is built (`utils.check_*`), so a bad pp
string fails in `get_preprocess_fn`, naming the op and the argument.
"""

import math

import tensorflow as tf

from big_vision_like.pp import utils
from big_vision_like.registry import PP_OPS


# The `method`s of `tf.image.resize` (case matters).
RESIZE_METHODS = ("area", "bicubic", "bilinear", "gaussian", "lanczos3",
                  "lanczos5", "mitchellcubic", "nearest")


@PP_OPS.register("decode")
@utils.keyed("image")
def get_decode(channels=3):
  """Decodes an encoded image (PNG, JPEG, ...) to uint8 [H, W, channels].

  Already decoded (non-string) tensors pass through unchanged.

  Args:
    channels: number of output channels (1, 3 or 4).

  Returns:
    The tensor function.
  """
  utils.check_choice("decode", "channels", channels, (1, 3, 4))

  def _decode(image):
    if image.dtype != tf.string:
      return image
    image = tf.io.decode_image(image, channels=channels,
                               expand_animations=False, dtype=tf.uint8)
    image.set_shape([None, None, channels])
    return image

  return _decode


def _check_resampling(op, method, antialias, rounding, int_method_hint=""):
  """Checks the arguments that every resizing op takes.

  Args:
    op: the op's name, for messages.
    method: must be one of `RESIZE_METHODS`.
    antialias: must be a bool.
    rounding: must be a bool.
    int_method_hint: added to the message when `method` is an int, which
      usually means a second size was given where `method` goes.
  """
  is_int = isinstance(method, int) and not isinstance(method, bool)
  hint = f" (the argument after the size is `method`{int_method_hint})"
  utils.check_choice(op, "method", method, RESIZE_METHODS,
                     hint if is_int else "")
  utils.check_bool(op, "antialias", antialias)
  utils.check_bool(op, "rounding", rounding)


def _resize(image, size, method, antialias, rounding):
  """`tf.image.resize`, then big_vision's clip and cast back to the dtype."""
  out = tf.image.resize(image, size, method=method, antialias=antialias)
  return utils.cast_back(out, image.dtype, rounding)


def _resize_side(image, size, side_fn, method, antialias, rounding):
  """Resizes so that side `side_fn([h, w])` becomes `size`, keeping aspect.

  The new sides are big_vision's: `round(side * factor)` in float32 (halves
  to even) with `factor = size / side_fn([h, w])`.
  """
  hw = tf.cast(tf.shape(image)[:2], tf.float32)
  factor = tf.cast(size, tf.float32) / side_fn(hw)
  new_hw = tf.cast(tf.round(hw * factor), tf.int32)
  return _resize(image, new_hw, method, antialias, rounding)


@PP_OPS.register("resize")
@utils.keyed("image")
def get_resize(size, method="bilinear", antialias=False, *, rounding=False):
  """Resizes to `size` with `tf.image.resize`, keeping the dtype.

  Args:
    size: the new side (int) or (h, w).
    method: one of `RESIZE_METHODS`.
    antialias: see `tf.image.resize`.
    rounding: round integer outputs to nearest instead of truncating them
      toward zero as big_vision does; see the module docstring.

  Returns:
    The tensor function.
  """
  hw = utils.check_size("resize", "size", size)
  _check_resampling(
      "resize", method, antialias, rounding,
      f"; give (h, w) as one tuple: resize(({size!r}, {method!r}))")
  return lambda image: _resize(image, hw, method, antialias, rounding)


def _get_resize_side(op, size, side_fn, method, antialias, rounding):
  """The tensor function of `resize_small` or `resize_long`."""
  utils.check_positive_int(op, "size", size)
  _check_resampling(op, method, antialias, rounding,
                    f"; {op} takes one side length")
  return lambda image: _resize_side(image, size, side_fn, method, antialias,
                                    rounding)


@PP_OPS.register("resize_small")
@utils.keyed("image")
def get_resize_small(size, method="area", antialias=False, *,
                     rounding=False):
  """Resizes so that the smaller side is `size`, keeping the aspect ratio.

  Defaults follow big_vision (`area` without antialias).

  Args:
    size: the new length of the smaller side.
    method: one of `RESIZE_METHODS`.
    antialias: see `tf.image.resize`.
    rounding: round integer outputs instead of truncating them.

  Returns:
    The tensor function.
  """
  return _get_resize_side("resize_small", size, tf.reduce_min, method,
                          antialias, rounding)


@PP_OPS.register("central_crop")
@utils.keyed("image")
def get_central_crop(size=None):
  """Crops the centre `size` (int or (h, w); None: largest square)."""
  if size is not None:
    size = utils.check_size("central_crop", "size", size)

  def _central_crop(image):
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    if size is None:
      ch = cw = tf.minimum(h, w)
    else:
      ch, cw = size
    return tf.image.crop_to_bounding_box(image, (h - ch) // 2, (w - cw) // 2,
                                         ch, cw)

  return _central_crop


@PP_OPS.register("random_crop")
@utils.keyed("image", random=True)
def get_random_crop(size):
  """Crops a random `size` (int or (h, w)) window."""
  h, w = utils.check_size("random_crop", "size", size)

  def _random_crop(image, seed):
    crop = tf.image.stateless_random_crop(
        image, tf.stack([h, w, tf.shape(image)[-1]]), seed=seed)
    crop.set_shape([h, w, image.shape[-1]])
    return crop

  return _random_crop


@PP_OPS.register("flip_lr")
@utils.keyed("image", random=True)
def get_random_flip_lr():
  """Flips left-right with probability 1/2."""
  return lambda image, seed: tf.image.stateless_random_flip_left_right(
      image, seed)


@PP_OPS.register("value_range")
@utils.keyed("image")
def get_value_range(vmin=-1, vmax=1, in_min=0, in_max=255.0,
                    clip_values=False):
  """Maps values linearly from [in_min, in_max] to [vmin, vmax], as float32.

  Args:
    vmin: the output value of `in_min`.
    vmax: the output value of `in_max`.
    in_min: an input value (0 for decoded images).
    in_max: another input value (255 for decoded images).
    clip_values: clip the output to [vmin, vmax].

  Returns:
    The tensor function.
  """
  for name, value in [("vmin", vmin), ("vmax", vmax), ("in_min", in_min),
                      ("in_max", in_max)]:
    utils.check_number("value_range", name, value)
  if in_min == in_max:
    raise utils.ArgumentError("value_range", "in_max", in_max,
                              f"must differ from in_min={in_min!r}")
  utils.check_bool("value_range", "clip_values", clip_values)

  def _value_range(image):
    image = tf.cast(image, tf.float32)
    image = (image - in_min) / (in_max - in_min)
    image = vmin + image * (vmax - vmin)
    if clip_values:
      image = tf.clip_by_value(image, vmin, vmax)
    return image

  return _value_range


@PP_OPS.register("grayscale_to_rgb")
@utils.keyed("image")
def get_grayscale_to_rgb():
  """Repeats a single channel three times (3-channel input is unchanged)."""

  def _to_rgb(image):
    if image.shape[-1] == 3:
      return image
    shape = tf.concat([tf.shape(image)[:-1], [3]], axis=0)
    return tf.broadcast_to(image, shape)

  return _to_rgb


@PP_OPS.register("random_affine")
@utils.keyed("image", random=True)
def get_random_affine(size, rotate=0, scale=0, shift=0, fill=0, *,
                      rounding=False):
  """Resizes to `size` x `size` with a random affine warp, one resampling.

  With all amounts 0 this is `resize(size)` (bilinear, half-pixel centres).
  Output pixels whose source falls outside the image get `fill`.

  Args:
    size: output side (int) or (h, w).
    rotate: maximal rotation in degrees, drawn uniformly in +-rotate.
    scale: maximal zoom as a fraction (content grows by 1 + U(-scale, scale)).
    shift: maximal shift as a fraction of the image size, per axis.
    fill: value of pixels that come from outside the image.
    rounding: round integer outputs instead of truncating them.

  Returns:
    The tensor function of (image, seed).
  """
  out_h, out_w = _check_affine_args(size, rotate, scale, shift, fill,
                                    rounding)

  def _random_affine(image, seed):
    u = tf.random.stateless_uniform([4], seed=seed, minval=-1.0, maxval=1.0)
    angle = u[0] * rotate * math.pi / 180.0
    zoom = 1.0 + u[1] * scale
    shift_xy = u[2:] * shift * tf.constant([out_w, out_h], tf.float32)
    in_hw = tf.cast(tf.shape(image)[:2], tf.float32)
    transform = _affine_transform(in_hw, (out_h, out_w), angle, zoom, shift_xy)
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image, tf.float32)[None], transforms=transform[None],
        output_shape=tf.constant([out_h, out_w], tf.int32),
        fill_value=tf.constant(0.0), interpolation="BILINEAR",
        fill_mode="NEAREST")[0]
    inside = _source_inside(transform, in_hw, (out_h, out_w))
    warped = tf.where(inside[..., None], warped, tf.cast(fill, tf.float32))
    return utils.cast_back(warped, image.dtype, rounding)

  return _random_affine


def _check_affine_args(size, rotate, scale, shift, fill, rounding):
  """Checks `random_affine`'s arguments; returns the output (h, w)."""
  op = "random_affine"
  hw = utils.check_size(op, "size", size)
  utils.check_number(op, "rotate", rotate, low=0)
  if utils.check_number(op, "scale", scale, low=0) >= 1:
    raise utils.ArgumentError(op, "scale", scale, "must be < 1")
  utils.check_number(op, "shift", shift, low=0)
  utils.check_number(op, "fill", fill)
  utils.check_bool(op, "rounding", rounding)
  return hw


def _affine_transform(in_hw, out_hw, angle, zoom, shift_xy):
  """The 8-vector mapping output pixel indices to input pixel indices.

  Output offsets from the centre (in output pixels, half-pixel centres) are
  un-shifted, un-rotated, un-zoomed, then scaled to the input size.
  """
  in_h, in_w = in_hw[0], in_hw[1]
  out_h, out_w = out_hw
  sx, sy = in_w / out_w, in_h / out_h
  cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
  ox = 0.5 - out_w / 2 - shift_xy[0]
  oy = 0.5 - out_h / 2 - shift_xy[1]
  a0, a1 = sx * cos, sx * sin
  a2 = sx * (cos * ox + sin * oy) + in_w / 2 - 0.5
  b0, b1 = -sy * sin, sy * cos
  b2 = sy * (-sin * ox + cos * oy) + in_h / 2 - 0.5
  return tf.stack([a0, a1, a2, b0, b1, b2, 0.0, 0.0])


def _source_inside(transform, in_hw, out_hw):
  """[H, W] bool: whether each output pixel's source lies on the image."""
  ys, xs = tf.meshgrid(tf.range(out_hw[0], dtype=tf.float32),
                       tf.range(out_hw[1], dtype=tf.float32), indexing="ij")
  src_x = transform[0] * xs + transform[1] * ys + transform[2]
  src_y = transform[3] * xs + transform[4] * ys + transform[5]
  eps = 1e-4  # Tolerates round-off at the border for the identity warp.
  return ((src_x >= -0.5 - eps) & (src_x <= in_hw[1] - 0.5 + eps)
          & (src_y >= -0.5 - eps) & (src_y <= in_hw[0] - 0.5 + eps))


@PP_OPS.register("resize_long")
@utils.keyed("image")
def get_resize_long(size, method="area", antialias=True, *, rounding=False):
  """Resizes so that the longer side is `size`, keeping the aspect ratio.

  Defaults follow big_vision (`area` with antialias).

  Args:
    size: the new length of the longer side.
    method: one of `RESIZE_METHODS`.
    antialias: see `tf.image.resize`.
    rounding: round integer outputs instead of truncating them.

  Returns:
    The tensor function.
  """
  return _get_resize_side("resize_long", size, tf.reduce_max, method,
                          antialias, rounding)


def _inception_box(image_shape, seed, area_min, area_max, ratio_min,
                   ratio_max):
  """Samples an Inception-style crop: (begin [3], size [3]) of `image_shape`.

  Only the height and width of `image_shape` matter; the box depends on them
  and `seed` alone, so a decoded image and its JPEG bytes get the same box.
  """
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      image_shape, bounding_boxes=tf.zeros([0, 0, 4], tf.float32), seed=seed,
      min_object_covered=0.0, aspect_ratio_range=(ratio_min, ratio_max),
      area_range=(area_min / 100, area_max / 100),
      use_image_if_no_bounding_boxes=True)
  return begin, size


def _crop_to_inception_box(image, seed, box_args):
  """Crops a decoded image [H, W, C] to its Inception box."""
  begin, crop_size = _inception_box(tf.shape(image), seed, *box_args)
  crop = tf.slice(image, begin, crop_size)
  crop.set_shape([None, None, image.shape[-1]])
  return crop


def _check_crop_args(op, size, area_min, area_max, ratio_min, ratio_max):
  """Checks the Inception-crop arguments; returns `size` as (h, w) or None."""
  hw = None if size is None else utils.check_size(op, "size", size)
  if not 0 < utils.check_number(op, "area_min", area_min) <= 100:
    hint = (" (the argument after the size is `area_min`; give (h, w) as one "
            "tuple)" if area_min > 100 else "")
    raise utils.ArgumentError(op, "area_min", area_min,
                              f"must be a percentage in (0, 100]{hint}")
  utils.check_number(op, "area_max", area_max, low=area_min, high=100)
  if utils.check_number(op, "ratio_min", ratio_min) <= 0:
    raise utils.ArgumentError(op, "ratio_min", ratio_min, "must be > 0")
  utils.check_number(op, "ratio_max", ratio_max, low=ratio_min)
  return hw


def _maybe_resize(image, hw, method, antialias, rounding):
  if hw is None:
    return image
  return _resize(image, hw, method, antialias, rounding)


@PP_OPS.register("inception_crop")
@utils.keyed("image", random=True)
def get_inception_crop(size=None, area_min=5, area_max=100,
                       method="bilinear", antialias=False, ratio_min=0.75,
                       ratio_max=1.33, *, rounding=False):
  """Takes an Inception-style random crop, then resizes it to `size`.

  The crop covers `area_min`..`area_max` percent of the image with an aspect
  ratio in [ratio_min, ratio_max] (Szegedy et al. 2015); when no such box is
  found in 100 attempts, the whole image is used.

  Args:
    size: output side (int) or (h, w); None keeps the crop's size.
    area_min: minimal crop area, in percent of the image.
    area_max: maximal crop area, in percent of the image.
    method: one of `RESIZE_METHODS`.
    antialias: see `tf.image.resize`.
    ratio_min: minimal aspect ratio (width / height) of the crop.
    ratio_max: maximal aspect ratio of the crop.
    rounding: round integer outputs of the resize instead of truncating them.

  Returns:
    The tensor function of (image, seed).
  """
  op = "inception_crop"
  hw = _check_crop_args(op, size, area_min, area_max, ratio_min, ratio_max)
  _check_resampling(op, method, antialias, rounding)
  box_args = (area_min, area_max, ratio_min, ratio_max)

  def _inception_crop(image, seed):
    crop = _crop_to_inception_box(image, seed, box_args)
    return _maybe_resize(crop, hw, method, antialias, rounding)

  return _inception_crop


@PP_OPS.register("decode_jpeg_and_inception_crop")
@utils.keyed("image", random=True)
def get_decode_jpeg_and_inception_crop(size=None, area_min=5, area_max=100,
                                       ratio_min=0.75, ratio_max=1.33,
                                       method="bilinear", antialias=False,
                                       *, rounding=False):
  """`decode|inception_crop(...)` fused: decodes only the crop of a JPEG.

  The box is the one `inception_crop` picks for the same seed. JPEG bytes
  are decoded with `tf.image.decode_and_crop_jpeg`; other encoded images
  (PNG, ...) are decoded whole, then cropped; decoded images are just
  cropped. Decoding only the window can change the crop's first and last
  columns by a few levels for chroma-subsampled (4:2:0) JPEGs (libjpeg
  upsamples chroma without the neighbouring pixels); 4:4:4 and grayscale
  JPEGs give exactly the pixels of `decode|inception_crop`.

  Args:
    size: output side (int) or (h, w); None keeps the crop's size.
    area_min: minimal crop area, in percent of the image.
    area_max: maximal crop area, in percent of the image.
    ratio_min: minimal aspect ratio (width / height) of the crop.
    ratio_max: maximal aspect ratio of the crop.
    method: one of `RESIZE_METHODS`.
    antialias: see `tf.image.resize`.
    rounding: round the outputs of the resize instead of truncating them.

  Returns:
    The tensor function of (encoded image, seed), giving uint8 [h, w, 3].
  """
  op = "decode_jpeg_and_inception_crop"
  hw = _check_crop_args(op, size, area_min, area_max, ratio_min, ratio_max)
  _check_resampling(op, method, antialias, rounding)
  box_args = (area_min, area_max, ratio_min, ratio_max)

  def _decode_and_crop_jpeg(data, seed):
    jpeg_hw = tf.image.extract_jpeg_shape(data)[:2]
    shape = tf.concat([jpeg_hw, [3]], axis=0)  # As after decode(channels=3).
    begin, crop_size = _inception_box(shape, seed, *box_args)
    window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
    return tf.image.decode_and_crop_jpeg(data, window, channels=3)

  def _decode_then_crop(data, seed):
    image = tf.io.decode_image(data, channels=3, expand_animations=False,
                               dtype=tf.uint8)
    return _crop_to_inception_box(image, seed, box_args)

  def _op(data, seed):
    if data.dtype != tf.string:
      crop = _crop_to_inception_box(data, seed, box_args)
    else:
      crop = tf.cond(tf.io.is_jpeg(data),
                     lambda: _decode_and_crop_jpeg(data, seed),
                     lambda: _decode_then_crop(data, seed))
      crop.set_shape([None, None, 3])
    return _maybe_resize(crop, hw, method, antialias, rounding)

  return _op


@PP_OPS.register("vgg_value_range")
@utils.keyed("image")
def get_vgg_value_range(mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),
                        std=(0.229 * 255, 0.224 * 255, 0.225 * 255)):
  """`(image - mean) / std` as float32, ImageNet statistics by default.

  As in big_vision, `mean` and `std` are in the units of the input (0..255
  for decoded images), one value per channel.

  Args:
    mean: per-channel values to subtract.
    std: per-channel values to divide by.

  Returns:
    The tensor function.
  """
  utils.check_numbers("vgg_value_range", "mean", mean)
  utils.check_numbers("vgg_value_range", "std", std)
  if 0 in (std if isinstance(std, (tuple, list)) else [std]):
    raise utils.ArgumentError("vgg_value_range", "std", std,
                              "must not contain 0")
  return _normalize(mean, std)


def _normalize(mean, std):
  mean = tf.constant(mean, tf.float32)
  std = tf.constant(std, tf.float32)
  return lambda image: (tf.cast(image, tf.float32) - mean) / std


# CLIP's image normalisation (OpenAI CLIP, also used by big_vision), 0..1.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@PP_OPS.register("clip_value_range")
@utils.keyed("image")
def get_clip_value_range():
  """Normalises a 0..255 image with CLIP's mean and std, as float32.

  This is big_vision's `clip_value_range`: the value range that OpenAI's
  CLIP models expect ("clip" names the model, not clipping; for clipping use
  `value_range(..., clip_values=True)`).

  Returns:
    The tensor function.
  """
  return _normalize(tuple(m * 255 for m in CLIP_MEAN),
                    tuple(s * 255 for s in CLIP_STD))


# DeiT III's augmentation (Touvron et al. 2022, "DeiT III: Revenge of the
# ViT", Sec. 3 and Table 1): a "simple random crop" (resize, reflect-padded
# random crop) and a horizontal flip, then "3-Augment": one of grayscale,
# solarization and Gaussian blur, chosen uniformly; then colour jitter 0.3.
# Each op draws from its own stateless seed (`utils.keyed(random=True)`).

# ITU-R 601-2 luma, the weights of PIL's "L" conversion (torchvision's
# Grayscale on PIL images).
_LUMA = (0.299, 0.587, 0.114)


def _check_probability(op, p):
  utils.check_number(op, "p", p, low=0, high=1)


def _applied(seed, p):
  """Whether a random op with probability `p` acts (a scalar bool)."""
  return tf.random.stateless_uniform([], seed=seed) < p


def _grayscale(image):
  """Luma, repeated over the 3 channels, in the input's dtype.

  `sum_c luma_c * x_c` in float32, rounded to nearest for integer dtypes
  (as PIL); one-channel images are returned unchanged.
  """
  if image.shape[-1] == 1:
    return image
  x = tf.cast(image, tf.float32)
  luma = tf.reduce_sum(x * tf.constant(_LUMA), -1, keepdims=True)
  return utils.cast_like(tf.broadcast_to(luma, tf.shape(x)), image.dtype)


def _solarize(image, threshold, max_value):
  """Pixels >= `threshold` become `max_value - x` (PIL's ImageOps.solarize)."""
  inverted = tf.cast(max_value - tf.cast(image, tf.float32), image.dtype)
  return tf.where(tf.cast(image, tf.float32) < threshold, image, inverted)


def _gaussian_blur(image, sigma, radius):
  """Separable Gaussian blur with std `sigma` over taps -radius..radius.

  Weights `exp(-k^2 / (2 sigma^2))`, normalised to sum 1; borders repeat the
  edge pixel; integer outputs are rounded to nearest.
  """
  x = tf.cast(image, tf.float32)
  taps = tf.range(-radius, radius + 1, dtype=tf.float32)
  w = tf.exp(-0.5 * tf.square(taps / sigma))
  w = w / tf.reduce_sum(w)
  for axis in (0, 1):
    n = tf.shape(x)[axis]
    idx = tf.clip_by_value(tf.range(-radius, n + radius), 0, n - 1)
    padded = tf.gather(x, idx, axis=axis)  # Edge pixels repeated.
    # Sum over taps of the shifted copies: out[i] = sum_k w[k] pad[i + k].
    x = tf.add_n([w[k] * tf.gather(padded, tf.range(k, k + n), axis=axis)
                  for k in range(2 * radius + 1)])
  return utils.cast_like(x, image.dtype)


def _blur_radius(sigma_max):
  return max(1, math.ceil(3 * sigma_max))


def _check_blur(op, sigma_min, sigma_max):
  utils.check_number(op, "sigma_min", sigma_min, low=0)
  if utils.check_number(op, "sigma_max", sigma_max) < sigma_min or \
      sigma_max <= 0:
    raise utils.ArgumentError(op, "sigma_max", sigma_max,
                              f"must be > 0 and >= sigma_min={sigma_min}")


def _random_sigma(seed, sigma_min, sigma_max):
  return tf.maximum(tf.random.stateless_uniform(
      [], seed=seed, minval=sigma_min, maxval=sigma_max), 1e-6)


@PP_OPS.register("grayscale")
@utils.keyed("image", random=True)
def get_grayscale(p=1.0):
  """With probability `p`, the luma repeated over the channels (see above).

  DeiT III's 3-Augment uses p=1 inside `three_augment`; alone, DeiT's
  `gray_scale` defaults to p=0.2.
  """
  _check_probability("grayscale", p)

  def _op(image, seed):
    return tf.cond(_applied(seed, p), lambda: _grayscale(image),
                   lambda: image)

  return _op


@PP_OPS.register("solarize")
@utils.keyed("image", random=True)
def get_solarize(p=1.0, threshold=128, max_value=255):
  """With probability `p`, pixels >= `threshold` become `max_value - x`.

  Defaults are PIL's for uint8 images; for floats in [lo, hi] use
  `max_value=lo + hi` (e.g. 1.0 for [0, 1]).
  """
  _check_probability("solarize", p)
  utils.check_number("solarize", "threshold", threshold)
  utils.check_number("solarize", "max_value", max_value)

  def _op(image, seed):
    return tf.cond(_applied(seed, p),
                   lambda: _solarize(image, threshold, max_value),
                   lambda: image)

  return _op


@PP_OPS.register("gaussian_blur")
@utils.keyed("image", random=True)
def get_gaussian_blur(p=1.0, sigma_min=0.1, sigma_max=2.0):
  """With probability `p`, a Gaussian blur of std ~ U(sigma_min, sigma_max).

  As DeiT's GaussianBlur (PIL's GaussianBlur radius is the std): an exact
  separable Gaussian over taps +-ceil(3 sigma_max) (PIL approximates it
  with box blurs), edge pixels repeated at the borders.
  """
  _check_probability("gaussian_blur", p)
  _check_blur("gaussian_blur", sigma_min, sigma_max)
  radius = _blur_radius(sigma_max)

  def _op(image, seed):
    seeds = tf.random.experimental.stateless_split(seed, 2)
    sigma = _random_sigma(seeds[1], sigma_min, sigma_max)
    return tf.cond(_applied(seeds[0], p),
                   lambda: _gaussian_blur(image, sigma, radius),
                   lambda: image)

  return _op


@PP_OPS.register("three_augment")
@utils.keyed("image", random=True)
def get_three_augment(sigma_min=0.1, sigma_max=2.0, threshold=128,
                      max_value=255):
  """DeiT III's 3-Augment: grayscale, solarize or blur, chosen uniformly.

  The chosen op always acts (p=1); the blur's std is ~ U(sigma_min,
  sigma_max); `threshold` and `max_value` are the solarization's.
  """
  _check_blur("three_augment", sigma_min, sigma_max)
  utils.check_number("three_augment", "threshold", threshold)
  utils.check_number("three_augment", "max_value", max_value)
  radius = _blur_radius(sigma_max)

  def _op(image, seed):
    seeds = tf.random.experimental.stateless_split(seed, 2)
    choice = tf.random.stateless_uniform([], seed=seeds[0], maxval=3,
                                         dtype=tf.int32)
    sigma = _random_sigma(seeds[1], sigma_min, sigma_max)
    return tf.switch_case(choice, [
        lambda: _grayscale(image),
        lambda: _solarize(image, threshold, max_value),
        lambda: _gaussian_blur(image, sigma, radius)])

  return _op


@PP_OPS.register("simple_random_crop")
@utils.keyed("image", random=True)
def get_simple_random_crop(size, padding=4, method="bicubic", antialias=True,
                           *, rounding=False):
  """DeiT III's "simple random crop": resize, reflect-pad, random crop.

  The shorter side is resized to `size` (as `resize_small`; bicubic with
  antialiasing as torchvision's `Resize(size, interpolation=3)` on PIL
  images), each side is padded with `padding` mirrored pixels (torchvision's
  `padding_mode="reflect"`: the edge pixel is not repeated), and a random
  `size` x `size` window is cropped (`RandomCrop(size, padding)`).

  Args:
    size: the output side (int).
    padding: pixels mirrored on each side before cropping (< size).
    method: the resize method, one of `RESIZE_METHODS`.
    antialias: see `tf.image.resize`.
    rounding: round integer outputs of the resize instead of truncating.

  Returns:
    The tensor function of (image, seed).
  """
  op = "simple_random_crop"
  utils.check_positive_int(op, "size", size)
  is_int = isinstance(padding, int) and not isinstance(padding, bool)
  if not (is_int and 0 <= padding < size):
    raise utils.ArgumentError(op, "padding", padding,
                              f"must be an int in [0, size={size})")
  _check_resampling(op, method, antialias, rounding)

  def _op(image, seed):
    image = _resize_side(image, size, tf.reduce_min, method, antialias,
                         rounding)
    if padding:
      image = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]],
                     mode="REFLECT")
    crop = tf.image.stateless_random_crop(
        image, tf.stack([size, size, tf.shape(image)[-1]]), seed=seed)
    crop.set_shape([size, size, image.shape[-1]])
    return crop

  return _op
