"""The resampling ops give big_vision's exact values.

big_vision resizes with `tf.image.resize` (float32), clips to the range of
the input's dtype and casts back with `tf.cast`: uint8 outputs are truncated
toward zero, float outputs are kept. The expected values below are written
in NumPy from `tf.image.resize`'s float output, independently of the ops.
"""

import numpy as np
import pytest
import tensorflow as tf

from big_vision_like.pp import builder
from big_vision_like.pp import utils

RNG = np.random.RandomState(1)
IMG_U8 = RNG.randint(0, 256, (8, 6, 3)).astype(np.uint8)
IMG_F = RNG.uniform(0, 255, (8, 6, 3)).astype(np.float32)
IMAGES = {"uint8": IMG_U8, "float32": IMG_F}
METHODS = ["nearest", "bilinear", "area", "bicubic"]


def _run(pp, image, seed=None):
  data = {"image": tf.constant(image)}
  if seed is not None:
    data["_seed"] = tf.constant(seed, tf.int64)
  return builder.get_preprocess_fn(pp)(data)["image"].numpy()


def _tf_resize(image, hw, method="bilinear", antialias=False):
  return tf.image.resize(image, hw, method=method, antialias=antialias).numpy()


def _cast_rule(resized, dtype, rounding=False):
  """big_vision's rule in NumPy: uint8 clipped, then truncated toward zero."""
  if np.dtype(dtype) != np.uint8:
    return resized.astype(dtype)  # Floats are kept as they are.
  if rounding:
    resized = np.round(resized)  # Halves to even, as tf.round.
  return np.trunc(np.clip(resized, 0, 255)).astype(np.uint8)


def _expected(image, hw, method, antialias, rounding=False):
  resized = _tf_resize(image, hw, method, antialias)
  return _cast_rule(resized, image.dtype, rounding)


def _side_hw(hw, size, longer):
  """big_vision's new sides, in float32: round(side * size / short_or_long)."""
  factor = np.float32(size) / np.float32(max(hw) if longer else min(hw))
  return tuple(int(np.round(np.float32(s) * factor)) for s in hw)


def _assert_exact(out, want):
  assert out.dtype == want.dtype and out.shape == want.shape
  np.testing.assert_array_equal(out, want)


def _assert_truncation_matters(image, hw, method, antialias):
  """The case would fail under rounding: some fraction is >= 0.5."""
  if image.dtype == np.uint8 and method != "nearest":
    resized = _tf_resize(image, hw, method, antialias)
    assert (np.round(resized) != np.trunc(resized)).any()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("hw", [(13, 11), (5, 3)], ids=["up", "down"])
@pytest.mark.parametrize("dtype", IMAGES)
def test_resize_exact(dtype, hw, antialias, method):
  image = IMAGES[dtype]
  out = _run(f"resize({hw}, {method!r}, {antialias})", image)
  _assert_exact(out, _expected(image, hw, method, antialias))
  _assert_truncation_matters(image, hw, method, antialias)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("size", [9, 4], ids=["up", "down"])
@pytest.mark.parametrize("dtype", IMAGES)
def test_resize_small_exact(dtype, size, antialias, method):
  image = IMAGES[dtype]
  hw = _side_hw(image.shape[:2], size, longer=False)
  out = _run(f"resize_small({size}, {method!r}, {antialias})", image)
  _assert_exact(out, _expected(image, hw, method, antialias))
  _assert_truncation_matters(image, hw, method, antialias)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("size", [13, 5], ids=["up", "down"])
@pytest.mark.parametrize("dtype", IMAGES)
def test_resize_long_exact(dtype, size, antialias, method):
  image = IMAGES[dtype]
  hw = _side_hw(image.shape[:2], size, longer=True)
  out = _run(f"resize_long({size}, {method!r}, {antialias})", image)
  _assert_exact(out, _expected(image, hw, method, antialias))
  _assert_truncation_matters(image, hw, method, antialias)


@pytest.mark.parametrize("op,size,in_hw,out_hw", [
    ("resize_small", 4, (8, 6), (5, 4)),   # 8 * 4/6 = 5.33.
    ("resize_small", 1, (5, 2), (2, 1)),   # 2.5: halves go to even.
    ("resize_small", 1, (7, 2), (4, 1)),   # 3.5 -> 4.
    ("resize_small", 12, (6, 8), (12, 16)),
    ("resize_long", 5, (5, 10), (2, 5)),   # 2.5 -> 2.
    ("resize_long", 5, (3, 7), (2, 5)),    # 2.14.
    ("resize_long", 20, (8, 6), (20, 15)),
])
def test_resize_small_and_long_sides_by_hand(op, size, in_hw, out_hw):
  image = np.zeros((*in_hw, 1), np.uint8)
  assert _run(f"{op}({size})", image).shape == (*out_hw, 1)
  assert _side_hw(in_hw, size, longer=op == "resize_long") == out_hw


def test_truncation_by_hand():
  # Bilinear, half-pixel centres: samples at x = -0.25, 0.25, 0.75, 1.25 of
  # [0, 9] are 0, 2.25, 6.75, 9.
  image = np.array([[[0], [9]]], np.uint8)
  np.testing.assert_allclose(_tf_resize(image, (1, 4))[0, :, 0],
                             [0, 2.25, 6.75, 9])
  assert _run("resize((1, 4))", image)[0, :, 0].tolist() == [0, 2, 6, 9]
  out = _run("resize((1, 4), rounding=True)", image)
  assert out[0, :, 0].tolist() == [0, 2, 7, 9]
  out = _run("resize((1, 4))", image.astype(np.float32))
  assert out[0, :, 0].tolist() == [0, 2.25, 6.75, 9]


def _checkerboard(dtype, high):
  board = (np.indices((4, 4)).sum(0) % 2)[..., None] * high
  return np.repeat(board, 3, -1).astype(dtype)


@pytest.mark.parametrize("antialias", [False, True])
def test_bicubic_overshoot_is_clipped_for_uint8(antialias):
  image = _checkerboard(np.uint8, 255)
  resized = _tf_resize(image, (9, 9), "bicubic", antialias)
  assert resized.max() > 256 and resized.min() < -1  # The clip matters.
  pp = f"resize(9, 'bicubic', {antialias})"
  out = _run(pp, image)
  _assert_exact(out, _cast_rule(resized, np.uint8))
  assert out.min() == 0 and out.max() == 255
  out = _run(pp[:-1] + ", rounding=True)", image)
  _assert_exact(out, _cast_rule(resized, np.uint8, rounding=True))


def test_bicubic_overshoot_is_kept_for_float():
  image = _checkerboard(np.float32, 1.0)
  out = _run("resize(9, 'bicubic')", image)
  _assert_exact(out, _tf_resize(image, (9, 9), "bicubic"))
  assert out.max() > 1.0 and out.min() < 0.0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", IMAGES)
def test_rounding_option(dtype, method):
  image = IMAGES[dtype]
  for pp, hw in [("resize((13, 11), {m!r}, rounding=True)", (13, 11)),
                 ("resize_small(4, {m!r}, rounding=True)", (5, 4)),
                 ("resize_long(16, {m!r}, rounding=True)", (16, 12))]:
    out = _run(pp.format(m=method), image)
    antialias = pp.startswith("resize_long")  # resize_long's default.
    resized = _tf_resize(image, hw, method, antialias)
    _assert_exact(out, _cast_rule(resized, image.dtype, rounding=True))


def test_cast_back_rule():
  x = tf.constant([-7.0, -0.3, 0.0, 4.5, 4.9, 5.5, 254.99, 255.6, 300.0])
  out = utils.cast_back(x, tf.uint8).numpy()
  assert out.tolist() == [0, 0, 0, 4, 4, 5, 254, 255, 255]
  out = utils.cast_back(x, tf.uint8, rounding=True).numpy()
  assert out.tolist() == [0, 0, 0, 4, 5, 6, 255, 255, 255]
  out = utils.cast_back(x, tf.float32, rounding=True).numpy()
  assert out.tolist() == x.numpy().tolist()
  out = utils.cast_back(tf.constant([np.inf, 1.5]), tf.float32).numpy()
  assert out.tolist() == [np.finfo(np.float32).max, 1.5]
  assert utils.cast_back(x, tf.float64).dtype == tf.float64


@pytest.mark.parametrize("rounding", [False, True])
@pytest.mark.parametrize("dtype", IMAGES)
def test_inception_crop_resize_exact(dtype, rounding):
  image = IMAGES[dtype]
  for s in range(4):
    # Both ops first in their pp string: same per-op seed, same box.
    crop = _run("inception_crop(area_min=50)", image, seed=[s, 3])
    out = _run(f"inception_crop(13, 50, method='bicubic', antialias=True, "
               f"rounding={rounding})", image, seed=[s, 3])
    want = _expected(crop, (13, 13), "bicubic", True, rounding)
    _assert_exact(out, want)


@pytest.mark.parametrize("rounding", [False, True])
def test_decode_jpeg_and_inception_crop_resize_exact(rounding):
  png = tf.io.encode_png(IMG_U8).numpy()
  for s in range(4):
    crop = _run("inception_crop", IMG_U8, seed=[s, 3])
    out = _run(f"decode_jpeg_and_inception_crop((7, 9), rounding={rounding})",
               png, seed=[s, 3])
    _assert_exact(out, _expected(crop, (7, 9), "bilinear", False, rounding))


@pytest.mark.parametrize("rounding", [False, True])
def test_random_affine_cast_rule(rounding):
  pp = f"random_affine((13, 11), 20, 0.2, 0.1, rounding={rounding})"
  for s in range(3):
    # The op warps in float32, so a float32 copy gives its float values.
    warped = _run(pp, IMG_U8.astype(np.float32), seed=[s, 0])
    out = _run(pp, IMG_U8, seed=[s, 0])
    _assert_exact(out, _cast_rule(warped, np.uint8, rounding))
    assert (np.round(warped) != np.trunc(warped)).any()


def test_pipeline_decode_resize_value_range():
  png = tf.io.encode_png(IMG_U8).numpy()
  out = _run("decode|resize(13)|value_range(-1,1)", png)
  resized = _cast_rule(_tf_resize(IMG_U8, (13, 13)), np.uint8)
  want = np.float32(-1) + resized.astype(np.float32) / np.float32(255) * 2
  _assert_exact(out, want.astype(np.float32))
  rounded = _run("decode|resize(13, rounding=True)|value_range(-1,1)", png)
  assert not np.array_equal(out, rounded)
