"""experiments/cpu_speed/own_processes.py: what a revision row's process gets."""

import importlib.util
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = os.path.join(HERE, "..", "..", "experiments", "cpu_speed",
                   "own_processes.py")


@pytest.fixture(scope="module")
def own_processes():
  spec = importlib.util.spec_from_file_location("own_processes", RUN)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("caller_flags, want", [
    (None, "--xla_force_host_platform_device_count=2"),
    ("--xla_cpu_enable_fast_math=false "
     "--xla_force_host_platform_device_count=8",
     "--xla_cpu_enable_fast_math=false "
     "--xla_force_host_platform_device_count=2"),
])
def test_revision_row_keeps_the_callers_other_xla_flags(
    own_processes, monkeypatch, tmp_path, caller_flags, want):
  if caller_flags is None:
    monkeypatch.delenv("XLA_FLAGS", raising=False)
  else:
    monkeypatch.setenv("XLA_FLAGS", caller_flags)
  seen = {}

  class Server:
    def __init__(self, argv, name, env):
      seen.update(argv=argv, name=name, env=env)

  monkeypatch.setattr(own_processes, "export_revision",
                      lambda rev, into: into)
  monkeypatch.setattr(own_processes.benchmark, "StepServer", Server)
  own_processes.revision_step("abc123", "S/16", 16, "float32", "keep", 2,
                              str(tmp_path))
  assert seen["env"]["XLA_FLAGS"] == want
  assert seen["env"]["BIG_VISION_LIKE_HOST_MEMORY"] == "keep"
  assert seen["name"] == "ours@abc123"


def test_rows_parse_and_a_timm_row_runs_on_all_threads(own_processes):
  assert own_processes.parse_rows(
      "ours@65e8951:default:1,ours:keep:auto,timm:default:auto") == [
          ("ours@65e8951", "default", "1"), ("ours", "keep", "auto"),
          ("timm", "default", "auto")]
  for bad in ("timm:default:2", "ours@abc:keep:auto", "torch:keep:1",
              "ours:fast:1", "ours:keep"):
    with pytest.raises(ValueError, match="MODEL:HOST_MEMORY:DEVICES"):
      own_processes.parse_rows(bad)


@pytest.mark.parametrize("mode", ["default", "keep"])
def test_timm_server_gets_the_rows_host_memory(own_processes, monkeypatch,
                                               mode):
  seen = {}

  class Server:
    def __init__(self, argv, name, env):
      seen.update(argv=argv, name=name, env=env)

  monkeypatch.setattr(own_processes.benchmark, "StepServer", Server)
  own_processes.benchmark.timm_step("vit:S/16", 16, 224, "float32",
                                    host_memory_mode=mode)
  assert seen["env"]["BIG_VISION_LIKE_HOST_MEMORY"] == mode
  assert seen["argv"][seen["argv"].index("--model") + 1] == (
      "vit_small_patch16_224")
