"""DeiT III's 3-Augment ops and simple random crop, against NumPy formulas."""

import math

import numpy as np
import pytest
import tensorflow as tf

from big_vision_like.pp import builder

RNG = np.random.RandomState(0)
IMG_U8 = RNG.randint(0, 256, (9, 7, 3)).astype(np.uint8)
IMG_F = RNG.uniform(size=(9, 7, 3)).astype(np.float32)


def _run(pp, image, seed=None):
  data = {"image": tf.constant(image)}
  if seed is not None:
    data["_seed"] = tf.constant(seed, tf.int64)
  return builder.get_preprocess_fn(pp)(data)["image"].numpy()


def _run_tfdata(pp, image, seed):
  ds = tf.data.Dataset.from_tensor_slices(
      {"image": image[None], "_seed": np.array([seed], np.int64)})
  return next(ds.map(builder.get_preprocess_fn(pp)).as_numpy_iterator())[
      "image"]


# NumPy references.


def np_grayscale(x):
  luma = x.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
  if x.dtype == np.uint8:
    luma = np.clip(np.round(luma), 0, 255)
  return np.repeat(luma[..., None], 3, -1).astype(x.dtype)


def np_solarize(x, threshold=128, max_value=255):
  return np.where(x < threshold, x, (max_value - x.astype(np.float64)).astype(
      x.dtype))


def np_blur(x, sigma, radius):
  taps = np.arange(-radius, radius + 1)
  w = np.exp(-taps**2 / (2 * sigma**2))
  w /= w.sum()
  y = x.astype(np.float64)
  for axis in (0, 1):
    pad = [(0, 0)] * 3
    pad[axis] = (radius, radius)
    padded = np.pad(y, pad, mode="edge")
    n = y.shape[axis]
    y = sum(w[k] * np.take(padded, np.arange(k, k + n), axis=axis)
            for k in range(2 * radius + 1))
  return y


def test_grayscale_is_the_luma_and_follows_p():
  np.testing.assert_array_equal(_run("grayscale", IMG_U8, [0, 1]),
                                np_grayscale(IMG_U8))
  np.testing.assert_allclose(_run("grayscale", IMG_F, [0, 1]),
                             np_grayscale(IMG_F), rtol=1e-6)
  np.testing.assert_array_equal(_run("grayscale(p=0.0)", IMG_U8, [0, 1]),
                                IMG_U8)
  outs = [_run("grayscale(p=0.5)", IMG_U8, [s, 3]) for s in range(24)]
  gray = sum(np.array_equal(o, np_grayscale(IMG_U8)) for o in outs)
  same = sum(np.array_equal(o, IMG_U8) for o in outs)
  assert gray + same == 24 and 4 <= gray <= 20, (gray, same)


def test_solarize_inverts_the_bright_pixels():
  np.testing.assert_array_equal(_run("solarize", IMG_U8, [0, 1]),
                                np_solarize(IMG_U8))
  np.testing.assert_allclose(
      _run("solarize(threshold=0.5, max_value=1.0)", IMG_F, [0, 1]),
      np_solarize(IMG_F, 0.5, 1.0), rtol=1e-6)
  np.testing.assert_array_equal(_run("solarize(p=0.0)", IMG_U8, [0, 1]),
                                IMG_U8)


@pytest.mark.parametrize("sigma", [0.5, 1.7])
def test_gaussian_blur_is_the_separable_gaussian(sigma):
  pp = f"gaussian_blur(sigma_min={sigma}, sigma_max={sigma})"
  radius = math.ceil(3 * sigma)
  np.testing.assert_allclose(_run(pp, IMG_F, [0, 1]),
                             np_blur(IMG_F, sigma, radius), atol=1e-5)
  out = _run(pp, IMG_U8, [0, 1])  # Rounded to nearest (ties may differ).
  assert out.dtype == np.uint8
  assert np.abs(out.astype(float) - np_blur(IMG_U8, sigma, radius)).max() \
      <= 0.5 + 1e-3


def test_gaussian_blur_draws_sigma_in_its_range():
  """Each output is the blur of one sigma in [0.1, 2]: found on a grid."""
  grid = np.linspace(0.1, 2.0, 400)
  refs = [np_blur(IMG_F, s, 6) for s in grid]
  found = []
  for seed in range(6):
    out = _run("gaussian_blur", IMG_F, [seed, 5])
    errors = [np.abs(out - r).max() for r in refs]
    assert min(errors) < 2e-3, min(errors)
    found.append(grid[int(np.argmin(errors))])
  assert max(found) - min(found) > 0.3  # Different seeds, different sigmas.


def test_three_augment_picks_each_op_uniformly():
  sigma = 1.0  # A fixed sigma makes the blur's output known.
  pp = f"three_augment(sigma_min={sigma}, sigma_max={sigma})"
  refs = [np_grayscale(IMG_U8), np_solarize(IMG_U8),
          np_blur(IMG_U8, sigma, 3)]
  counts = [0, 0, 0]
  for seed in range(60):
    out = _run(pp, IMG_U8, [seed, 11])
    dist = [np.abs(out.astype(float) - r).max() for r in refs]
    assert min(dist) <= 0.5 + 1e-3, dist
    counts[int(np.argmin(dist))] += 1
  assert min(counts) >= 10, counts  # Uniform over 3: 20 each expected.


@pytest.mark.parametrize("pp", [
    "grayscale(p=0.5)", "solarize(p=0.5)", "gaussian_blur(p=0.7)",
    "three_augment", "simple_random_crop(6, padding=2)"])
def test_random_ops_follow_the_seed(pp):
  outs = [_run(pp, IMG_U8, [s, 7]) for s in range(8)]
  np.testing.assert_array_equal(outs[0], _run(pp, IMG_U8, [0, 7]))
  np.testing.assert_array_equal(outs[0], _run_tfdata(pp, IMG_U8, [0, 7]))
  assert any(not np.array_equal(outs[0], o) for o in outs[1:])


def test_simple_random_crop_is_a_window_of_the_reflect_padded_resize():
  # The shorter side (7) is already `size`: the resize keeps the pixels.
  padding, size = 3, 7
  padded = np.pad(IMG_F, [(padding, padding), (padding, padding), (0, 0)],
                  mode="reflect")  # torchvision's "reflect": edge not repeated.
  offsets = set()
  for seed in range(40):
    out = _run(f"simple_random_crop({size}, padding={padding}, "
               "method='nearest')", IMG_F, [seed, 0])
    assert out.shape == (size, size, 3)
    hits = [(i, j) for i in range(padded.shape[0] - size + 1)
            for j in range(padded.shape[1] - size + 1)
            if np.array_equal(out, padded[i:i + size, j:j + size])]
    assert len(hits) == 1
    offsets.add(hits[0])
  rows, cols = {i for i, _ in offsets}, {j for _, j in offsets}
  assert min(cols) == 0 and max(cols) == 2 * padding  # Both borders reached.
  assert len(rows) > 4


def test_simple_random_crop_resizes_the_shorter_side_bicubic():
  out = _run("simple_random_crop(5, padding=0)", IMG_F, [1, 2])
  resized = tf.image.resize(IMG_F, (6, 5), "bicubic", antialias=True).numpy()
  windows = [resized[i:i + 5] for i in range(2)]
  assert any(np.array_equal(out, w) for w in windows)


@pytest.mark.parametrize("pp,match", [
    ("grayscale(p=1.5)", "p=1.5"),
    ("gaussian_blur(sigma_min=2.0, sigma_max=1.0)", "sigma_max=1.0"),
    ("three_augment(sigma_max=0)", "sigma_max=0"),
    ("simple_random_crop(8, padding=8)", "padding=8"),
    ("solarize(threshold='x')", "threshold='x'"),
])
def test_bad_arguments_name_the_argument(pp, match):
  with pytest.raises(ValueError, match=match):
    builder.get_preprocess_fn(pp)
