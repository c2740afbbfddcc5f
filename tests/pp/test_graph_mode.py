"""Every registered pp op is TF graph code, without AutoGraph.

`get_preprocess_fn` marks its function `do_not_convert` (AutoGraph's source
conversion of the op chain only slowed tracing down), so an op that used
Python control flow on a tensor (`if tensor:`, `for ... in tensor`) would
work eagerly and fail inside `tf.data`. Each op runs here in a `tf.data` map
and eagerly on the same example and `_seed`: same outputs, no errors.
"""

import numpy as np
import pytest
import tensorflow as tf

from big_vision_like import registry
from big_vision_like.pp import builder
from big_vision_like.pp import utils

IMAGE = np.random.default_rng(0).integers(0, 256, (40, 48, 3), np.uint8)
JPEG = tf.io.encode_jpeg(IMAGE).numpy()
TOK = 'tokenize(max_len=16, eos="sticky", model="bvl_shapes", pad_value=0'

# op -> (pp string, input features). Images are uint8 [40, 48, 3] unless the
# pp decodes the JPEG first.
CASES = {
    "cast": ("cast('float32')", {"image": IMAGE}),
    "central_crop": ("central_crop(24)", {"image": IMAGE}),
    "choice": ("choice(n=2, key='texts')",
               {"texts": ["a", "b", "c", "d"]}),
    "clip_value_range": ("clip_value_range", {"image": IMAGE}),
    "copy": ("copy('label', 'y')", {"label": 3}),
    "decode": ("decode", {"image": JPEG}),
    "decode_jpeg_and_inception_crop": ("decode_jpeg_and_inception_crop(24)",
                                       {"image": JPEG}),
    "drop": ("drop('label')", {"image": IMAGE, "label": 3}),
    "flatten": ("flatten", {"a": {"b": 1, "c": 2.0}}),
    "flip_lr": ("flip_lr", {"image": IMAGE}),
    "gaussian_blur": ("gaussian_blur(p=0.5)", {"image": IMAGE}),
    "grayscale": ("grayscale(p=0.5)", {"image": IMAGE}),
    "grayscale_to_rgb": ("grayscale_to_rgb", {"image": IMAGE[..., :1]}),
    "inception_crop": ("inception_crop(24)", {"image": IMAGE}),
    "keep": ("keep('image')", {"image": IMAGE, "label": 3}),
    "lower": ("lower(key='text')", {"text": "A Red Circle"}),
    "onehot": ("onehot(10)", {"label": 3}),
    "pad_to_shape": ("pad_to_shape((6,), key='t')", {"t": [1, 2, 3]}),
    "randaug": ("randaug(2, 10)", {"image": IMAGE}),
    "random_affine": ("random_affine(24, rotate=10, scale=0.1, shift=0.1)",
                      {"image": IMAGE}),
    "random_crop": ("random_crop(24)", {"image": IMAGE}),
    "rename": ("rename('label', 'y')", {"label": 3}),
    "resize": ("resize(20)", {"image": IMAGE}),
    "resize_long": ("resize_long(20)", {"image": IMAGE}),
    "resize_small": ("resize_small(20)", {"image": IMAGE}),
    "setdefault": ("setdefault('label', 0)", {"image": IMAGE}),
    "simple_random_crop": ("simple_random_crop(40)", {"image": IMAGE}),
    "solarize": ("solarize(p=0.5)", {"image": IMAGE}),
    "strfmt": ("strfmt('a photo of {name}.')", {"name": "circle"}),
    "three_augment": ("three_augment", {"image": IMAGE}),
    "tokenize": (TOK + ", inkey='text')", {"text": "a big red circle"}),
    "value_range": ("value_range(-1, 1)", {"image": IMAGE}),
    "vgg_value_range": ("vgg_value_range", {"image": IMAGE}),
}


def test_every_builtin_op_has_a_case():
  builtin = [name for name in registry.PP_OPS.names()
             if registry.PP_OPS.get(name).__module__.startswith(
                 "big_vision_like.")]
  assert sorted(CASES) == sorted(builtin)


@pytest.mark.parametrize("op", sorted(CASES))
def test_op_runs_in_tf_data_as_eagerly(op):
  pp, features = CASES[op]
  fn = builder.get_preprocess_fn(pp)
  seed = tf.constant([1, 2], tf.int64)
  example = {**tf.nest.map_structure(tf.constant, features),
             utils.SEED_KEY: seed}
  eager = fn(example)
  graph = next(iter(tf.data.Dataset.from_tensors(example).map(fn)))
  assert sorted(eager) == sorted(graph)
  for key in eager:
    np.testing.assert_array_equal(np.asarray(graph[key]),
                                  np.asarray(eager[key]), err_msg=f"{op}:{key}")
