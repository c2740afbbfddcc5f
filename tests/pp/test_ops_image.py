"""Tests of the image pp ops."""

import numpy as np
import pytest
import tensorflow as tf

from big_vision_like.pp import builder

RNG = np.random.RandomState(0)
IMG_U8 = RNG.randint(0, 256, (8, 6, 3)).astype(np.uint8)
IMG_F = RNG.uniform(size=(8, 6, 3)).astype(np.float32)


def _run(pp, image, seed=None, **extra):
  data = {"image": tf.constant(image), **extra}
  if seed is not None:
    data["_seed"] = tf.constant(seed, tf.int64)
  return builder.get_preprocess_fn(pp)(data)["image"].numpy()


def _run_tfdata(pp, image, seed=None):
  data = {"image": image[None]}
  if seed is not None:
    data["_seed"] = np.array([seed], np.int64)
  ds = tf.data.Dataset.from_tensor_slices(data)
  ds = ds.map(builder.get_preprocess_fn(pp))
  return next(ds.as_numpy_iterator())["image"]


@pytest.mark.parametrize("channels", [1, 3])
def test_decode_png(channels):
  gray = IMG_U8[..., :1]
  png = tf.io.encode_png(gray).numpy()
  out = _run(f"decode({channels})", png)
  assert out.dtype == np.uint8 and out.shape == (8, 6, channels)
  np.testing.assert_array_equal(out, np.repeat(gray, channels, axis=-1))


def test_decode_in_tf_data_has_static_channels():
  png = tf.io.encode_png(IMG_U8).numpy()
  ds = tf.data.Dataset.from_tensors({"image": png})
  ds = ds.map(builder.get_preprocess_fn("decode"))
  assert ds.element_spec["image"].shape.as_list() == [None, None, 3]
  np.testing.assert_array_equal(next(ds.as_numpy_iterator())["image"], IMG_U8)


def test_decode_passes_decoded_images_through():
  np.testing.assert_array_equal(_run("decode", IMG_U8), IMG_U8)


@pytest.mark.parametrize("size", [16, 5, (4, 10)])
@pytest.mark.parametrize("method", ["bilinear", "bicubic", "area"])
def test_resize_float_matches_tf(size, method):
  hw = (size, size) if isinstance(size, int) else size
  out = _run(f"resize({size!r}, method={method!r})", IMG_F)
  np.testing.assert_array_equal(out, tf.image.resize(IMG_F, hw, method))


def test_resize_uint8_truncates_and_keeps_dtype():
  out = _run("resize(13, antialias=True)", IMG_U8)
  ref = tf.image.resize(IMG_U8, (13, 13), antialias=True).numpy()
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out, np.trunc(np.clip(ref, 0, 255)))
  out = _run("resize(13, antialias=True, rounding=True)", IMG_U8)
  np.testing.assert_array_equal(out, np.clip(np.round(ref), 0, 255))


def test_resize_small_keeps_aspect_ratio():
  assert _run("resize_small(4)", IMG_F).shape == (5, 4, 3)
  assert _run("resize_small(12)", IMG_U8).dtype == np.uint8


def test_central_crop():
  np.testing.assert_array_equal(_run("central_crop(4)", IMG_U8),
                                IMG_U8[2:6, 1:5])
  np.testing.assert_array_equal(_run("central_crop((2, 6))", IMG_U8),
                                IMG_U8[3:5])
  np.testing.assert_array_equal(_run("central_crop", IMG_U8), IMG_U8[1:7])


def test_value_range():
  out = _run("value_range(-1, 1)", IMG_U8)
  np.testing.assert_allclose(out, IMG_U8 / 127.5 - 1, atol=1e-6)
  out = _run("value_range(0, 1, 0, 1)", IMG_F)
  np.testing.assert_allclose(out, IMG_F, atol=1e-6)
  out = _run("value_range(0, 2, in_min=0.25, in_max=0.75, clip_values=True)",
             IMG_F)
  np.testing.assert_allclose(out, np.clip((IMG_F - 0.25) * 4, 0, 2),
                             atol=1e-5)
  assert out.dtype == np.float32


def test_grayscale_to_rgb():
  out = _run("grayscale_to_rgb", IMG_U8[..., :1])
  np.testing.assert_array_equal(out, np.repeat(IMG_U8[..., :1], 3, -1))
  np.testing.assert_array_equal(_run("grayscale_to_rgb", IMG_U8), IMG_U8)


@pytest.mark.parametrize("pp", [
    "decode|resize(16)|value_range(-1, 1)",
    "resize((5, 7), antialias=True)|central_crop(4)",
    "resize_small(5, method='bilinear')",
    "value_range(0, 1)|resize(12, 'bicubic')|grayscale_to_rgb",
    "random_affine(10)",
])
def test_deterministic_ops_same_eagerly_and_in_tf_data(pp):
  np.testing.assert_array_equal(_run(pp, IMG_U8), _run_tfdata(pp, IMG_U8))


@pytest.mark.parametrize("pp,shape", [
    ("flip_lr", (8, 6, 3)),
    ("random_crop(4)", (4, 4, 3)),
    ("random_crop((3, 5))", (3, 5, 3)),
    ("random_affine(16, rotate=20, scale=0.2, shift=0.2)", (16, 16, 3)),
    ("random_affine((7, 9), rotate=20)", (7, 9, 3)),
])
def test_random_ops_follow_the_seed(pp, shape):
  outs = [_run(pp, IMG_F, seed=[s, 7]) for s in range(8)]
  assert all(o.shape == shape for o in outs)
  np.testing.assert_array_equal(outs[0], _run(pp, IMG_F, seed=[0, 7]))
  np.testing.assert_array_equal(outs[0], _run_tfdata(pp, IMG_F, seed=[0, 7]))
  assert any(not np.array_equal(outs[0], o) for o in outs[1:])


def test_flip_lr_flips_or_not():
  for s in range(6):
    out = _run("flip_lr", IMG_U8, seed=[s, 0])
    assert (np.array_equal(out, IMG_U8)
            or np.array_equal(out, IMG_U8[:, ::-1]))


def test_random_crop_is_a_window():
  out = _run("random_crop(4)", IMG_U8, seed=[1, 2])
  windows = [IMG_U8[i:i + 4, j:j + 4] for i in range(5) for j in range(3)]
  assert any(np.array_equal(out, w) for w in windows)


@pytest.mark.parametrize("size", [16, 8, 5, (12, 20), (3, 4)])
def test_random_affine_without_amounts_is_resize(size):
  hw = (size, size) if isinstance(size, int) else size
  out = _run(f"random_affine({size!r})", IMG_F, seed=[1, 2])
  np.testing.assert_allclose(out, tf.image.resize(IMG_F, hw), atol=1e-4)
  out = _run(f"random_affine({size!r})", IMG_U8)
  ref = np.trunc(np.clip(tf.image.resize(IMG_U8, hw).numpy(), 0, 255))
  assert out.dtype == np.uint8
  assert np.abs(out.astype(int) - ref).max() <= 1


def test_random_affine_fills_outside_the_image():
  out = _run("random_affine(16, shift=1.0, fill=-3)", IMG_F + 1,
             seed=[5, 6])
  assert (out == -3).any() and (out >= 0).any()
  assert set(np.unique(out[out < 0])) == {-3.0}


def test_random_affine_rotation_keeps_a_centered_blob():
  image = np.zeros((9, 9, 1), np.float32)
  image[3:6, 3:6] = 1.0
  out = _run("random_affine(9, rotate=30)", image, seed=[3, 3])
  assert out[4, 4, 0] == pytest.approx(1.0)
  assert out[0, 0, 0] == 0.0


def _photo(h, w):
  """A smooth uint8 test picture (JPEG-friendly, unlike noise)."""
  ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
  image = np.stack([xs / w, ys / h, (xs + ys) / (h + w)], -1) * 255
  return np.round(image).astype(np.uint8)


@pytest.mark.parametrize("pp,hw", [
    ("resize_small(4)", (5, 4)),   # 8x6: short side 6 -> 4.
    ("resize_small(12)", (16, 12)),
    ("resize_long(4)", (4, 3)),    # long side 8 -> 4.
    ("resize_long(20)", (20, 15)),
    ("resize_long(5, method='bilinear', antialias=False)", (5, 4)),
])
def test_resize_small_and_long_sizes(pp, hw):
  for image in (IMG_U8, IMG_F, IMG_U8.transpose(1, 0, 2)):
    out = _run(pp, image)
    want = hw if image.shape[0] >= image.shape[1] else hw[::-1]
    assert out.shape == (*want, 3) and out.dtype == image.dtype


def test_resize_long_matches_tf_resize():
  out = _run("resize_long(16, method='bicubic', antialias=True)", IMG_F)
  ref = tf.image.resize(IMG_F, (16, 12), "bicubic", antialias=True)
  np.testing.assert_array_equal(out, ref)


def test_vgg_value_range():
  out = _run("vgg_value_range", IMG_U8)
  mean = np.array([0.485, 0.456, 0.406]) * 255
  std = np.array([0.229, 0.224, 0.225]) * 255
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, (IMG_U8 - mean) / std, rtol=1e-6)
  out = _run("vgg_value_range((1, 2, 3), (2, 4, 8))", IMG_U8)
  np.testing.assert_array_equal(out, (IMG_U8 - np.float32([1, 2, 3]))
                                / np.float32([2, 4, 8]))


def test_clip_value_range_is_clip_normalisation():
  out = _run("clip_value_range", IMG_U8)
  mean = np.array([0.48145466, 0.4578275, 0.40821073])
  std = np.array([0.26862954, 0.26130258, 0.27577711])
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, (IMG_U8 / 255 - mean) / std, rtol=1e-5,
                             atol=1e-6)


def _box_of(crop, image):
  """(y, x) where `crop` sits in `image` (asserts it is a window)."""
  h, w = crop.shape[:2]
  for y in range(image.shape[0] - h + 1):
    for x in range(image.shape[1] - w + 1):
      if np.array_equal(image[y:y + h, x:x + w], crop):
        return y, x
  raise AssertionError("crop is not a window of the image")


def test_inception_crop_bounds_over_many_seeds():
  image = RNG.randint(0, 256, (60, 80, 3)).astype(np.uint8)
  fn = builder.get_preprocess_fn("inception_crop(area_min=20, area_max=60)")
  shapes = set()
  for s in range(40):
    crop = fn({"image": image, "_seed": tf.constant([s, 1], tf.int64)})
    crop = crop["image"].numpy()
    h, w = crop.shape[:2]
    shapes.add((h, w))
    area = h * w / (60 * 80)
    # sample_distorted_bounding_box rounds the sides to whole pixels.
    assert 0.18 <= area <= 0.62, (h, w)
    assert 0.75 * 0.9 <= w / h <= 1.33 / 0.9, (h, w)
    if s < 3:
      _box_of(crop, image)
  assert len(shapes) > 10


def test_inception_crop_resizes_and_keeps_dtype():
  out = _run("inception_crop(7)", IMG_U8, seed=[0, 1])
  assert out.shape == (7, 7, 3) and out.dtype == np.uint8
  out = _run("inception_crop((5, 9), method='bicubic')", IMG_F, seed=[0, 1])
  assert out.shape == (5, 9, 3) and out.dtype == np.float32


@pytest.mark.parametrize("subsampled", [False, True])
def test_decode_jpeg_and_inception_crop_equals_decode_then_crop(subsampled):
  jpeg = tf.io.encode_jpeg(_photo(48, 64),
                           chroma_downsampling=subsampled).numpy()
  decoded = _run("decode", jpeg)
  for s in range(12):
    # Both ops first in their pp string, so they get the same per-op seed.
    a = _run("decode_jpeg_and_inception_crop", jpeg, seed=[s, 5])
    b = _run("inception_crop", decoded, seed=[s, 5])
    assert a.shape == b.shape and a.dtype == np.uint8
    if subsampled:  # libjpeg may change the first and last columns.
      np.testing.assert_array_equal(a[:, 1:-1], b[:, 1:-1])
      assert np.abs(a.astype(int) - b).max() <= 40
    else:
      np.testing.assert_array_equal(a, b)


def test_decode_jpeg_and_inception_crop_other_inputs():
  image = _photo(30, 40)
  png = tf.io.encode_png(image).numpy()
  pp = "decode_jpeg_and_inception_crop(area_min=30)"
  from_png = _run(pp, png, seed=[3, 4])
  from_pixels = _run(pp, image, seed=[3, 4])
  np.testing.assert_array_equal(from_png, from_pixels)
  np.testing.assert_array_equal(
      from_pixels, _run("inception_crop(area_min=30)", image, seed=[3, 4]))
  out = _run("decode_jpeg_and_inception_crop(6, antialias=True)", png,
             seed=[3, 4])
  assert out.shape == (6, 6, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("pp", [
    "resize_long(5)",
    "resize_long(9, 'bilinear', False)",
    "vgg_value_range",
    "clip_value_range",
    "resize_small(7)|vgg_value_range((0, 0, 0), (255, 255, 255))",
])
def test_new_deterministic_ops_same_eagerly_and_in_tf_data(pp):
  np.testing.assert_array_equal(_run(pp, IMG_U8), _run_tfdata(pp, IMG_U8))


@pytest.mark.parametrize("pp,shape", [
    ("inception_crop(5)", (5, 5, 3)),
    ("inception_crop((4, 6), area_min=50)", (4, 6, 3)),
    ("decode_jpeg_and_inception_crop(5)", (5, 5, 3)),
    ("decode|decode_jpeg_and_inception_crop((3, 4))", (3, 4, 3)),
])
def test_new_random_ops_follow_the_seed(pp, shape):
  jpeg = np.array(tf.io.encode_jpeg(_photo(24, 32)).numpy(), dtype=object)
  image = _photo(24, 32) if pp.startswith("inception") else jpeg
  outs = [_run(pp, image, seed=[s, 7]) for s in range(6)]
  assert all(o.shape == shape and o.dtype == np.uint8 for o in outs)
  np.testing.assert_array_equal(outs[0], _run(pp, image, seed=[0, 7]))
  np.testing.assert_array_equal(outs[0], _run_tfdata(pp, image, seed=[0, 7]))
  assert any(not np.array_equal(outs[0], o) for o in outs[1:])


def test_decode_jpeg_and_inception_crop_in_tf_data_has_static_channels():
  jpeg = tf.io.encode_jpeg(_photo(24, 32)).numpy()
  ds = tf.data.Dataset.from_tensors({"image": jpeg})
  ds = ds.map(builder.get_preprocess_fn("decode_jpeg_and_inception_crop"))
  assert ds.element_spec["image"].shape.as_list() == [None, None, 3]
