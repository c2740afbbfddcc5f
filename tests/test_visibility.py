"""Parameter table, memory metrics, FLOPs / MFU and the profiler window."""

import glob
import gzip
import json
import os

import jax
import jax.numpy as jnp
import pytest

from big_vision_like import sharding
from big_vision_like import visibility


def _params():
  """A hand-counted tree: 16*32 + 32 + 32*10 = 864 parameters."""
  return {"enc": {"kernel": jax.ShapeDtypeStruct((16, 32), jnp.float32),
                  "bias": jax.ShapeDtypeStruct((32,), jnp.float32)},
          "head": {"kernel": jax.ShapeDtypeStruct((32, 10), jnp.bfloat16)}}


def test_param_count_and_table_with_shardings():
  params = _params()
  assert visibility.param_count(params) == 864
  mesh = sharding.make_mesh()  # 8 devices on `data`.
  shardings = sharding.infer_shardings(
      params, [("enc/kernel", "fsdp"), (".*", "replicate")], mesh)
  table = visibility.param_table(params, shardings)
  rows = {line.split()[0]: line for line in table.splitlines()[2:5]}
  assert rows["enc/kernel"].split()[1:] == [
      "[16,", "32]", "float32", "512", "(None,", "data)", "shard", "[16,",
      "4]"]
  assert rows["enc/bias"].split()[-2:] == ["32", "replicated"]
  assert "bfloat16" in rows["head/kernel"]
  assert "enc: 544 (63.0%)" in table and "head: 320 (37.0%)" in table
  # 544 float32 + 320 bfloat16 = 2,816 bytes.
  assert "Total: 864 parameters (2.8 KiB) in 3 arrays." in table


def test_param_table_reads_array_shardings_and_is_written(tmp_path):
  mesh = sharding.make_mesh()
  params = {"w": jax.device_put(jnp.ones((8, 3)),
                                sharding.batch_sharding(mesh))}
  table = visibility.write_param_table(str(tmp_path), params)
  assert "(data, None) shard [1, 3]" in table
  assert (tmp_path / "params.txt").read_text() == table + "\n"


class _FakeDevice:

  def __init__(self, stats):
    self._stats = stats

  def memory_stats(self):
    if isinstance(self._stats, Exception):
      raise self._stats
    return self._stats


def test_memory_stats():
  gib = 2**30
  devices = [_FakeDevice({"bytes_in_use": 1 * gib, "peak_bytes_in_use": 3 * gib,
                          "bytes_limit": 80 * gib}),
             _FakeDevice({"bytes_in_use": 2 * gib, "peak_bytes_in_use": 2 * gib,
                          "bytes_limit": 79 * gib}),
             _FakeDevice(None), _FakeDevice(NotImplementedError())]
  assert visibility.memory_stats(devices) == {
      "memory/bytes_in_use_max": 2.0 * gib,
      "memory/peak_bytes_in_use_max": 3.0 * gib,
      "memory/bytes_limit_min": 79.0 * gib}
  # The CPU backend reports nothing.
  assert visibility.memory_stats(jax.devices()[:2]) == {}
  assert visibility.memory_limit() is None
  assert visibility.memory_limit(1.5) == 1.5 * gib


@pytest.mark.parametrize("budget", [999, 1000, 1001, 1234, 5000, 77_777])
def test_fit_batch_finds_the_largest_multiple_that_fits(budget):
  # Memory affine in the batch with steps (a new buffer size every 64
  # examples): the search must land on what a scan of every multiple finds.
  need = lambda b: 100 + 9 * b + 40 * (b // 64) + (b * b) // 4096
  calls = []
  batch, used = visibility.fit_batch(lambda b: calls.append(b) or need(b),
                                     unit=8, budget=budget)
  expected = max(b for b in range(8, 100_000, 8) if need(b) <= budget)
  assert (batch, used) == (expected, need(expected))
  assert len(calls) <= 8
  with pytest.raises(ValueError, match=r"the step at batch 8 \(4 per "
                     r"device\) needs .* over the"):
    visibility.fit_batch(need, unit=8, budget=need(8) - 1, devices=2)
  with pytest.raises(ValueError, match="does not grow with the batch"):
    visibility.fit_batch(lambda b: 100, unit=8, budget=1000)


@pytest.mark.parametrize("backend, options", [
    ("gpu", {"xla_gpu_autotune_level": 0}), ("cpu", None), ("tpu", None)])
def test_compile_for_memory_skips_autotuning_on_gpus(backend, options,
                                                    monkeypatch):
  class Lowered:
    def compile(self, compiler_options=None):
      return compiler_options
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  assert visibility.compile_for_memory(Lowered()) == options


def test_step_flops_of_a_sharded_matmul():
  m, n, k = 64, 32, 16
  mesh = sharding.make_mesh()
  a = jax.device_put(jnp.ones((m, k)), sharding.batch_sharding(mesh))
  lowered = jax.jit(lambda a, b: a @ b).lower(a, jnp.ones((k, n)))
  compiled = lowered.compile()
  # 8 devices run an (m/8, k) x (k, n) matmul each.
  assert visibility.step_flops(compiled) == 2 * m * n * k
  assert visibility.step_flops(lowered) == pytest.approx(2 * m * n * k,
                                                         rel=1e-3)
  memory = visibility.step_memory(compiled)
  assert memory["memory/step_output_bytes"] == m // 8 * n * 4


def test_step_flops_of_a_lowering_without_cost_analysis(monkeypatch):
  # jax's CUDA plugin (PJRT C API) has no Lowered.cost_analysis: the count
  # comes from XLA's cost analysis of the same HLO on the CPU client.
  m, n, k = 64, 32, 16
  a = jax.device_put(jnp.ones((m, k)),
                     sharding.batch_sharding(sharding.make_mesh()))
  lowered = jax.jit(lambda a, b: jnp.tanh(a @ b)).lower(a, jnp.ones((k, n)))
  expected = visibility.step_flops(lowered)
  assert expected >= 2 * m * n * k

  def refuse(self):
    raise NotImplementedError("Lowered.cost_analysis not implemented")
  monkeypatch.setattr(jax.stages.Lowered, "cost_analysis", refuse)
  assert visibility.step_flops(lowered) == expected
  # The public method turns that refusal into None (jax 0.10, 0.11).
  monkeypatch.setattr(jax.stages.Lowered, "cost_analysis", lambda self: None)
  assert visibility.step_flops(lowered) == expected
  # A Compiled's own count is untouched.
  assert visibility.step_flops(lowered.compile()) >= 2 * m * n * k

  # With JAX_PLATFORMS naming only the accelerator jax has no CPU backend:
  # the count comes from a CPU client made for it.
  real_devices = jax.devices

  def no_cpu(backend=None):
    if backend == "cpu":
      raise RuntimeError("Unknown backend cpu")
    return real_devices(backend)
  monkeypatch.setattr(jax, "devices", no_cpu)
  assert visibility.step_flops(lowered) == expected
  assert visibility._CPU_CLIENT


def test_peak_flops_table_and_override():
  class Dev:
    device_kind, platform = "TPU v5 lite", "tpu"
  assert visibility.peak_flops_per_device(Dev(), "bfloat16") == 197e12
  for kind, dtype, peak in (("TPU v5", "bfloat16", 459e12),
                            ("TPU v6 lite", "float32", 918e12),
                            ("NVIDIA H100 80GB HBM3", "bfloat16", 989e12),
                            ("NVIDIA H100 PCIe", "float32", 378e12),
                            ("NVIDIA H200", jnp.bfloat16, 989e12),
                            ("NVIDIA A100-SXM4-40GB", "float32", 156e12),
                            ("cpu", "float32", None)):
    assert visibility.table_peak_flops(kind, dtype) == peak, kind
  cpu = jax.devices()[0]
  assert visibility.peak_flops_per_device(cpu, "float32") is None
  assert visibility.peak_flops_per_device(cpu, "float32", 2e9) == 2e9
  for bad in (0, -1.0, "fast", float("nan"), True):
    with pytest.raises(ValueError, match="config.peak_flops"):
      visibility.peak_flops_per_device(cpu, "float32", bad)


def test_mfu_and_utilisation():
  # 8 devices at 1e12 FLOP/s peak; 4e12 FLOPs per 2 s step: 25%.
  assert visibility.mfu(4e12, 2.0, 8, 1e12) == pytest.approx(0.25)
  assert visibility.utilisation(4e12, 0.5, 8, 1e12) == pytest.approx(
      {"flops_per_sec_per_device": 2.5e11, "mfu": 0.25})
  assert visibility.utilisation(4e12, 0.5, 8) == pytest.approx(
      {"flops_per_sec_per_device": 2.5e11})
  assert visibility.utilisation(None, 0.5, 8, 1e12) == {}
  assert visibility.utilisation(4e12, None, 8, 1e12) == {}


def _run_steps(profiler, steps):
  """Runs a tiny jitted step; returns the steps the trace was on for."""
  f = jax.jit(lambda x: x @ x)
  x, traced = jnp.ones((8, 8)), []
  for step in steps:
    with profiler.step(step):
      x = f(x)
      if profiler.active:
        traced.append(step)
    profiler.after(step, wait_for=x)
  profiler.close()
  return traced


def _trace_files(logdir):
  runs = glob.glob(os.path.join(logdir, "profile/plugins/profile/*"))
  assert len(runs) == 1, runs
  return sorted(glob.glob(f"{runs[0]}/*"))


def test_profiler_traces_only_its_window(tmp_path):
  prof = visibility.Profiler.from_config(str(tmp_path),
                                         {"first_step": 3, "num_steps": 2})
  assert _run_steps(prof, range(1, 7)) == [3, 4]
  files = _trace_files(str(tmp_path))
  # TensorBoard's profile plugin reads the .xplane.pb; Perfetto the json.
  assert [f for f in files if f.endswith(".xplane.pb")], files
  trace, = [f for f in files if f.endswith(".trace.json.gz")]
  with gzip.open(trace) as f:
    events = json.load(f)["traceEvents"]
  assert [e["args"]["step_num"] for e in events
          if e.get("name") == "train"] == ["3", "4"]


def test_profiler_resumed_or_disabled_or_ended_early(tmp_path):
  past = visibility.Profiler(str(tmp_path / "past"), first_step=2, num_steps=2)
  assert _run_steps(past, range(5, 7)) == []  # Resumed after the window.
  off = visibility.Profiler.from_config(str(tmp_path / "off"), None)
  assert _run_steps(off, range(1, 4)) == []
  compiled = jax.jit(lambda x: x + 1).lower(1.0).compile()
  assert past.save_hlo(compiled, step=5) is None  # No trace to go with it.
  assert off.save_hlo(compiled, step=1) is None
  assert not os.listdir(tmp_path)
  inside = visibility.Profiler(str(tmp_path), first_step=2, num_steps=10)
  assert _run_steps(inside, range(3, 5)) == [3, 4]  # Resumed; run ends.
  assert not inside.active
  assert _trace_files(str(tmp_path))
  hlo = inside.save_hlo(compiled, step=3)
  assert hlo == str(tmp_path / "profile" / "train_step.hlo.txt")
  with open(hlo) as f:
    assert "ENTRY" in f.read()


def test_profiler_of_one_process_of_several(tmp_path, monkeypatch):
  # Processes sharing a host would write the same `<host>.*` files: each
  # traces into its own folder; the HLO is process 0's alone.
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  prof = visibility.Profiler(str(tmp_path), first_step=1, num_steps=1)
  assert _run_steps(prof, range(1, 3)) == [1]
  assert os.listdir(tmp_path / "profile") == ["process_1"]
  runs = glob.glob(str(tmp_path / "profile/process_1/plugins/profile/*/*"))
  assert [f for f in runs if f.endswith(".trace.json.gz")], runs
  compiled = jax.jit(lambda x: x + 1).lower(1.0).compile()
  assert prof.save_hlo(compiled, step=1) is None


def test_profiler_config_errors(tmp_path):
  with pytest.raises(KeyError, match="first_stpe"):
    visibility.Profiler.from_config(str(tmp_path), {"first_stpe": 1})
  with pytest.raises(ValueError, match="config.profile.num_steps=0"):
    visibility.Profiler.from_config(str(tmp_path), {"num_steps": 0})
