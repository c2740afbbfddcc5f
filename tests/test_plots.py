"""Tests for big_vision_like.plots (figures drawn offscreen, read back)."""

import json

import matplotlib
import numpy as np
import pytest

from big_vision_like import plots

matplotlib.use("Agg")


def _pixels(fig):
  fig.canvas.draw()
  image = np.asarray(fig.canvas.buffer_rgba())[..., :3]
  matplotlib.pyplot.close(fig)
  return image


def _write_run(path, losses):
  path.mkdir()
  with open(path / "metrics.jsonl", "w") as f:
    for step, loss in enumerate(losses, 1):
      f.write(json.dumps({"step": step, "train/loss": loss,
                          "elapsed_sec": 2.0 * step}) + "\n")
    f.write(json.dumps({"step": len(losses), "val/prec@1": 0.5}) + "\n")


def test_plot_runs_draws_every_run_and_key(tmp_path):
  _write_run(tmp_path / "a", [3.0, 2.0, 1.0])
  _write_run(tmp_path / "b", [3.0, 2.5, 2.0])
  fig = plots.plot_runs({"a": str(tmp_path / "a"), "b": str(tmp_path / "b")},
                        ["train/loss", "val/prec@1"], x="elapsed_sec")
  lines = fig.axes[0].get_lines()
  assert [line.get_label() for line in lines] == ["a", "b"]
  np.testing.assert_array_equal(lines[0].get_xdata(), [2.0, 4.0, 6.0])
  # The evaluator's record has no clock: its time is interpolated.
  np.testing.assert_array_equal(fig.axes[1].get_lines()[0].get_xdata(), [6.0])
  assert _pixels(fig).std() > 0


def test_confusion_matrix_counts_pairs():
  counts = plots.confusion_matrix([0, 0, 1, 2, 2], [0, 1, 1, 2, 0], 3)
  np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 1, 0], [1, 0, 1]])
  assert _pixels(plots.plot_confusion(counts, ["a", "b", "c"])).std() > 0


def test_pca_2d_finds_the_main_axes():
  rng = np.random.default_rng(0)
  t = rng.normal(size=(200, 1))
  features = np.concatenate([10 * t, 0.01 * rng.normal(size=(200, 4))], 1)
  projected = plots.pca_2d(features)
  assert projected.shape == (200, 2)
  # The first axis carries t (up to sign), the second almost nothing.
  assert abs(np.corrcoef(projected[:, 0], t[:, 0])[0, 1]) > 0.999
  assert projected[:, 1].std() < 0.05


def test_image_grid_overlay_and_bars():
  images = np.linspace(-1, 1, 4 * 8 * 8 * 3).reshape(4, 8, 8, 3)
  fig = plots.image_grid(images, titles=list("abcd"), ncols=2)
  assert len(fig.axes) == 4 and _pixels(fig).std() > 0
  fig = plots.image_grid(images[:3], ncols=2)  # The 4th panel is blank.
  assert not fig.axes[3].axison
  fig, (ax1, ax2) = matplotlib.pyplot.subplots(1, 2)
  plots.overlay(ax1, images[0], np.eye(2), title="att")
  plots.probability_bars(ax2, ["x", "y", "z"], [0.1, 0.7, 0.2],
                         true_name="y", k=2)
  labels = [t.get_text() for t in ax2.get_yticklabels()]
  assert labels == ["z", "y"]  # Top-2, the best at the top.
  assert _pixels(fig).std() > 0


def test_series_rejects_an_unknown_axis():
  with pytest.raises(ValueError, match="x='wall'"):
    plots.metrics.series([{"step": 1, "a": 1.0}], "a", x="wall")


def test_images_with_bars_pairs_each_image_with_its_top_k():
  images = np.zeros((3, 8, 8, 3))
  probs = np.array([[0.9, 0.05, 0.05], [0.1, 0.2, 0.7], [0.3, 0.3, 0.4]])
  fig = plots.images_with_bars(images, ["a", "b", "c"], probs,
                               true_names=["a", "c", "b"], k=2, ncols=2)
  bars = fig.axes[1::2]
  assert [t.get_text() for t in bars[1].get_yticklabels()] == ["b", "c"]
  assert fig.axes[0].get_title() == "a"
  assert not fig.axes[7].axison  # 3 pairs on a 2 x 2 grid: one blank pair.
  assert _pixels(fig).std() > 0


def test_class_scatter_one_colour_and_legend_entry_per_class():
  points = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.5], [0.5, 2.0]])
  fig, ax = matplotlib.pyplot.subplots()
  plots.class_scatter(ax, points, [2, 0, 2, 1], ["zero", "one", "two"],
                      title="t", xlabel="PC 1", ylabel="PC 2")
  collections = ax.collections
  assert [c.get_label() for c in collections] == ["zero", "one", "two"]
  np.testing.assert_array_equal(collections[2].get_offsets(),
                                [[0.0, 0.0], [2.0, 0.5]])
  colors = {tuple(c.get_facecolor()[0]) for c in collections}
  assert len(colors) == 3
  legend = [t.get_text() for t in ax.get_legend().get_texts()]
  assert legend == ["zero", "one", "two"]
  assert ax.get_xlabel() == "PC 1" and ax.get_title() == "t"
  assert _pixels(fig).std() > 0
