"""Bad pp-op arguments fail when the pp string is built, before any data."""

import re

import pytest

from big_vision_like.pp import builder
from big_vision_like.pp import ops_general
from big_vision_like.pp import ops_image
from big_vision_like.pp import utils

# (pp string, op, the words the message must contain).
BAD = [
    ("decode|resize(0)", "resize", ["size=0", "positive"]),
    ("resize(-3)", "resize", ["size=-3"]),
    ("resize((16, -1))", "resize", ["size=(16, -1)"]),
    ("resize((4, 4, 4))", "resize", ["size=(4, 4, 4)", "(h, w)"]),
    ("resize(16.5)", "resize", ["size=16.5"]),
    ("resize(True)", "resize", ["size=True"]),
    ("resize(16, 16)", "resize",
     ["method=16 is not one of", "'bilinear'", "resize((16, 16))"]),
    ("resize(16, method='bogus')", "resize", ["method='bogus'", "'bicubic'"]),
    ("resize(16, method='BILINEAR')", "resize", ["method='BILINEAR'"]),
    ("resize(16, antialias='yes')", "resize", ["antialias='yes'"]),
    ("resize(16, rounding=1)", "resize", ["rounding=1", "True or False"]),
    ("resize(16, key=3)", "resize", ["key=3", "str"]),
    ("resize_small(0)", "resize_small", ["size=0"]),
    ("resize_small((3, 4))", "resize_small", ["size=(3, 4)"]),
    ("resize_small(16, 16)", "resize_small",
     ["method=16", "one side length"]),
    ("resize_long(-1)", "resize_long", ["size=-1"]),
    ("resize_long(8, method='cubic')", "resize_long", ["method='cubic'"]),
    ("central_crop(0)", "central_crop", ["size=0"]),
    ("central_crop((2, 0))", "central_crop", ["size=(2, 0)"]),
    ("random_crop(-2)", "random_crop", ["size=-2"]),
    ("value_range('a', 'b')", "value_range", ["vmin='a'", "number"]),
    ("value_range(-1, 'b')", "value_range", ["vmax='b'", "number"]),
    ("value_range(0, 1, 3, 3)", "value_range", ["in_max=3", "in_min=3"]),
    ("value_range(0, 1, clip_values=1)", "value_range", ["clip_values=1"]),
    ("decode(2)", "decode", ["channels=2", "1, 3, 4"]),
    ("inception_crop(224, 224)", "inception_crop",
     ["area_min=224", "percentage", "area_min`"]),
    ("inception_crop(area_min=0)", "inception_crop", ["area_min=0"]),
    ("inception_crop(area_min=50, area_max=20)", "inception_crop",
     ["area_max=20", ">= 50"]),
    ("inception_crop(0)", "inception_crop", ["size=0"]),
    ("inception_crop(8, method=2)", "inception_crop", ["method=2"]),
    ("decode_jpeg_and_inception_crop(8, ratio_min=2)",
     "decode_jpeg_and_inception_crop", ["ratio_max=1.33", ">= 2"]),
    ("decode_jpeg_and_inception_crop(ratio_min=0)",
     "decode_jpeg_and_inception_crop", ["ratio_min=0"]),
    ("random_affine(0)", "random_affine", ["size=0"]),
    ("random_affine(8, rotate=-5)", "random_affine", ["rotate=-5", ">= 0"]),
    ("random_affine(8, scale=1)", "random_affine", ["scale=1", "< 1"]),
    ("random_affine(8, fill='x')", "random_affine", ["fill='x'"]),
    ("vgg_value_range(std=(1, 0, 1))", "vgg_value_range", ["std=(1, 0, 1)"]),
    ("vgg_value_range(mean='a')", "vgg_value_range", ["mean='a'"]),
    ("onehot(0)", "onehot", ["depth=0"]),
    ("onehot(10, on='x')", "onehot", ["on='x'"]),
    ("keep('image', 3)", "keep", ["keys[1]=3", "str"]),
    ("copy('a', None)", "copy", ["outkey=None"]),
    ("rename(a=1)", "rename", ["a=1"]),
    ("cast('floot')", "cast", ["dtype='floot'", "dtype name"]),
]


@pytest.mark.parametrize("pp,op,words", BAD)
def test_bad_arguments_fail_when_built(pp, op, words):
  with pytest.raises(ValueError, match=re.escape(f"pp op {op!r}: ")) as e:
    builder.get_preprocess_fn(pp)
  message = str(e.value)
  for word in words:
    assert word in message
  assert repr(pp) in message


def test_resize_given_two_sizes_says_which_argument():
  with pytest.raises(ValueError) as e:
    builder.get_preprocess_fn("decode|resize(16, 16)|value_range(-1, 1)")
  assert str(e.value).startswith(
      "pp op 'resize': method=16 is not one of 'area', 'bicubic', ")
  assert "the argument after the size is `method`" in str(e.value)


def test_factories_called_directly_name_op_and_argument():
  with pytest.raises(utils.ArgumentError, match=r"^resize: size=0 "):
    ops_image.get_resize(0)
  with pytest.raises(ValueError, match=r"^value_range: vmin='a' "):
    ops_image.get_value_range("a", "b")
  with pytest.raises(ValueError, match=r"^onehot: depth=-1 "):
    ops_general.get_onehot(-1)


@pytest.mark.parametrize("pp", [
    "decode(1)|resize((16, 12), 'nearest', True, rounding=True)",
    "resize_small(8, 'bicubic')|central_crop|central_crop((2, 3))",
    "resize_long(8, antialias=False)|random_crop((4, 2))",
    "value_range(0.5, -0.5, 0, 1.0, True)",
    "inception_crop(None, 10, 10, 'area', True, 0.5, 2)",
    "decode_jpeg_and_inception_crop((3, 4), area_max=100)",
    "random_affine((7, 9), 10, 0.5, 0.25, -1.5)",
    "vgg_value_range((1, 2, 3), 2)|cast('uint8')",
    "onehot(3, key='y', key_result=None, on=0.9, off=0)|keep('y')|drop()",
    "rename('a', 'b', c='d')|copy('b', 'e')",
])
def test_good_arguments_build(pp):
  builder.get_preprocess_fn(pp)
