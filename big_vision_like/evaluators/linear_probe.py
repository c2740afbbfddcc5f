"""Linear probe: multinomial logistic regression on frozen features.

  config.evals.linear = dict(
      type="linear_probe", pp_fn=...,
      train_data=dict(name="bvl_digits", split="train"),
      val_data=dict(name="bvl_digits", split="validation"),
      data=dict(name="bvl_digits", split="test"))

Features are standardised with the train split's statistics. For each L2
strength in `l2_grid`, softmax regression (weights and bias) minimising
mean cross-entropy + l2 / 2 * |W|^2 is trained on the train split by
full-batch L-BFGS (`optax.lbfgs`, zoom line search; or `solver="adam"`:
full-batch Adam, cosine-decayed from 0.1, cheaper to compile); the strength
with the best validation accuracy is kept (the earliest in the grid on ties)
and its test accuracy reported. Without
`val_data`, a seeded `val_fraction` of the train split is held out for the
choice. (sklearn's `LogisticRegression(C)` is l2 = 1 / (C * num_train).)

Reports `prec@1` (test), `val_prec@1` and `l2` (the chosen strength).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from big_vision_like.evaluators import common
from big_vision_like.pp import builder as pp_builder
from big_vision_like.registry import EVALUATORS


ADAM_LR = 0.1  # Peak learning rate of the "adam" solver (cosine decay).


def _objective(params, x, y, l2):
  logits = x @ params["w"] + params["b"]
  xent = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  return jnp.mean(xent) + 0.5 * l2 * jnp.sum(params["w"] ** 2)


def _lbfgs_step(loss):
  """One L-BFGS iteration (zoom line search); a non-finite one is skipped."""
  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  def step(carry, _):
    params, state = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = opt.update(grad, state, params, value=value, grad=grad,
                                value_fn=loss)
    new = optax.apply_updates(params, updates)
    ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v))
                            for v in jax.tree.leaves(new)]))
    params = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, params)
    return (params, state), None

  return opt, step


def _adam_step(loss, steps):
  """One full-batch Adam step, learning rate ADAM_LR with cosine decay."""
  opt = optax.adam(optax.cosine_decay_schedule(ADAM_LR, steps))

  def step(carry, _):
    params, state = carry
    updates, state = opt.update(jax.grad(loss)(params), state, params)
    return (optax.apply_updates(params, updates), state), None

  return opt, step


@functools.partial(jax.jit, static_argnames=("num_classes", "steps",
                                             "solver"))
def fit_logistic(x, y, l2, *, num_classes, steps, solver="lbfgs"):
  """Weights {"w" [D, C], "b" [C]} of L2-regularised softmax regression.

  Args:
    x: [N, D] (standardised) features.
    y: [N] integer labels.
    l2: the penalty l2 / 2 * |w|^2 added to the mean cross-entropy.
    num_classes: C.
    steps: iterations of the solver.
    solver: "lbfgs" (full-batch L-BFGS, zoom line search) or "adam".
  """
  params = {"w": jnp.zeros((x.shape[1], num_classes), x.dtype),
            "b": jnp.zeros((num_classes,), x.dtype)}
  loss = functools.partial(_objective, x=x, y=y, l2=l2)
  if solver == "lbfgs":
    opt, step = _lbfgs_step(loss)
  elif solver == "adam":
    opt, step = _adam_step(loss, steps)
  else:
    raise ValueError(f"Unknown solver {solver!r}; known: lbfgs, adam.")
  (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None,
                                length=steps)
  return params


@jax.jit
def accuracy(params, x, y):
  """Accuracy of the classifier `params` on (x, y)."""
  return jnp.mean(jnp.argmax(x @ params["w"] + params["b"], -1) == y)


def standardize(x_train, *others):
  """Standardises every array with the statistics of `x_train`."""
  mean, std = x_train.mean(0), x_train.std(0) + 1e-6
  return [((x - mean) / std).astype(np.float32) for x in (x_train, *others)]


def probe(train, val, test, *, l2_grid, steps, num_classes, solver="lbfgs"):
  """(test accuracy, val accuracy, chosen l2) of the linear probe.

  Args:
    train, val, test: (features [N, D], integer labels [N]) pairs.
    l2_grid: the L2 strengths to choose from on `val`.
    steps: solver iterations.
    num_classes: number of classes.
    solver: see `fit_logistic`.
  """
  x, x_val, x_test = standardize(train[0], val[0], test[0])
  best = None
  for l2 in l2_grid:  # One compilation: l2 is traced.
    params = fit_logistic(x, train[1], np.float32(l2), num_classes=num_classes,
                          steps=steps, solver=solver)
    val_acc = float(accuracy(params, x_val, val[1]))
    if best is None or val_acc > best[1]:
      best = (params, val_acc, float(l2))
  params, val_acc, l2 = best
  return float(accuracy(params, x_test, test[1])), val_acc, l2


def holdout(x, y, fraction, seed=0):
  """Splits (x, y) into a train part and a seeded `fraction` for validation."""
  idx = np.random.default_rng(seed).permutation(len(y))
  n_val = max(1, int(round(fraction * len(y))))
  return (x[idx[n_val:]], y[idx[n_val:]]), (x[idx[:n_val]], y[idx[:n_val]])


@EVALUATORS.register("linear_probe")
class Evaluator:
  """Test accuracy of a logistic-regression probe, L2 chosen on validation.

  Args:
    predict_fn: the trainer's predict function.
    data: the test split, dict(name=..., split=...).
    train_data: the split the probe is trained on.
    pp_fn: the pp string of every split (deterministic).
    batch_size: global batch size of feature extraction.
    mesh: the device mesh.
    val_data: the split choosing the L2 strength; None holds out
      `val_fraction` of `train_data`.
    val_fraction: used without `val_data`.
    l2_grid: L2 strengths (on the mean cross-entropy) to choose from.
    steps: solver iterations.
    solver: "lbfgs" or "adam".
    representation: the features (`common.select_output` name).
    label_key: the integer (or one-hot) label in the preprocessed batch.
    inputs: batch keys fed to the model.
    num_classes: None: the largest label seen + 1.
    cache: keep the preprocessed splits in memory.
  """

  def __init__(self, predict_fn, *, data, train_data, pp_fn, batch_size,
               mesh, val_data=None, val_fraction=0.2,
               l2_grid=(1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1), steps=200,
               solver="lbfgs", representation="pre_logits", label_key="label",
               inputs=("image",), num_classes=None, cache=True):
    pp = pp_builder.get_preprocess_fn(pp_fn)
    splits = {"train": train_data, "val": val_data, "test": data}
    self.splits = {k: common.EvalData(d, pp, batch_size, mesh, cache=cache)
                   for k, d in splits.items() if d is not None}
    self.val_fraction, self.l2_grid = val_fraction, tuple(l2_grid)
    self.steps, self.solver, self.num_classes = steps, solver, num_classes
    self._features = common.LabelledFeatures(
        predict_fn, mesh, representation=representation,
        label_key=label_key, inputs=inputs)

  def check_inputs(self, train_state):
    """Traces the model on abstract batches; raises on a mismatch."""
    for data in self.splits.values():
      self._features.eval_shape(train_state, data)

  def run(self, train_state):
    """Yields `prec@1` (test), `val_prec@1` and the chosen `l2`."""
    feats = {k: self._features(train_state, d)
             for k, d in self.splits.items()}
    train, test = feats["train"], feats["test"]
    val = feats.get("val")
    if val is None:
      train, val = holdout(*train, self.val_fraction)
    num_classes = self.num_classes or int(max(
        f[1].max() for f in feats.values())) + 1
    test_acc, val_acc, l2 = probe(train, val, test, l2_grid=self.l2_grid,
                                  steps=self.steps, num_classes=num_classes,
                                  solver=self.solver)
    yield "prec@1", test_acc
    yield "val_prec@1", val_acc
    yield "l2", l2
