"""Tests for config parsing, durations and strict key checks."""

import ml_collections
import pytest

from big_vision_like import config as config_lib


def test_parse_arg_types_and_defaults():
  c = config_lib.parse_arg("res=224,loss=softmax,short,lr=0.5",
                           res=128, loss="sigmoid", short=False, lr=1.0)
  assert c.res == 224 and c.loss == "softmax" and c.short is True
  assert c.lr == 0.5
  assert config_lib.parse_arg("", res=128).res == 128
  assert config_lib.parse_arg(None, res=128).res == 128


def test_parse_arg_errors_name_the_key():
  with pytest.raises(ValueError, match="Unknown config argument 'rez'"):
    config_lib.parse_arg("rez=1", res=128)
  with pytest.raises(ValueError, match="res='big'"):
    config_lib.parse_arg("res=big", res=128)
  assert config_lib.parse_arg("x=1", lazy=True).x == "1"


@pytest.mark.parametrize("kw,expected", [
    ({"warmup_steps": 7}, 7),
    ({"warmup_epochs": 2}, 20),  # 2 * 1000 / 100
    ({"warmup_examples": 550}, 6),  # round(5.5) (banker's) -> 6
    ({"warmup_percent": 0.25}, 125),
    ({"warmup_steps": None, "warmup_percent": 0.1}, 50),
])
def test_to_steps_units(kw, expected):
  assert config_lib.to_steps(kw, "warmup", batch_size=100, data_size=1000,
                             total_steps=500) == expected


def test_to_steps_errors():
  with pytest.raises(ValueError, match="more than once: warmup_steps, warmup_epochs"):
    config_lib.to_steps({"warmup_steps": 1, "warmup_epochs": 1}, "warmup")
  with pytest.raises(ValueError, match="'total' is required"):
    config_lib.to_steps({}, "total")
  with pytest.raises(ValueError, match="needs the dataset size"):
    config_lib.to_steps({"total_epochs": 1}, "total", batch_size=2)
  with pytest.raises(ValueError, match="fraction"):
    config_lib.to_steps({"x_percent": 50}, "x", total_steps=10)
  assert config_lib.to_steps({}, "x", default=None) is None


DEFAULTS = {"lr": 0.1, "model": config_lib.OPEN,
            "input": {"batch_size": config_lib.REQUIRED, "pp": ""}}


def test_check_and_fill_fills_defaults():
  c = ml_collections.ConfigDict({"input": {"batch_size": 4},
                                 "model": {"anything": 1}})
  out = config_lib.check_and_fill(c, DEFAULTS)
  assert out.lr == 0.1 and out.input.pp == "" and out.input.batch_size == 4
  assert out.model.anything == 1


def test_check_and_fill_unknown_keys_are_named():
  with pytest.raises(KeyError, match=r"config\.lrr\. Did you mean config\.lr"):
    config_lib.check_and_fill({"lrr": 1, "input": {"batch_size": 1}}, DEFAULTS)
  with pytest.raises(KeyError, match=r"config\.input\.batchsize"):
    config_lib.check_and_fill({"input": {"batchsize": 1}}, DEFAULTS)
  with pytest.raises(KeyError, match=r"Missing required config key "
                     r"config\.input\.batch_size"):
    config_lib.check_and_fill({}, DEFAULTS)
  with pytest.raises(TypeError, match=r"config\.input must be a dict"):
    config_lib.check_and_fill({"input": 3}, DEFAULTS)


def test_load_a_repository_config_by_name_or_path(tmp_path):
  by_name = config_lib.load("vit_digits:tune")
  by_path = config_lib.load(
      f"{config_lib.CONFIGS_DIR}/vit_digits.py", arg="tune")
  assert by_name.to_dict() == by_path.to_dict()
  assert by_name.model_name == "vit"
  mine = tmp_path / "mine.py"
  mine.write_text("import ml_collections\n"
                  "def get_config(arg=None):\n"
                  "  return ml_collections.ConfigDict({'arg': arg})\n")
  assert config_lib.load(f"{mine}:x=1").arg == "x=1"
  assert config_lib.load(str(mine)).arg is None
  with pytest.raises(FileNotFoundError, match="vit_digitz.*vit_digits"):
    config_lib.load("vit_digitz")
  with pytest.raises(ValueError, match="once"):
    config_lib.load(f"{mine}:x=1", arg="x=2")
