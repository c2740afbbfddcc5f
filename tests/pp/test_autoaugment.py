"""Tests of RandAugment (`randaug`) and its sub-ops."""

import numpy as np
import pytest
import tensorflow as tf

from big_vision_like import registry
from big_vision_like.pp import autoaugment
from big_vision_like.pp import builder

RNG = np.random.RandomState(0)
IMG = RNG.randint(0, 256, (20, 24, 3)).astype(np.uint8)
SEED = tf.constant([1, 2], tf.int64)


def _randaug(pp, image, seed):
  data = {"image": tf.constant(image), "_seed": tf.constant(seed, tf.int64)}
  return builder.get_preprocess_fn(pp)(data)["image"].numpy()


def _op(name, image=IMG, magnitude=10, seed=SEED):
  fn = autoaugment.OPS[name]
  return fn(tf.constant(image), magnitude, seed).numpy()


def test_randaug_is_registered():
  assert registry.PP_OPS.get("randaug") is autoaugment.get_randaug


@pytest.mark.parametrize("index", range(len(autoaugment.OP_NAMES)))
@pytest.mark.parametrize("magnitude", [0, 5, 10])
def test_each_sub_op_keeps_shape_and_dtype(index, magnitude):
  name = autoaugment.OP_NAMES[index]
  out = autoaugment.apply_op(tf.constant(IMG), index, magnitude, SEED)
  assert out.dtype == tf.uint8 and out.shape == IMG.shape
  # The switch selects the named op.
  np.testing.assert_array_equal(out, _op(name, magnitude=magnitude))


def test_sub_ops_on_one_channel_images():
  gray = IMG[..., :1]
  for index in range(len(autoaugment.OP_NAMES)):
    out = autoaugment.apply_op(tf.constant(gray), index, 7, SEED)
    assert out.shape == gray.shape and out.dtype == tf.uint8


def test_identity_at_neutral_settings():
  # Enhance ops at factor 1.0 (magnitude 5) and geometric ops at magnitude 0.
  for name in ["Color", "Contrast", "Brightness", "Sharpness"]:
    np.testing.assert_array_equal(_op(name, magnitude=5), IMG)
  for name in ["Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY",
               "Cutout", "SolarizeAdd"]:
    np.testing.assert_array_equal(_op(name, magnitude=0), IMG)
  np.testing.assert_array_equal(_op("Solarize", magnitude=10), IMG)
  np.testing.assert_array_equal(_op("Posterize", magnitude=10),
                                IMG & 0xF0)


def test_pixel_ops_values():
  np.testing.assert_array_equal(_op("Invert"), 255 - IMG)
  np.testing.assert_array_equal(_op("Solarize", magnitude=5),
                                np.where(IMG < 128, IMG, 255 - IMG))
  np.testing.assert_array_equal(
      _op("SolarizeAdd", magnitude=5),
      np.where(IMG < 128, np.minimum(IMG.astype(int) + 55, 255), IMG))
  np.testing.assert_array_equal(
      _op("Brightness", magnitude=0),
      np.round(np.float32(0.1) * IMG.astype(np.float32)).astype(np.uint8))


def test_auto_contrast_and_equalize():
  low = (IMG // 4 + 10).astype(np.uint8)
  out = _op("AutoContrast", low)
  assert (out.min(axis=(0, 1)) == 0).all()
  assert (out.max(axis=(0, 1)) == 255).all()
  flat = np.full((4, 4, 3), 7, np.uint8)
  np.testing.assert_array_equal(_op("AutoContrast", flat), flat)
  np.testing.assert_array_equal(_op("Equalize", flat), flat)
  # Every level once per channel: a flat histogram is left as it is.
  ramp = np.stack([np.arange(256).reshape(16, 16)] * 3, -1).astype(np.uint8)
  np.testing.assert_array_equal(_op("Equalize", ramp), ramp)
  # Two levels: PIL's lookup table sends them to 0 and 255.
  two = np.where(np.arange(600).reshape(20, 30, 1) < 300, 50, 60)
  two = np.repeat(two, 3, -1).astype(np.uint8)
  np.testing.assert_array_equal(_op("Equalize", two),
                                np.where(two == 50, 0, 255))


def test_geometric_ops_move_content_and_fill_128():
  image = np.full((21, 21, 3), 200, np.uint8)
  magnitudes = {"Rotate": 10, "ShearX": 10, "ShearY": 10, "TranslateX": 0.5,
                "TranslateY": 0.5}
  for name, magnitude in magnitudes.items():
    out = _op(name, image, magnitude=magnitude)
    assert set(np.unique(out)) == {128, 200}, name
    assert out[10, 10, 0] == 200, name


def test_translate_shifts_by_whole_pixels():
  out = _op("TranslateX", IMG, magnitude=0.5)  # 5 pixels either way.
  right = (np.array_equal(out[:, 5:], IMG[:, :-5])
           and (out[:, :5] == 128).all())
  left = (np.array_equal(out[:, :-5], IMG[:, 5:])
          and (out[:, -5:] == 128).all())
  assert right or left
  out = _op("TranslateY", IMG, magnitude=0.3)
  assert (np.array_equal(out[3:], IMG[:-3])
          or np.array_equal(out[:-3], IMG[3:]))


def test_rotate_sign_follows_the_seed():
  outs = {_op("Rotate", seed=tf.constant([s, 0], tf.int64)).tobytes()
          for s in range(8)}
  assert len(outs) == 2


def test_cutout_blanks_a_square():
  out = _op("Cutout", IMG, magnitude=1)  # Side 2 * int(4) = 8, clipped.
  changed = np.any(out != IMG, axis=-1)
  ys, xs = np.nonzero(changed)
  assert (out[changed] == 128).all()
  assert 0 < changed.sum() <= 64
  assert np.ptp(ys) < 8 and np.ptp(xs) < 8


def test_randaug_deterministic_given_seed_and_differs_across_seeds():
  outs = [_randaug("randaug(2, 9)", IMG, [s, 3]) for s in range(6)]
  for out in outs:
    assert out.dtype == np.uint8 and out.shape == IMG.shape
  np.testing.assert_array_equal(outs[0], _randaug("randaug(2, 9)", IMG,
                                                  [0, 3]))
  assert len({o.tobytes() for o in outs}) > 3


def test_randaug_same_eagerly_and_in_tf_data():
  pp = "decode|randaug(2, 7)"  # After decode, H and W are unknown statically.
  png = tf.io.encode_png(IMG).numpy()
  seeds = np.array([[s, 11] for s in range(3)], np.int64)
  ds = tf.data.Dataset.from_tensor_slices(
      {"image": np.array([png] * 3, dtype=object), "_seed": seeds})
  ds = ds.map(builder.get_preprocess_fn(pp))
  assert ds.element_spec["image"].shape.as_list() == [None, None, 3]
  for seed, got in zip(seeds, ds.as_numpy_iterator()):
    np.testing.assert_array_equal(got["image"], _randaug(pp, png, seed))


def test_randaug_without_layers_is_identity_and_needs_uint8():
  np.testing.assert_array_equal(_randaug("randaug(0)", IMG, [1, 1]), IMG)
  with pytest.raises(ValueError, match="uint8"):
    _randaug("randaug", IMG.astype(np.float32), [1, 1])


def test_randaug_without_seed_runs_eagerly():
  out = builder.get_preprocess_fn("randaug")({"image": IMG})["image"]
  assert out.shape == IMG.shape and out.dtype == tf.uint8
