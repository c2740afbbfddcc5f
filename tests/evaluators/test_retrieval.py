"""Tests of image<->text Recall@k: a hand-computed case, brute force, dedup."""

import jax
import numpy as np
import pytest

from big_vision_like import sharding
from big_vision_like.evaluators import retrieval
from big_vision_like.registry import EVALUATORS
from tests.evaluators import fakes

E = np.eye(4, dtype=np.float32)
KS = (1, 2, 5)
# Three images e0, e1, e2; up to two captions each (token 0 = padding).
# Token id t embeds as TABLE[t]: 1 -> e0 ("A"), 2 -> e3 ("B"), 3 -> e1 ("C"),
# 4 -> e2 ("D"). Image 1's caption "A" duplicates image 0's first caption.
TABLE = np.stack([np.zeros(4), E[0], E[3], E[1], E[2]]).astype(np.float32)
TOKENS = np.array([[[1, 0, 0], [2, 0, 0]],
                   [[1, 0, 0], [0, 0, 0]],
                   [[3, 0, 0], [4, 0, 0]]])
EXPECTED = {  # Ranks worked out by hand in the comments of the module.
    "i2t_recall@1": 1 / 3, "i2t_recall@2": 2 / 3, "i2t_recall@5": 1.0,
    "t2i_recall@1": 2 / 5, "t2i_recall@2": 2 / 5, "t2i_recall@5": 1.0,
    "dedup_i2t_recall@1": 2 / 3, "dedup_i2t_recall@2": 2 / 3,
    "dedup_i2t_recall@5": 1.0, "dedup_t2i_recall@1": 2 / 4,
    "dedup_t2i_recall@2": 2 / 4, "dedup_t2i_recall@5": 1.0,
}
# i2t ranks (negatives scoring >= the best own caption): image 0 ties with
# image 1's "A" -> 1; image 1 (score 0 everywhere but "C") -> 4; image 2 -> 0.
# t2i ranks: A0 -> 0, B -> 2, A1 -> 2 (image 0 scores higher), C -> 2,
# D -> 0. Dedup i2t: 0, 3, 0; dedup t2i (A, B, C, D): 0, 2, 2, 0.


def _hand_case():
  zimg = E[:3]
  valid = TOKENS[..., 0] > 0
  ztxt = TABLE[TOKENS[..., 0]]
  return zimg, ztxt, valid


def test_hand_computed_ranks_with_ties_and_duplicates():
  zimg, ztxt, valid = _hand_case()
  got = retrieval.recalls(zimg, ztxt, valid, KS)
  got.update({f"dedup_{k}": v for k, v in retrieval.recalls(
      zimg, ztxt, valid, KS, retrieval.dedup_ids(TOKENS, valid)).items()})
  assert got == pytest.approx(EXPECTED)


def _brute_force(zimg, ztxt, valid, ks, ids):
  """Loops over queries; candidates are distinct caption ids."""
  emb = {}
  owners = {}
  for i, j in zip(*np.nonzero(valid)):
    emb.setdefault(ids[i, j], ztxt[i, j])
    owners.setdefault(ids[i, j], set()).add(i)
  own = {i: {ids[i, j] for j in np.nonzero(valid[i])[0]}
         for i in range(len(zimg))}
  i2t = []
  for i in range(len(zimg)):
    if not own[i]:
      continue
    scores = {u: float(zimg[i] @ e) for u, e in emb.items()}
    best = max(scores[u] for u in own[i])
    i2t.append(sum(s >= best for u, s in scores.items() if u not in own[i]))
  t2i = []
  for u, e in emb.items():
    scores = zimg @ e
    best = max(scores[i] for i in owners[u])
    t2i.append(sum(scores[i] >= best for i in range(len(zimg))
                   if i not in owners[u]))
  out = {f"i2t_recall@{k}": np.mean(np.array(i2t) < k) for k in ks}
  out.update({f"t2i_recall@{k}": np.mean(np.array(t2i) < k) for k in ks})
  return out


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_brute_force_with_many_ties(seed):
  rng = np.random.default_rng(seed)
  n, k, vocab = 300, 3, 12  # > QUERY_CHUNK queries: several chunks.
  units = np.eye(6, dtype=np.float32)  # Scores are exactly 0 or 1.
  tokens = rng.integers(0, vocab, size=(n, k, 1))
  valid = tokens[..., 0] > 0
  ztxt = units[tokens[..., 0] % 6]
  zimg = units[rng.integers(0, 6, n)]
  plain = np.where(valid, np.arange(n * k).reshape(n, k), -1)
  assert retrieval.recalls(zimg, ztxt, valid, KS) == pytest.approx(
      _brute_force(zimg, ztxt, valid, KS, plain))
  dedup = retrieval.dedup_ids(tokens, valid)
  assert retrieval.recalls(zimg, ztxt, valid, KS, dedup) == pytest.approx(
      _brute_force(zimg, ztxt, valid, KS, dedup))


@pytest.mark.parametrize("with_mask", [False, True])
def test_evaluator_end_to_end(with_mask):
  tokens, images = TOKENS.copy(), E[:3] * 3.0  # Embeddings get normalised.
  features = {"image": images, "captions": tokens}
  if with_mask:  # An explicit mask wins over the padding rule.
    tokens[1, 1] = [4, 0, 0]
    features["captions_mask"] = np.array([[1, 1], [1, 0], [1, 1]], bool)
  fakes.put_arrays(f"retrieval{with_mask}", {"test": features})
  ev = EVALUATORS.get("retrieval")(
      fakes.two_tower_predict, data=fakes.data(f"retrieval{with_mask}",
                                               "test"),
      pp_fn="", batch_size=8, mesh=sharding.make_mesh(), ks=KS,
      dedup_captions=True)
  res = dict(ev.run({"params": {"table": TABLE}}))
  assert res == pytest.approx(EXPECTED)


def test_check_inputs_traces_the_evaluator_on_abstract_batches():
  fakes.put_arrays("retrieval_check", {"test": {"image": E[:3],
                                                "captions": TOKENS}})
  state = {"params": {"table": jax.ShapeDtypeStruct(TABLE.shape,
                                                    TABLE.dtype)}}
  kw = dict(data=fakes.data("retrieval_check", "test"), pp_fn="",
            batch_size=8, mesh=sharding.make_mesh())
  retrieval_ev = EVALUATORS.get("retrieval")
  retrieval_ev(fakes.two_tower_predict, **kw).check_inputs(state)
  with pytest.raises(ValueError, match=r"captions: int64\[8, 2, 3\].*"
                     "KeyError.*'caps'"):
    retrieval_ev(fakes.two_tower_predict, captions_key="caps",
                 **kw).check_inputs(state)
