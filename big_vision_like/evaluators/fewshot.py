"""Few-shot linear classification on frozen features (big_vision fewshot_lsr).

  config.evals.fewshot = dict(
      type="fewshot", pp_fn="decode|resize(16)|value_range(-1, 1)",
      datasets={"digits": ("bvl_digits", "train", "test")},
      shots=(1, 5, 10, 25), seeds=(0, 1, 2), l2_reg=2.0**10)

For each dataset, seed and shot count, `shots` training examples per class are
drawn (a seeded permutation of each class's examples, classes in id order)
and a closed-form ridge regression is fit, as in big_vision's `fewshot_lsr`:

- features are whitened per dimension with the mean and standard deviation
  (+1e-5) of the drawn examples, and a constant feature 100 is appended, so
  the bias is nearly unregularised;
- targets are one-vs-all in {-1, +1} (2 * one_hot - 1);
- W = (X^T X + l2_reg I)^-1 X^T T, solved in whichever of the primal (D x D)
  or dual (N x N) form is smaller; l2_reg defaults to big_vision's 2**10;
- the prediction is argmax(x W) on the whole test split.

Reported: `<dataset>_<shots>shot` (test accuracy averaged over seeds) and
`mean_<shots>shot` (averaged over datasets).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_like.evaluators import common
from big_vision_like.pp import builder as pp_builder
from big_vision_like.registry import EVALUATORS

BIAS_FEATURE = 100.0  # Large, so its weight (the bias) is barely penalised.


def whiten(x_train, x_test):
  """Standardises with the train statistics and appends the bias feature."""
  mean = jnp.mean(x_train, axis=0, keepdims=True)
  std = jnp.std(x_train, axis=0, keepdims=True) + 1e-5

  def prep(x):
    x = (x - mean) / std
    return jnp.pad(x, ((0, 0), (0, 1)), constant_values=BIAS_FEATURE)

  return prep(x_train), prep(x_test)


def ridge_weights(x, targets, l2_reg):
  """argmin_W |x W - targets|^2 + l2_reg |W|^2, for x [N, D], targets [N, C]."""
  n, d = x.shape
  if n >= d:
    gram = x.T @ x + l2_reg * jnp.eye(d, dtype=x.dtype)
    return jnp.linalg.solve(gram, x.T @ targets)
  gram = x @ x.T + l2_reg * jnp.eye(n, dtype=x.dtype)
  return x.T @ jnp.linalg.solve(gram, targets)


@functools.partial(jax.jit, static_argnames="num_classes")
def fewshot_accuracy(x_train, y_train, x_test, y_test, *, num_classes,
                     l2_reg):
  """Test accuracy of the ridge classifier fit on (x_train, y_train)."""
  x_train, x_test = whiten(x_train.astype(jnp.float32),
                           x_test.astype(jnp.float32))
  targets = 2.0 * jax.nn.one_hot(y_train, num_classes) - 1.0
  w = ridge_weights(x_train, targets, l2_reg)
  return jnp.mean(jnp.argmax(x_test @ w, axis=1) == y_test)


def sample_shots(labels, shots, seed, num_classes):
  """Indices of `shots` examples per class (fewer if a class has fewer)."""
  rng = np.random.default_rng(seed)
  per_class = [rng.permutation(np.flatnonzero(labels == c))
               for c in range(num_classes)]
  return np.concatenate([idx[:shots] for idx in per_class])


@EVALUATORS.register("fewshot")
class Evaluator:
  """Few-shot ridge-regression accuracy on one or more datasets.

  Args:
    predict_fn: the trainer's predict function.
    datasets: {name: (source name, train split, test split)}.
    pp_fn: the pp string shared by every split (deterministic).
    batch_size: global batch size of feature extraction.
    mesh: the device mesh.
    shots: examples per class to train on.
    seeds: one draw of the training examples per seed.
    l2_reg: the ridge penalty (big_vision's default 2**10).
    representation: the features (`common.select_output` name).
    label_key: the integer (or one-hot) label in the preprocessed batch.
    inputs: batch keys fed to the model.
    num_classes: None: the largest label seen + 1.
    data_dir: data directory of the sources.
    cache: keep the preprocessed splits in memory.
  """

  def __init__(self, predict_fn, *, datasets, pp_fn, batch_size, mesh,
               shots=(1, 5, 10, 25), seeds=(0, 1, 2), l2_reg=2.0**10,
               representation="pre_logits", label_key="label",
               inputs=("image",), num_classes=None, data_dir=None,
               cache=True):
    pp = pp_builder.get_preprocess_fn(pp_fn)
    self.data = {}
    for name, (source, train_split, test_split) in dict(datasets).items():
      self.data[name] = tuple(
          common.EvalData(dict(name=source, split=split, data_dir=data_dir),
                          pp, batch_size, mesh, cache=cache)
          for split in (train_split, test_split))
    self.shots, self.seeds = tuple(shots), tuple(seeds)
    self.l2_reg, self.num_classes = l2_reg, num_classes
    self._features = common.LabelledFeatures(
        predict_fn, mesh, representation=representation,
        label_key=label_key, inputs=inputs)

  def check_inputs(self, train_state):
    """Traces the model on abstract batches; raises on a mismatch."""
    for splits in self.data.values():
      for data in splits:
        self._features.eval_shape(train_state, data)

  def dataset_accuracies(self, train_state, name):
    """{shots: accuracy averaged over seeds} on dataset `name`."""
    train, test = self.data[name]
    x, y = self._features(train_state, train)
    x_test, y_test = self._features(train_state, test)
    num_classes = self.num_classes or int(max(y.max(), y_test.max())) + 1
    out = {}
    for shots in self.shots:
      accs = []
      for seed in self.seeds:
        idx = sample_shots(y, shots, seed, num_classes)
        accs.append(float(fewshot_accuracy(
            x[idx], y[idx], x_test, y_test, num_classes=num_classes,
            l2_reg=self.l2_reg)))
      out[shots] = float(np.mean(accs))
    return out

  def run(self, train_state):
    """Yields `<dataset>_<shots>shot` and `mean_<shots>shot` accuracies."""
    results = {name: self.dataset_accuracies(train_state, name)
               for name in self.data}
    for name, accs in results.items():
      for shots, acc in accs.items():
        yield f"{name}_{shots}shot", acc
    for shots in self.shots:
      yield f"mean_{shots}shot", float(np.mean(
          [accs[shots] for accs in results.values()]))
