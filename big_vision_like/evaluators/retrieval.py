"""Image <-> text retrieval Recall@k, with one or several captions per image.

  config.evals.retrieval = dict(
      type="retrieval", data=dict(name="bvl_shapes", split="test"),
      pp_fn="...|tokenize(..., inkey='captions', outkey='captions')",
      ks=(1, 5, 10), dedup_captions=True)

Batch format (after `pp_fn`), per example:
  - `image` [H, W, C]: the image;
  - `captions` [K, L] int tokens: up to K captions (K fixed by the pp);
  - `captions_mask` [K] bool, optional: which captions are real. Without
    it, a caption is real when any of its tokens differs from `pad_id` (an
    all-padding row is an empty caption).
Images are embedded as `{image_key: image}`, captions as
`{text_key: tokens [B * K, L]}`; embeddings are L2-normalised and compared
by dot product.

Definitions (ties count against the model):
  - image->text: each image with at least one caption queries all real
    captions of the split; its rank is the number of non-matching captions
    scoring >= its best-scoring own caption; Recall@k = P(rank < k).
  - text->image: each real caption queries all images (those without
    captions too); rank as above, against its own image.
  - `dedup_captions=True` also reports `dedup_` metrics, where identical
    token sequences are one candidate (any image holding it matches): an
    image is right at k if one of its captions' deduplicated ids is in the
    top k, and each distinct caption queries once, matching every image
    that holds it.

Reports `i2t_recall@k`, `t2i_recall@k` (and `dedup_i2t_recall@k`,
`dedup_t2i_recall@k`).
"""

import jax
import jax.numpy as jnp
import numpy as np

from big_vision_like.evaluators import common
from big_vision_like.pp import builder as pp_builder
from big_vision_like.registry import EVALUATORS

QUERY_CHUNK = 256


@jax.jit
def _chunk_ranks(queries, candidates, query_ids, candidate_ids):
  """Rank of each query's best match: negatives scoring >= it."""
  scores = queries @ candidates.T  # [Q, C]
  match = jnp.any(query_ids[:, None, :, None] ==
                  candidate_ids[None, :, None, :], axis=(2, 3))  # [Q, C]
  best = jnp.max(jnp.where(match, scores, -jnp.inf), axis=1)  # [Q]
  return jnp.sum(~match & (scores >= best[:, None]), axis=1)


def ranks(queries, candidates, query_ids, candidate_ids, chunk=QUERY_CHUNK):
  """Ranks [Q] of the best-scoring matching candidate of each query.

  Args:
    queries: [Q, D] embeddings.
    candidates: [C, D] embeddings.
    query_ids: [Q, A] int ids of each query (-1: none).
    candidate_ids: [C, B] int ids of each candidate (-2: none); a candidate
      matches a query when they share an id.
    chunk: queries per step.

  Returns:
    [Q] number of non-matching candidates scoring >= the best match.
  """
  out = []
  for start in range(0, len(queries), chunk):
    q, ids = queries[start:start + chunk], query_ids[start:start + chunk]
    n = len(q)
    if len(queries) > chunk:  # Pad to one shape, to compile once.
      q = np.concatenate([q, np.zeros((chunk - n, q.shape[1]), q.dtype)])
      ids = np.concatenate([ids, np.full((chunk - n, ids.shape[1]), -1)])
    out.append(np.asarray(_chunk_ranks(q, candidates, ids,
                                       candidate_ids))[:n])
  return np.concatenate(out)


def _normalize(x):
  x = np.asarray(x, np.float32)
  return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)


def recalls(zimg, ztxt, valid, ks, caption_ids=None):
  """{metric: value} of both directions.

  Args:
    zimg: [N, D] image embeddings.
    ztxt: [N, K, D] caption embeddings.
    valid: [N, K] bool, real captions.
    ks: the k of Recall@k.
    caption_ids: [N, K] candidate id of each caption (default: each real
      caption its own id); captions sharing an id are one candidate (the
      first one's embedding is used).
  """
  if caption_ids is None:
    caption_ids = np.full(valid.shape, -1)
    caption_ids[valid] = np.arange(valid.sum())
  ids = caption_ids[valid]  # [M]
  uniq, first = np.unique(ids, return_index=True)
  cand = ztxt[valid][first]  # [U, D]
  img_ids = np.where(valid, caption_ids, -1)  # [N, K]
  has_caption = valid.any(axis=1)
  image_ranks = ranks(zimg[has_caption], cand, img_ids[has_caption],
                      uniq[:, None])
  # Each distinct caption queries once, matching every image that holds it.
  text_ranks = ranks(cand, zimg, uniq[:, None], np.where(valid, caption_ids,
                                                         -2))
  out = {}
  for k in ks:
    out[f"i2t_recall@{k}"] = float(np.mean(image_ranks < k))
  for k in ks:
    out[f"t2i_recall@{k}"] = float(np.mean(text_ranks < k))
  return out


def dedup_ids(tokens, valid):
  """[N, K] id per caption, equal for equal token rows (-1: not real)."""
  flat = tokens.reshape(-1, tokens.shape[-1])
  _, inverse = np.unique(flat, axis=0, return_inverse=True)
  return np.where(valid, inverse.reshape(valid.shape), -1)


@EVALUATORS.register("retrieval")
class Evaluator:
  """Image->text and text->image Recall@k over a split (see module doc).

  Args:
    predict_fn: the trainer's predict function of a two-tower model.
    data: the split, dict(name=..., split=...).
    pp_fn: its pp string, giving `image_key` and `captions_key` [K, L].
    batch_size: global batch size (images; texts are K times more).
    mesh: the device mesh.
    ks: the k of Recall@k.
    dedup_captions: also report recalls with identical captions merged.
    image_key: the batch key and model input of images.
    captions_key: the batch key of caption tokens [K, L].
    captions_mask_key: the batch key of the [K] real-caption mask, if any.
    text_key: the model input of tokens.
    pad_id: the padding token (an all-`pad_id` row is no caption).
    img_output: the image embedding (`common.select_output` name).
    txt_output: the text embedding.
    cache: keep the preprocessed split in memory.
  """

  def __init__(self, predict_fn, *, data, pp_fn, batch_size, mesh,
               ks=(1, 5, 10), dedup_captions=False, image_key="image",
               captions_key="captions", captions_mask_key="captions_mask",
               text_key="labels", pad_id=0, img_output="zimg",
               txt_output="ztxt", cache=True):
    self.data = common.EvalData(data, pp_builder.get_preprocess_fn(pp_fn),
                                batch_size, mesh, cache=cache)
    self.ks, self.dedup = tuple(ks), dedup_captions

    def embed(train_state, batch):
      caps = batch[captions_key]  # [B, K, L]
      b, k, length = caps.shape
      out = predict_fn(train_state, {image_key: batch[image_key]})
      zimg = common.select_output(out, img_output, batch)
      out = predict_fn(train_state, {text_key: caps.reshape(b * k, length)})
      ztxt = common.select_output(out, txt_output, batch)
      valid = batch.get(captions_mask_key)
      if valid is None:
        valid = jnp.any(caps != pad_id, axis=-1)
      res = {"zimg": zimg, "ztxt": ztxt.reshape(b, k, -1),
             "valid": valid.astype(bool)}
      if dedup_captions:
        res["tokens"] = caps
      return res

    self._gather = common.Gatherer(embed, mesh)

  def check_inputs(self, train_state):
    """Traces the model on abstract batches; raises on a mismatch."""
    self._gather.eval_shape(train_state, self.data)

  def run(self, train_state):
    """Yields Recall@k of both directions (and their dedup versions)."""
    out = self._gather(train_state, self.data)
    zimg, ztxt = _normalize(out["zimg"]), _normalize(out["ztxt"])
    yield from recalls(zimg, ztxt, out["valid"], self.ks).items()
    if self.dedup:
      ids = dedup_ids(out["tokens"], out["valid"])
      for name, value in recalls(zimg, ztxt, out["valid"], self.ks,
                                 ids).items():
        yield f"dedup_{name}", value
