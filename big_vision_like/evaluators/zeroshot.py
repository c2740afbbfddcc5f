"""Zero-shot classification with a two-tower (image-text) model.

  config.evals.zeroshot = dict(
      type="zeroshot", data=dict(name="bvl_shapes", split="test"),
      pp_fn="decode|value_range(-1, 1)|keep('image', 'label')",
      pp_txt='tokenize(max_len=16, model="bvl_shapes", inkey="texts", '
             'outkey="labels")',
      class_names=None,  # None: the data source's names.
      templates=("a photo of a {}.", "a drawing of a {}."))

Each class's embedding is the mean of its prompts' L2-normalised text
embeddings (one prompt per template, `template.format(class_name)`),
re-normalised; an image is classified by the largest cosine similarity.
Prompts are tokenised by `pp_txt` from the string feature `texts` (one
prompt, or with `pp_txt_batched=True` a vector of prompts), and fed to
the model as `{text_key: tokens}` alone; images as `{image_key: image}`.
Class names come from `class_names` (a list), else from the data source:
its `class_names` attribute, or the names of the TFDS ClassLabel feature
`label_key`. Reports `prec@1` and `prec@5` (top-k over the classes).

Named sets (imagenet_data.py): `class_names="imagenet"` (CLIP's 1,000
curated names; also "imagenet2012", "imagenet_v2", "imagenet_sketch",
"imagenet2012_real"), "imagenet_a", "imagenet_r" (their 200 classes);
`templates="clip_80"` or "clip_7" (CLIP's prompts). ImageNet-A / -R in TFDS
carry 1,000-class labels: the named set's `label_indices` (the 200 classes'
positions among the 1,000) map them onto its 200 classes, so

  config.evals.zeroshot_a = dict(
      type="zeroshot", data=dict(name="imagenet_a", split="test"),
      pp_fn="decode|resize(224)|value_range(-1, 1)|keep('image', 'label')",
      pp_txt='tokenize(77, "sticky", model="clip", pad_value=0)',
      class_names="imagenet_a", templates="clip_80")

scores ImageNet-A as CLIP does (top-k among the 200 classes). Data labelled
0..199 give `label_indices=list(range(200))`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

from big_vision_like.evaluators import classification
from big_vision_like.evaluators import common
from big_vision_like.evaluators import imagenet_data
from big_vision_like.pp import builder as pp_builder
from big_vision_like.registry import EVALUATORS


def normalize(x, axis=-1):
  return x / (jnp.linalg.norm(x, axis=axis, keepdims=True) + 1e-12)


PROMPT_CHUNK = 4096  # Prompts per call of a batched `pp_txt`.


def tokenize(texts, pp_txt, key, batched=False, chunk=PROMPT_CHUNK):
  """Tokens [N, L] of `texts` by the pp string `pp_txt` (input `texts`).

  Args:
    texts: the prompts (strings).
    pp_txt: the pp string; it reads `texts` and writes `key`.
    key: the tokens' key.
    batched: run `pp_txt` on chunks of prompts, `texts` a [n] string vector
      per call (as the trainer's `pp_cached_batched`), not on one prompt at a
      time. For pp strings of vector-safe ops only (`tokenize`, `lower`):
      one tokenizer call per chunk instead of one per prompt (80,000
      ImageNet prompts to 64 SentencePiece tokens: 1.2 s instead of 7.8 s
      on a 2-core CPU), same tokens.
    chunk: prompts per call of `pp_txt` when `batched`.
  """
  pp = pp_builder.get_preprocess_fn(pp_txt)
  ds = tf.data.Dataset.from_tensor_slices({"texts": list(texts)})
  ds = ds.batch(chunk).map(pp) if batched else ds.map(pp).batch(chunk)
  out = []
  for tokens in ds.as_numpy_iterator():
    if key not in tokens:
      raise KeyError(f"pp_txt {pp_txt!r} gives {sorted(tokens)}, not "
                     f"{key!r}.")
    out.append(tokens[key])
  return np.concatenate(out)


def class_embeddings(text_emb, num_classes):
  """[C * T, D] prompt embeddings (class-major) -> [C, D] class embeddings."""
  z = normalize(jnp.asarray(text_emb, jnp.float32))
  z = z.reshape(num_classes, -1, z.shape[-1])
  return normalize(z.mean(axis=1))


@EVALUATORS.register("zeroshot")
class Evaluator:
  """Top-k accuracy of classifying images by their nearest class prompt.

  Args:
    predict_fn: the trainer's predict function of a two-tower model.
    data: the labelled image split, dict(name=..., split=...).
    pp_fn: the image pp string.
    pp_txt: the prompt pp string (reads `texts`, writes `text_key`).
    pp_txt_batched: `pp_txt` is vector-safe (`tokenize`, `lower`): it runs
      on chunks of prompts, several times faster for thousands of prompts.
    batch_size: global batch size.
    mesh: the device mesh.
    class_names: list of class names; a named set ("imagenet",
      "imagenet_a", ...: `imagenet_data.CLASS_NAME_SETS`); None: from the
      data source.
    templates: prompt templates with one `{}`, or a named set ("clip_80",
      "clip_7": `imagenet_data.TEMPLATE_SETS`).
    label_indices: the data label of each class (as many as classes), when
      the data's labels are not 0..C-1; None: the named set's (ImageNet-A/-R:
      their positions among the 1,000 ImageNet classes), else identity.
    top_k: the k of the reported prec@k.
    label_key: the integer (or one-hot) label in the preprocessed batch.
    image_key: the model input holding images.
    text_key: the model input holding tokens.
    img_output: the image embedding (`common.select_output` name).
    txt_output: the text embedding.
    cache: keep the preprocessed split in memory.
  """

  def __init__(self, predict_fn, *, data, pp_fn, pp_txt, batch_size, mesh,
               pp_txt_batched=False, class_names=None,
               templates=("a photo of a {}.",),
               label_indices=None, top_k=(1, 5), label_key="label",
               image_key="image", text_key="labels", img_output="zimg",
               txt_output="ztxt", cache=True):
    self.data = common.EvalData(data, pp_builder.get_preprocess_fn(pp_fn),
                                batch_size, mesh, cache=cache)
    if isinstance(class_names, str):
      if label_indices is None:
        label_indices = imagenet_data.label_indices(class_names)
      class_names = imagenet_data.class_names(class_names)
    if class_names is None:
      class_names = common.class_names(self.data.source, label_key)
    if isinstance(templates, str):
      templates = imagenet_data.templates(templates)
    self.class_names, self.templates = list(class_names), tuple(templates)
    self.label_indices = None
    if label_indices is not None:
      self.label_indices = np.asarray(label_indices, np.int32)
      if self.label_indices.shape != (len(self.class_names),):
        raise ValueError(f"label_indices has {self.label_indices.shape[0]} "
                         f"entries for {len(self.class_names)} classes.")
    prompts = [t.format(c) for c in self.class_names for t in self.templates]
    self.prompts = common.ArrayData(
        {text_key: tokenize(prompts, pp_txt, text_key, pp_txt_batched)},
        batch_size, mesh)
    self._embed_text = common.Gatherer(common.select_fn(
        predict_fn, {"z": txt_output}, inputs=(text_key,)), mesh)
    self.top_k = tuple(top_k)

    def per_example(train_state, batch, classes):
      out = predict_fn(train_state, {image_key: batch[image_key]})
      zimg = normalize(common.select_output(out, img_output, batch))
      logits = zimg.astype(jnp.float32) @ classes.T  # [B, C]
      labels = batch[label_key]
      if self.label_indices is not None:
        labels = classification.map_labels(labels, self.label_indices)
      return {f"prec@{k}": classification.topk_correct(
          logits, labels, k) for k in self.top_k}

    self._means = common.MaskedMeans(per_example, mesh)

  def class_embeddings(self, train_state):
    """[C, D] unit class embeddings (numpy, the same on every process)."""
    z = self._embed_text(train_state, self.prompts)["z"]
    return np.asarray(class_embeddings(z, len(self.class_names)))

  def check_inputs(self, train_state):
    """Traces both towers on abstract batches; raises on a mismatch."""
    z = self._embed_text.eval_shape(train_state, self.prompts)["z"]
    classes = jax.ShapeDtypeStruct((len(self.class_names), z.shape[-1]),
                                   jnp.float32)
    self._means.eval_shape(train_state, self.data, classes)

  def run(self, train_state):
    """Yields `prec@k` for k in `top_k`."""
    classes = self.class_embeddings(train_state)
    yield from self._means(train_state, self.data, classes).items()
