"""Weighted k-nearest-neighbour classification on frozen features.

  config.evals.knn = dict(
      type="knn", data=dict(name="bvl_digits", split="test"),
      memory=dict(name="bvl_digits", split="train"), pp_fn=...,
      k=(10, 20), temperature=0.07)

Features are L2-normalised; each query's k most cosine-similar memory
examples vote for their labels with weight exp(similarity / temperature), as
in DINO and "Rethinking nearest neighbours for visual classification"; the
class with the largest total weight wins (the lowest class id on a tie).
Reports `prec@1_k<k>` for each k.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_like.evaluators import common
from big_vision_like.pp import builder as pp_builder
from big_vision_like.registry import EVALUATORS

QUERY_CHUNK = 1024  # Queries per similarity matrix, to bound memory.


def normalize(x):
  return x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)


@functools.partial(jax.jit, static_argnames=("ks", "num_classes"))
def knn_predict(queries, memory, memory_labels, *, ks, num_classes,
                temperature):
  """Predicted classes [len(ks), Q] of the weighted k-NN vote."""
  sims = normalize(queries) @ normalize(memory).T  # [Q, M]
  top_sims, top_idx = jax.lax.top_k(sims, max(ks))  # [Q, K]
  weights = jnp.exp(top_sims / temperature)
  votes = jax.nn.one_hot(memory_labels[top_idx], num_classes) * weights[
      ..., None]  # [Q, K, C]
  return jnp.stack([jnp.argmax(votes[:, :k].sum(1), -1) for k in ks])


def knn_accuracy(queries, labels, memory, memory_labels, *, ks, num_classes,
                 temperature, chunk=QUERY_CHUNK):
  """{k: accuracy} of the weighted k-NN classifier, queries in chunks."""
  given, ks = tuple(ks), tuple(min(k, len(memory)) for k in ks)
  memory, memory_labels = jnp.asarray(memory), jnp.asarray(memory_labels)
  hits = np.zeros(len(ks))
  for start in range(0, len(queries), chunk):
    q = queries[start:start + chunk]
    pad = chunk - len(q) if len(queries) > chunk else 0  # One shape to jit.
    q = np.concatenate([q, np.zeros((pad, q.shape[1]), q.dtype)])
    pred = np.asarray(knn_predict(q, memory, memory_labels, ks=ks,
                                  num_classes=num_classes,
                                  temperature=temperature))
    pred = pred[:, :len(q) - pad]
    hits += (pred == labels[start:start + chunk]).sum(1)
  return dict(zip(given, hits / len(queries)))


@EVALUATORS.register("knn")
class Evaluator:
  """prec@1 of a temperature-weighted cosine k-NN vote.

  Args:
    predict_fn: the trainer's predict function.
    data: the query split, dict(name=..., split=...).
    memory: the memory (neighbour) split, dict(name=..., split=...).
    pp_fn: the pp string of both splits.
    batch_size: global batch size of feature extraction.
    mesh: the device mesh.
    k: neighbour count(s).
    temperature: the vote weight is exp(cosine similarity / temperature).
    representation: the features (`common.select_output` name).
    label_key: the integer (or one-hot) label in the preprocessed batch.
    inputs: batch keys fed to the model.
    num_classes: None: the largest label seen + 1.
    cache: keep the preprocessed splits in memory.
  """

  def __init__(self, predict_fn, *, data, memory, pp_fn, batch_size, mesh,
               k=(10, 20), temperature=0.07, representation="pre_logits",
               label_key="label", inputs=("image",), num_classes=None,
               cache=True):
    pp = pp_builder.get_preprocess_fn(pp_fn)
    self.query = common.EvalData(data, pp, batch_size, mesh, cache=cache)
    self.memory = common.EvalData(memory, pp, batch_size, mesh, cache=cache)
    self.ks = (k,) if isinstance(k, int) else tuple(k)
    self.temperature, self.num_classes = temperature, num_classes
    self._features = common.LabelledFeatures(
        predict_fn, mesh, representation=representation,
        label_key=label_key, inputs=inputs)

  def check_inputs(self, train_state):
    """Traces the model on abstract batches; raises on a mismatch."""
    for data in (self.query, self.memory):
      self._features.eval_shape(train_state, data)

  def run(self, train_state):
    """Yields `prec@1_k<k>` for each k."""
    q, q_labels = self._features(train_state, self.query)
    m, m_labels = self._features(train_state, self.memory)
    num_classes = self.num_classes or int(max(q_labels.max(),
                                              m_labels.max())) + 1
    accs = knn_accuracy(q, q_labels, m, m_labels, ks=self.ks,
                        num_classes=num_classes,
                        temperature=self.temperature)
    for k, acc in accs.items():
      yield f"prec@1_k{k}", float(acc)
