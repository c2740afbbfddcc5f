"""ImageNet zero-shot data, named sets in the `zeroshot` evaluator, and a
zero-shot classifier checked against open_clip's.

The label maps are checked against the files TFDS ships (the 1,000 sorted
WordNet ids its ImageNet ClassLabels use) and, when timm is installed,
against timm's ImageNet-A / -R lists (read as text files). The open_clip
check builds a tiny random open_clip CLIP in ONE subprocess without
TensorFlow (`_REFERENCE`; torch next to TF can crash the process): its
state dict, images and `build_zero_shot_classifier` outputs go through an
`.npz`; this process converts the weights and runs its own tokenizer and
evaluator.
"""

import importlib.util
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.datasets.imagenet2012 import imagenet_common

from big_vision_like import sharding
from big_vision_like import step as step_lib
from big_vision_like.evaluators import classification
from big_vision_like.evaluators import imagenet_data
from big_vision_like.models import two_towers
from big_vision_like.pp import tokenizer
from big_vision_like.registry import EVALUATORS
from big_vision_like.tools import convert_open_clip
from tests.evaluators import fakes

HAVE_OPEN_CLIP = importlib.util.find_spec("open_clip") is not None
needs_open_clip = pytest.mark.skipif(not HAVE_OPEN_CLIP,
                                     reason="needs open_clip")
NAMES5 = ["goldfish", "tabby cat", "school bus", "espresso", "volcano"]
PROB_TOL = 1e-4


def _wnids():
  with open(imagenet_common.label_names_file(), encoding="utf-8") as f:
    return f.read().split()


def _mesh():
  return sharding.make_mesh()


# ------------------------------------------------------------------ data


def test_counts_and_template_sets():
  names = imagenet_data.class_names("imagenet")
  assert len(names) == 1000 and all(n and n.strip() == n for n in names)
  assert names[:3] == ["tench", "goldfish", "great white shark"]
  assert names[-1] == "toilet paper"
  t80, t7 = imagenet_data.templates("clip_80"), imagenet_data.templates(
      "clip_7")
  assert len(t80) == 80 == len(set(t80)) and len(t7) == 7
  assert set(t7) <= set(t80) and t80[0] == "a bad photo of a {}."
  assert all(t.count("{}") == 1 for t in t80)
  for variant in ("imagenet2012", "imagenet_v2", "imagenet_sketch",
                  "imagenet2012_real"):
    assert imagenet_data.class_names(variant) == names
    assert imagenet_data.label_indices(variant) is None
  with pytest.raises(KeyError, match="imagenet_a"):
    imagenet_data.class_names("imagenet-a")


@pytest.mark.parametrize("variant,first", [("imagenet_a", "stingray"),
                                           ("imagenet_r", "goldfish")])
def test_subsets_index_the_tfds_label_order(variant, first):
  wnids = _wnids()
  assert len(wnids) == 1000 and wnids == sorted(wnids)
  upper = variant.upper()
  subset = getattr(imagenet_data, f"{upper}_WNIDS")
  indices = imagenet_data.label_indices(variant)
  assert len(subset) == len(set(subset)) == len(indices) == 200
  assert indices == [wnids.index(w) for w in subset] == sorted(indices)
  names = imagenet_data.class_names(variant)
  assert names[0] == first and len(names) == 200
  assert names == [imagenet_data.CLASS_NAMES[i] for i in indices]
  spec = importlib.util.find_spec("timm")
  if spec is not None:  # timm's copy of the lists (independent source).
    info = os.path.join(list(spec.submodule_search_locations)[0], "data",
                        "_info")
    short = variant[-1]
    with open(os.path.join(info, f"imagenet_{short}_synsets.txt")) as f:
      assert f.read().split() == list(subset)
    with open(os.path.join(info, f"imagenet_{short}_indices.txt")) as f:
      assert [int(x) for x in f.read().split()] == indices


@pytest.mark.parametrize("name", ["imagenet_v2", "imagenet_sketch",
                                  "imagenet_a", "imagenet_r"])
def test_tfds_variants_use_the_1000_class_labels(name, tmp_path):
  # Why ImageNet-A/-R need `label_indices`: TFDS labels them in the 1,000.
  label = tfds.builder(name, data_dir=str(tmp_path)).info.features["label"]
  assert label.names == _wnids()


# ------------------------------------------------ evaluator, named sets


def _put_vectors(key, vectors, labels):
  fakes.put_arrays(key, {"test": {"image": vectors.astype(np.float32),
                                  "label": np.asarray(labels, np.int64)}})
  return fakes.data(key, "test")


def _clip_pp():
  return 'tokenize(77, "sticky", model="clip", pad_value=0)'


@pytest.fixture(scope="module")
def table():
  """Params of `fakes.two_tower_predict` for CLIP's 49,408 ids."""
  try:
    tokenizer.clip_vocab_path("clip")
  except FileNotFoundError:
    pytest.skip("needs the CLIP vocabulary (ships with open_clip)")
  dim = 8
  rng = np.random.default_rng(0)
  return {"params": {"table": rng.normal(size=(49408, dim)).astype(
      np.float32)}}


def test_imagenet_named_sets_give_1000_classes(table):
  data = _put_vectors("imagenet1k", np.ones((3, 8)), [0, 1, 2])
  ev = EVALUATORS.get("zeroshot")(
      fakes.two_tower_predict, data=data, pp_fn="", pp_txt=_clip_pp(),
      batch_size=8, mesh=_mesh(), class_names="imagenet", templates=("{}",))
  assert len(ev.class_names) == 1000 and ev.templates == ("{}",)
  assert ev.prompts.features["labels"].shape == (1000, 77)
  assert ev.class_embeddings(table).shape == (1000, 8)
  assert ev.label_indices is None


def test_imagenet_a_maps_1000_class_labels_onto_its_200(table):
  # Images at class embeddings of known classes; labels in the 1,000.
  probe = EVALUATORS.get("zeroshot")(
      fakes.two_tower_predict, data=_put_vectors("ina0", np.ones((1, 8)),
                                                 [0]),
      pp_fn="", pp_txt=_clip_pp(), batch_size=8, mesh=_mesh(),
      class_names="imagenet_a", templates=("{}",))
  classes = probe.class_embeddings(table)  # [200, 8]
  indices = np.array(imagenet_data.IMAGENET_A_INDICES)
  picks = np.arange(0, 200, 9)  # 23 images.
  labels = indices[picks].copy()
  labels[:3] = indices[picks[:3] + 1]  # Three wrong labels (still in -A).
  labels[3] = 0  # "tench" is not an ImageNet-A class.
  ev = EVALUATORS.get("zeroshot")(
      fakes.two_tower_predict, data=_put_vectors("ina", classes[picks],
                                                 labels),
      pp_fn="", pp_txt=_clip_pp(), batch_size=8, mesh=_mesh(),
      class_names="imagenet_a", templates=("{}",), top_k=(1, 5))
  res = dict(ev.run(table))
  logits = classes[picks] @ classes.T
  mapped = np.array([list(indices).index(x) if x in indices else -1
                     for x in labels])
  top5 = np.argsort(-logits, axis=1)[:, :5]
  assert res["prec@1"] == pytest.approx(np.mean(logits.argmax(1) == mapped))
  assert res["prec@1"] == pytest.approx(19 / 23)  # Distinct classes.
  assert res["prec@5"] == pytest.approx(
      np.mean([m in row for m, row in zip(mapped, top5)]))
  np.testing.assert_array_equal(
      classification.map_labels(np.array([6, 0, indices[-1], 1000, -1]),
                                indices),
      [0, -1, 199, -1, -1])
  multi_hot = np.zeros((2, 1000))
  multi_hot[0, [6, 11]] = 1
  np.testing.assert_array_equal(
      classification.map_labels(multi_hot, indices)[:, :3],
      [[1, 1, 0], [0, 0, 0]])
  with pytest.raises(ValueError, match="label_indices has 3 entries"):
    EVALUATORS.get("zeroshot")(
        fakes.two_tower_predict, data=_put_vectors("ina2", np.ones((1, 8)),
                                                   [0]),
        pp_fn="", pp_txt=_clip_pp(), batch_size=8, mesh=_mesh(),
        class_names=["a", "b"], label_indices=[1, 2, 3])


# ------------------------------------------- against open_clip (torch)

_REFERENCE = """
import sys
import numpy as np
import open_clip
import torch
out = sys.argv[1]
names = sys.argv[2].split(",")
templates = list(open_clip.zero_shot_metadata.SIMPLE_IMAGENET_TEMPLATES)
torch.manual_seed(0)
model = open_clip.CLIP(
    embed_dim=16,
    vision_cfg={"layers": 1, "width": 64, "head_width": 32, "patch_size": 8,
                "image_size": 32, "mlp_ratio": 2},
    text_cfg={"context_length": 77, "vocab_size": 49408, "width": 64,
              "heads": 2, "layers": 2})
with torch.no_grad():
  for p in model.parameters():
    p.add_(0.1 * torch.randn_like(p))
model.eval()
x = np.random.RandomState(0).randn(6, 3, 32, 32).astype(np.float32)
with torch.no_grad():
  classifier = open_clip.build_zero_shot_classifier(
      model, tokenizer=open_clip.get_tokenizer("ViT-B-32"), classnames=names,
      templates=templates, num_classes_per_batch=None, device="cpu")
  zimg = model.encode_image(torch.from_numpy(x), normalize=True)
  probs = (100.0 * zimg @ classifier).softmax(dim=-1)
sd = {"sd/" + k: v.numpy() for k, v in model.state_dict().items()}
np.savez(out, x=x, classifier=classifier.numpy(), probs=probs.numpy(), **sd)
"""


@pytest.fixture(scope="module")
def open_clip_ref(tmp_path_factory):
  """Tiny random open_clip CLIP: weights, images, classifier, probs."""
  if not HAVE_OPEN_CLIP:
    pytest.skip("needs open_clip")
  out = str(tmp_path_factory.mktemp("open_clip_zs") / "ref.npz")
  proc = subprocess.run(
      [sys.executable, "-c", _REFERENCE, out, ",".join(NAMES5)],
      capture_output=True, text=True, timeout=300, check=False)
  if proc.returncode:
    pytest.fail(f"open_clip reference failed:\n{proc.stderr[-3000:]}")
  with np.load(out) as data:
    return {k: data[k] for k in data.files}


@needs_open_clip
def test_zero_shot_probabilities_equal_open_clip(open_clip_ref):
  ref = open_clip_ref
  sd = {k[3:]: v for k, v in ref.items() if k.startswith("sd/")}
  params, kw, _ = convert_open_clip.open_clip_to_params(
      sd, num_heads=2, text_num_heads=2)
  model = two_towers.Model(**kw)
  predict = step_lib.make_predict_fns(model, ("image", "labels"))["predict"]
  images = ref["x"].transpose(0, 2, 3, 1)  # NCHW -> NHWC.
  labels = np.arange(6) % 5
  fakes.put_arrays("open_clip_zs", {"test": {
      "image": images, "label": labels}})
  ev = EVALUATORS.get("zeroshot")(
      predict, data=fakes.data("open_clip_zs", "test"), pp_fn="",
      pp_txt=_clip_pp(), batch_size=8, mesh=_mesh(), class_names=NAMES5,
      templates="clip_7")
  state = {"params": params}
  classes = ev.class_embeddings(state)  # [5, D]
  np.testing.assert_allclose(classes, ref["classifier"].T, atol=1e-5)
  zimg, _, _ = jax.jit(model.apply)({"params": params}, images)
  probs = jax.nn.softmax(100.0 * np.asarray(zimg) @ classes.T, axis=-1)
  diff = np.abs(np.asarray(probs) - ref["probs"]).max()
  print(f"max |p - p_open_clip| = {diff:.2e}")
  assert diff < PROB_TOL, diff
  assert ref["probs"].max(1).min() < 0.99  # Not all saturated.
  res = dict(ev.run(state))
  assert res["prec@1"] == pytest.approx(
      np.mean(ref["probs"].argmax(1) == labels))
