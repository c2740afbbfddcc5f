"""Figures for notebooks and studies (matplotlib, from the `notebooks` extra).

Each function returns a matplotlib Figure (or draws on a given Axes), so a
notebook shows it and a script saves it. Nothing here trains or evaluates.
"""

import math

import numpy as np

from big_vision_like import metrics


def _pyplot():
  try:
    from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("big_vision_like.plots needs matplotlib: "
                      "pip install -e '.[notebooks]'") from e
  return plt


def _grid(n, ncols, size):
  plt = _pyplot()
  ncols = max(1, min(ncols, n))
  nrows = math.ceil(n / ncols)
  fig, axes = plt.subplots(nrows, ncols, squeeze=False,
                           figsize=(size[0] * ncols, size[1] * nrows))
  for ax in axes.flat[n:]:
    ax.axis("off")
  return fig, axes.flat


def plot_runs(runs, keys, *, x="step", ncols=3, logy=()):
  """One panel per metric in `keys`, one line per run.

  Args:
    runs: {run name: records} (`metrics.read_runs`) or {name: workdir}.
    keys: metric names, e.g. ["train/loss", "train/lr", "zeroshot/prec@1"].
    x: "step" or "elapsed_sec" (wall time of training).
    ncols: panels per row.
    logy: the keys drawn on a log scale.
  """
  if any(isinstance(v, str) for v in runs.values()):
    runs = metrics.read_runs(runs)
  fig, axes = _grid(len(keys), ncols, (4.2, 3.0))
  for ax, key in zip(axes, keys):
    for name, records in runs.items():
      xs, ys = metrics.series(records, key, x=x)
      if len(xs):
        ax.plot(xs, ys, "o-" if len(xs) < 12 else "-", ms=3, label=name)
    ax.set_title(key)
    ax.set_xlabel("training seconds" if x == "elapsed_sec" else "step")
    if key in logy:
      ax.set_yscale("log")
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  return fig


def _show_image(ax, image):
  image = np.asarray(image, np.float32)
  if image.min() < 0:  # value_range(-1, 1)
    image = (image + 1) / 2
  image = np.clip(image, 0, 1)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  ax.imshow(image, cmap="gray" if image.ndim == 2 else None,
            interpolation="nearest")
  ax.set_xticks([])
  ax.set_yticks([])


def image_grid(images, titles=None, *, ncols=8, size=1.6, colors=None):
  """Images [N, H, W, C] in [-1, 1] or [0, 1], with optional titles/colours."""
  fig, axes = _grid(len(images), ncols, (size, size * 1.15))
  for i, (ax, image) in enumerate(zip(axes, images)):
    _show_image(ax, image)
    if titles is not None:
      ax.set_title(titles[i], fontsize=8,
                   color="black" if colors is None else colors[i])
  fig.tight_layout()
  return fig


def overlay(ax, image, heat, *, alpha=0.55, title=None):
  """`image` with `heat` [h, w] (any grid) stretched over it, on `ax`."""
  _show_image(ax, image)
  height, width = np.asarray(image).shape[:2]
  ax.imshow(np.asarray(heat, np.float32), cmap="inferno", alpha=alpha,
            extent=(-0.5, width - 0.5, height - 0.5, -0.5),
            interpolation="bilinear")
  if title:
    ax.set_title(title, fontsize=8)


def probability_bars(ax, names, probs, *, true_name=None, k=3):
  """Horizontal bars of the top-k `probs` over class `names`, on `ax`;
  the true class (if among them) in green, others in grey."""
  probs = np.asarray(probs)
  top = np.argsort(-probs)[:k][::-1]
  colors = ["tab:green" if names[i] == true_name else "tab:gray" for i in top]
  ax.barh(range(len(top)), probs[top], color=colors)
  ax.set_yticks(range(len(top)), [names[i] for i in top], fontsize=8)
  ax.set_xlim(0, 1)
  ax.tick_params(axis="x", labelsize=7)


def confusion_matrix(labels, predictions, num_classes):
  """counts[true, predicted], [C, C] ints."""
  counts = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(counts, (np.asarray(labels), np.asarray(predictions)), 1)
  return counts


def plot_confusion(counts, names=None):
  """A confusion matrix (rows: true class) with its counts written in."""
  plt = _pyplot()
  n = len(counts)
  fig, ax = plt.subplots(figsize=(0.45 * n + 1.5, 0.45 * n + 1.2))
  ax.imshow(counts, cmap="Blues")
  names = [str(i) for i in range(n)] if names is None else names
  ax.set_xticks(range(n), names, fontsize=8)
  ax.set_yticks(range(n), names, fontsize=8)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  for (i, j), c in np.ndenumerate(counts):
    if c:
      ax.text(j, i, str(c), ha="center", va="center", fontsize=7,
              color="white" if c > counts.max() / 2 else "black")
  fig.tight_layout()
  return fig


def pca_2d(features):
  """[N, D] -> [N, 2]: the projection on the two main principal axes."""
  x = np.asarray(features, np.float64)
  x = x - x.mean(0)
  _, _, vt = np.linalg.svd(x, full_matrices=False)
  return x @ vt[:2].T


def images_with_bars(images, names, probs, *, true_names=None, k=3, ncols=4,
                     xlabel="probability"):
  """Each image next to a bar chart of its top-k classes.

  Args:
    images: [N, H, W, C].
    names: the C class names.
    probs: [N, C] scores in [0, 1] (softmax, or SigLIP's sigmoids).
    true_names: optional true class name per image (its bar is green).
    k: classes shown per image.
    ncols: (image, bars) pairs per row.
    xlabel: what the bars measure.
  """
  plt = _pyplot()
  n = len(images)
  ncols = max(1, min(ncols, n))
  nrows = math.ceil(n / ncols)
  fig, axes = plt.subplots(nrows, 2 * ncols, squeeze=False,
                           figsize=(3.6 * ncols, 1.35 * nrows + 0.4),
                           gridspec_kw={"width_ratios": [1, 1.6] * ncols})
  for ax in axes.flat[2 * n:]:
    ax.axis("off")
  for i in range(n):
    image_ax, bar_ax = axes[i // ncols, 2 * (i % ncols):2 * (i % ncols) + 2]
    _show_image(image_ax, images[i])
    true = None if true_names is None else true_names[i]
    if true is not None:
      image_ax.set_title(true, fontsize=8)
    probability_bars(bar_ax, names, probs[i], true_name=true, k=k)
    if i // ncols == nrows - 1:
      bar_ax.set_xlabel(xlabel, fontsize=8)
  fig.tight_layout()
  return fig


def class_scatter(ax, points, labels, names=None, *, title=None,
                  xlabel=None, ylabel=None, legend=True, size=6):
  """2-D `points` [N, 2] on `ax`, one colour per class of `labels` [N].

  Args:
    ax: the matplotlib Axes.
    points: [N, 2], e.g. `pca_2d(features)`.
    labels: [N] integer classes.
    names: the class names (default: the class ids); the legend's entries.
    title, xlabel, ylabel: the panel's texts.
    legend: draw a legend of the classes present.
    size: marker area (points^2).
  """
  plt = _pyplot()
  points, labels = np.asarray(points), np.asarray(labels)
  classes = np.unique(labels)
  cmap = plt.get_cmap("tab10" if classes.max(initial=0) < 10 else "tab20")
  for c in classes:
    at = labels == c
    ax.scatter(points[at, 0], points[at, 1], s=size, color=cmap(c % cmap.N),
               label=str(c) if names is None else names[c])
  if title:
    ax.set_title(title, fontsize=10)
  if xlabel:
    ax.set_xlabel(xlabel)
  if ylabel:
    ax.set_ylabel(ylabel)
  if legend:
    ax.legend(fontsize=7, markerscale=2, loc="best", ncol=2,
              handletextpad=0.1, columnspacing=0.6)
