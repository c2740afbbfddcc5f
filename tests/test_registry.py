"""Tests for the per-kind registries."""

import pytest

from big_vision_like import registry


def test_register_and_get():
  reg = registry.Registry("widget")
  reg.register("a", 1)

  @reg.register("b")
  def b():
    return 2

  assert reg.get("a") == 1 and reg.get("b") is b
  assert reg.names() == ["a", "b"] and "a" in reg


def test_unknown_name_lists_close_matches():
  reg = registry.Registry("widget")
  reg.register("softmax_xent", 1)
  with pytest.raises(KeyError, match="Unknown widget 'softmax_xnet'.*softmax_xent"):
    reg.get("softmax_xnet")


def test_duplicate_registration_is_an_error():
  reg = registry.Registry("widget")
  reg.register("a", 1)
  with pytest.raises(ValueError, match="already registered"):
    reg.register("a", 2)


def test_builtins_load_on_first_use():
  assert "softmax_xent" in registry.LOSSES.names()
  assert "vit" in registry.MODELS
  assert "classification" in registry.EVALUATORS


def test_module_prefix_imports_the_module(tmp_path, monkeypatch):
  (tmp_path / "my_losses.py").write_text(
      "from big_vision_like.registry import LOSSES\n"
      "LOSSES.register('my_loss', lambda outputs, batch: (0.0, {}))\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  assert callable(registry.LOSSES.get("my_losses:my_loss"))
