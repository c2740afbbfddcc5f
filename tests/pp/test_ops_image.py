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


def test_resize_uint8_rounds_and_keeps_dtype():
  out = _run("resize(13, antialias=True)", IMG_U8)
  ref = tf.image.resize(IMG_U8, (13, 13), antialias=True).numpy()
  assert out.dtype == np.uint8
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
  ref = np.clip(np.round(tf.image.resize(IMG_U8, hw).numpy()), 0, 255)
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
