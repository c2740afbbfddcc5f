"""Image pp ops (on HWC tensors), with big_vision's names and signatures.

Every op reads and writes `data["image"]` unless given `key=` or
`inkey=`/`outkey=` (see `utils.keyed`).

dtype convention: `resize`, `resize_small`, `resize_long`, `inception_crop`
and `random_affine` return the input's dtype. Float inputs stay float
(bit-identical to `tf.image.resize` for float32); integer inputs (uint8
after `decode`) are rounded to nearest and saturated, not truncated.
`value_range`, `vgg_value_range` and `clip_value_range` return float32.
"""

import math

import tensorflow as tf

from big_vision_like.pp import utils
from big_vision_like.registry import PP_OPS


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

  def _decode(image):
    if image.dtype != tf.string:
      return image
    image = tf.io.decode_image(image, channels=channels,
                               expand_animations=False, dtype=tf.uint8)
    image.set_shape([None, None, channels])
    return image

  return _decode


def _resize(image, size, method, antialias):
  out = tf.image.resize(image, size, method=method, antialias=antialias)
  return utils.cast_like(out, image.dtype)


def _resize_side(image, size, side_fn, method, antialias):
  """Resizes so that side `side_fn([h, w])` becomes `size`, keeping aspect."""
  hw = tf.cast(tf.shape(image)[:2], tf.float32)
  ratio = float(size) / side_fn(hw)
  new_hw = tf.cast(tf.round(hw * ratio), tf.int32)
  return _resize(image, new_hw, method, antialias)


@PP_OPS.register("resize")
@utils.keyed("image")
def get_resize(size, method="bilinear", antialias=False):
  """Resizes to `size` (int or (h, w)) with `tf.image.resize`, keeping dtype."""
  size = utils.maybe_repeat(size, 2)
  return lambda image: _resize(image, size, method, antialias)


@PP_OPS.register("resize_small")
@utils.keyed("image")
def get_resize_small(size, method="area", antialias=False):
  """Resizes so that the smaller side is `size`, keeping the aspect ratio."""
  return lambda image: _resize_side(image, size, tf.reduce_min, method,
                                    antialias)


@PP_OPS.register("central_crop")
@utils.keyed("image")
def get_central_crop(size=None):
  """Crops the centre `size` (int or (h, w); None: largest square)."""

  def _central_crop(image):
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    if size is None:
      ch = cw = tf.minimum(h, w)
    else:
      ch, cw = utils.maybe_repeat(size, 2)
    return tf.image.crop_to_bounding_box(image, (h - ch) // 2, (w - cw) // 2,
                                         ch, cw)

  return _central_crop


@PP_OPS.register("random_crop")
@utils.keyed("image", random=True)
def get_random_crop(size):
  """Crops a random `size` (int or (h, w)) window."""
  h, w = utils.maybe_repeat(size, 2)

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
  """Maps values linearly from [in_min, in_max] to [vmin, vmax], as float32."""

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
def get_random_affine(size, rotate=0, scale=0, shift=0, fill=0):
  """Resizes to `size` x `size` with a random affine warp, one resampling.

  With all amounts 0 this is `resize(size)` (bilinear, half-pixel centres).
  Output pixels whose source falls outside the image get `fill`.

  Args:
    size: output side (int) or (h, w).
    rotate: maximal rotation in degrees, drawn uniformly in +-rotate.
    scale: maximal zoom as a fraction (content grows by 1 + U(-scale, scale)).
    shift: maximal shift as a fraction of the image size, per axis.
    fill: value of pixels that come from outside the image.

  Returns:
    The tensor function of (image, seed).
  """
  out_h, out_w = utils.maybe_repeat(size, 2)

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
    return utils.cast_like(warped, image.dtype)

  return _random_affine


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
def get_resize_long(size, method="area", antialias=True):
  """Resizes so that the longer side is `size`, keeping the aspect ratio.

  Defaults follow big_vision (`area` with antialias).

  Args:
    size: the new length of the longer side.
    method: the `tf.image.resize` method.
    antialias: see `tf.image.resize`.

  Returns:
    The tensor function.
  """
  return lambda image: _resize_side(image, size, tf.reduce_max, method,
                                    antialias)


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


def _maybe_resize(image, size, method, antialias):
  if not size:
    return image
  return _resize(image, utils.maybe_repeat(size, 2), method, antialias)


@PP_OPS.register("inception_crop")
@utils.keyed("image", random=True)
def get_inception_crop(size=None, area_min=5, area_max=100,
                       method="bilinear", antialias=False, ratio_min=0.75,
                       ratio_max=1.33):
  """Takes an Inception-style random crop, then resizes it to `size`.

  The crop covers `area_min`..`area_max` percent of the image with an aspect
  ratio in [ratio_min, ratio_max] (Szegedy et al. 2015); when no such box is
  found in 100 attempts, the whole image is used.

  Args:
    size: output side (int) or (h, w); None keeps the crop's size.
    area_min: minimal crop area, in percent of the image.
    area_max: maximal crop area, in percent of the image.
    method: the `tf.image.resize` method.
    antialias: see `tf.image.resize`.
    ratio_min: minimal aspect ratio (width / height) of the crop.
    ratio_max: maximal aspect ratio of the crop.

  Returns:
    The tensor function of (image, seed).
  """
  box_args = (area_min, area_max, ratio_min, ratio_max)

  def _inception_crop(image, seed):
    crop = _crop_to_inception_box(image, seed, box_args)
    return _maybe_resize(crop, size, method, antialias)

  return _inception_crop


@PP_OPS.register("decode_jpeg_and_inception_crop")
@utils.keyed("image", random=True)
def get_decode_jpeg_and_inception_crop(size=None, area_min=5, area_max=100,
                                       ratio_min=0.75, ratio_max=1.33,
                                       method="bilinear", antialias=False):
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
    method: the `tf.image.resize` method.
    antialias: see `tf.image.resize`.

  Returns:
    The tensor function of (encoded image, seed), giving uint8 [h, w, 3].
  """
  box_args = (area_min, area_max, ratio_min, ratio_max)

  def _decode_and_crop_jpeg(data, seed):
    hw = tf.image.extract_jpeg_shape(data)[:2]
    shape = tf.concat([hw, [3]], axis=0)  # As after decode(channels=3).
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
    return _maybe_resize(crop, size, method, antialias)

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
