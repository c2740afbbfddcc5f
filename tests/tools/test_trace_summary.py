"""trace_summary: kinds and FLOPs of a traced step's ops."""

import gzip
import json
import pathlib

import jax
import pytest

from big_vision_like import sharding
from big_vision_like.tools import benchmark
from big_vision_like.tools import trace_summary

# A hand-written module in the shapes of the ops XLA:CPU and XLA:GPU emit.
HLO = """HloModule jit_train_step, entry_computation_layout={(f32[8,64]{1,0})->f32[]}

%fused_dot (param_0.1: f32[8,64], param_1.1: f32[64,32]) -> f32[8,32] {
  %param_0.1 = f32[8,64]{1,0} parameter(0)
  %param_1.1 = f32[64,32]{1,0} parameter(1)
  ROOT %dot.3 = f32[8,32]{1,0} dot(%param_0.1, %param_1.1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_conv (param_0.2: f32[8,32,32,3], param_1.2: f32[16,16,3,32]) -> f32[8,2,2,32] {
  %param_0.2 = f32[8,32,32,3]{3,2,1,0} parameter(0)
  %param_1.2 = f32[16,16,3,32]{3,2,1,0} parameter(1)
  ROOT %conv.1 = f32[8,2,2,32]{3,2,1,0} convolution(%param_0.2, %param_1.2), window={size=16x16 stride=16x16}, dim_labels=b01f_01io->b01f
}

%region_add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %add.9 = f32[] add(%a, %b)
}

%fused_softmax (param_0.3: f32[8,32]) -> f32[8] {
  %param_0.3 = f32[8,32]{1,0} parameter(0)
  %exponential.1 = f32[8,32]{1,0} exponential(%param_0.3)
  %constant.1 = f32[] constant(0)
  ROOT %reduce.1 = f32[8]{0} reduce(%exponential.1, %constant.1), dimensions={1}, to_apply=%region_add
}

%fused_gelu (param_0.4: f32[8,32]) -> f32[8,32] {
  %param_0.4 = f32[8,32]{1,0} parameter(0)
  %tanh.1 = f32[8,32]{1,0} tanh(%param_0.4)
  ROOT %multiply.1 = f32[8,32]{1,0} multiply(%param_0.4, %tanh.1)
}

%fused_copy (param_0.5: f32[8,32]) -> f32[32,8] {
  %param_0.5 = f32[8,32]{1,0} parameter(0)
  ROOT %transpose.1 = f32[32,8]{1,0} transpose(%param_0.5), dimensions={1,0}
}

ENTRY %main.1 (Arg_0.1: f32[8,64], Arg_1.1: f32[64,32], Arg_2.1: f32[8,32,32,3], Arg_3.1: f32[16,16,3,32], Arg_4.1: bf16[256,768], Arg_5.1: bf16[768,2304]) -> f32[] {
  %Arg_0.1 = f32[8,64]{1,0} parameter(0)
  %Arg_1.1 = f32[64,32]{1,0} parameter(1)
  %Arg_2.1 = f32[8,32,32,3]{3,2,1,0} parameter(2)
  %Arg_3.1 = f32[16,16,3,32]{3,2,1,0} parameter(3)
  %Arg_4.1 = bf16[256,768]{1,0} parameter(4)
  %Arg_5.1 = bf16[768,2304]{1,0} parameter(5)
  %ynn_fusion.1 = f32[8,32]{1,0} fusion(%Arg_0.1, %Arg_1.1), kind=kCustom, calls=%fused_dot, backend_config={"fusion_config":{"kind":"__ynn_fusion"}}
  %conv_fusion = f32[8,2,2,32]{3,2,1,0} fusion(%Arg_2.1, %Arg_3.1), kind=kCustom, calls=%fused_conv
  %custom-call.7 = (bf16[256,2304]{1,0}, s8[4194304]{0}) custom-call(%Arg_4.1, %Arg_5.1), custom_call_target="__cublas$gemm", metadata={op_name="jit(train_step)/transpose(jvp(_Model))/Dense_0/dot_general" stack_frame_id=3}, backend_config={"gemm_backend_config":{"alpha_real":1,"dot_dimension_numbers":{"lhs_contracting_dimensions":["1"],"rhs_contracting_dimensions":["0"],"lhs_batch_dimensions":[],"rhs_batch_dimensions":[]}}}
  %custom-call.9 = (f32[8,2,2,32]{3,2,1,0}, u8[0]{0}) custom-call(%Arg_2.1, %Arg_3.1), window={size=16x16 stride=16x16}, dim_labels=b01f_01io->b01f, custom_call_target="__cudnn$convForward"
  %custom-call.8 = (bf16[2,197,12,64]{3,2,1,0}, f32[2,12,197]{2,1,0}, u8[0]{0}) custom-call(%Arg_4.1, %Arg_4.1, %Arg_4.1), custom_call_target="__cudnn$fmhaSoftmax", metadata={op_name="jit(train_step)/jvp(_Model)/Attention/dot_product_attention"}
  %all-reduce.1 = f32[8,32]{1,0} all-reduce(%ynn_fusion.1), replica_groups={{0,1}}, to_apply=%region_add
  %loop_reduce_fusion = f32[8]{0} fusion(%all-reduce.1), kind=kLoop, calls=%fused_softmax
  %gelu_fusion = f32[8,32]{1,0} fusion(%all-reduce.1), kind=kLoop, calls=%fused_gelu, metadata={op_name="jit(train_step)/mul"}
  %transpose_copy_fusion = f32[32,8]{1,0} fusion(%gelu_fusion), kind=kLoop, calls=%fused_copy
  %sort.1 = f32[8]{0} sort(%loop_reduce_fusion), dimensions={0}, to_apply=%region_add
  ROOT %reduce.2 = f32[] reduce(%sort.1, %constant.1), dimensions={0}, to_apply=%region_add
}
"""


def test_kinds_and_flops_of_a_hand_written_module():
  got = trace_summary.classify(*trace_summary.parse_hlo(HLO))
  assert got["ynn_fusion.1"] == ("matmul", 2 * 8 * 32 * 64)
  # Patch embedding: 8 images x 4 patches x 32 features, each 16*16*3 MACs.
  assert got["conv_fusion"] == ("matmul", 2 * 8 * 4 * 32 * (16 * 16 * 3))
  assert got["custom-call.9"] == got["conv_fusion"]  # cuDNN's.
  assert got["custom-call.7"] == ("matmul", 2 * 256 * 2304 * 768)
  assert got["custom-call.8"] == ("attention", 0.0)
  assert got["all-reduce.1"][0] == "collective"
  assert got["loop_reduce_fusion"][0] == "reduction"
  assert got["gelu_fusion"][0] == "elementwise"
  assert got["transpose_copy_fusion"][0] == "data movement"
  assert got["sort.1"][0] == "other"


@pytest.mark.parametrize("name, kind", [
    ("nvjet_hsh_128x256_64x4_1x2_h_bz_coopA_NNT", "matmul"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32", "matmul"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop", "attention"),
    ("loop_add_fusion.12", "elementwise"),
    ("input_reduce_fusion.3", "reduction"),
    ("transpose_copy_fusion.4", "data movement"),
    ("ncclDevKernel_AllReduce_Sum_f32_RING_LL", "collective"),
])
def test_kinds_from_names_alone(name, kind):
  assert trace_summary.kind_from_name(name) == kind


@pytest.mark.parametrize("op_name, want", [
    ("jit(train_step)/jvp(_Model)/Transformer/encoderblock_0/dot_general",
     "forward"),
    ("jit(train_step)/jvp()/reduce_sum", "forward"),  # The loss.
    ("jit(train_step)/transpose(jvp(_Model))/Transformer/MlpBlock_0/mul",
     "backward"),
    ("jit(train_step)/mul", "update and rest"),  # optax's update.
    ("jit(train_step)/jit(clip)/min", "update and rest"),
    ("", "unattributed"),
])
def test_phase_from_the_name_stack(op_name, want):
  assert trace_summary.phase(op_name) == want


@pytest.mark.parametrize("op_name, want", [
    ("jit(train_step)/transpose(jvp(_Model))/Transformer/encoderblock_3/"
     "encoderblock_3._mlp/MlpBlock_0/Dense_1/dot_general",
     "Transformer/encoderblock_3/encoderblock_3._mlp/MlpBlock_0/Dense_1"),
    ("jit(train_step)/jvp(_Model)/embedding/conv_general_dilated",
     "embedding"),
    ("jit(train_step)/add", "(outside modules)"),
    ("", "(unnamed)"),
])
def test_module_path_drops_wrappers_and_the_primitive(op_name, want):
  assert trace_summary.module_path(op_name) == want


def test_indices_that_run_over_three_values_merge():
  paths = [f"T/block_{i}/block_{i}._mlp/Dense_{j}" for i in range(3)
           for j in range(2)] + ["T/block_0/LayerNorm_0", "stem_1"]
  got = trace_summary.merge_indices(paths)
  assert (got["T/block_2/block_2._mlp/Dense_1"]
          == "T/block_*/block_*._mlp/Dense_1")
  assert got["T/block_0/LayerNorm_0"] == "T/block_*/LayerNorm_0"
  assert got["stem_1"] == "stem_1"  # One index: kept.
  assert len(set(got.values())) == 2 + 1 + 1
  two = trace_summary.merge_indices(["a_0/x", "a_1/x"])
  assert two == {"a_0/x": "a_0/x", "a_1/x": "a_1/x"}


def test_by_module_sums_ops_of_merged_layers():
  names = {f"dot.{i}": f"jit(s)/{ph}/T/block_{i % 3}/Dense_0/dot_general"
           for i, ph in enumerate(["jvp(M)"] * 3 + ["transpose(jvp(M))"] * 3)}
  names.update({"add.1": "jit(s)/add", "all-reduce.1": "jit(s)/T/a/T/b"})
  instrs = {op: {"op_name": n} for op, n in names.items()}
  # (ms per step, runs per step, kind, op, GFLOP per run), as `summarize`.
  top = [(2.0, 1, "matmul", f"dot.{i}", 0.5) for i in range(6)]
  top += [(1.0, 1, "elementwise", "add.1", 0.0),
          (3.0, 1, "collective", "all-reduce.1", 0.0)]
  got = trace_summary.by_module(top, instrs)
  assert list(got) == ["T/block_*/Dense_0", "(collectives)",
                       "(outside modules)"]
  dense = got["T/block_*/Dense_0"]
  assert dense == dict(ms=12.0, forward=6.0, backward=6.0, matmul_ms=12.0,
                       flops=3e9)
  assert got["(outside modules)"]["ms"] == 1.0


@pytest.fixture(scope="module")
def traced_step(tmp_path_factory):
  """A tiny ViT's train step traced by `benchmark` (one device)."""
  path = str(tmp_path_factory.mktemp("profile"))
  one_device = sharding.make_mesh(devices=jax.devices()[:1])
  benchmark.step_benchmark("vit", "mu/16", 32, 8, 1, "float32", one_device,
                           profile_dir=path)
  return path


def test_matmul_flops_of_a_traced_step_equal_a_hand_count(traced_step):
  path = traced_step
  with open(f"{path}/step.hlo.txt") as f:
    text = f.read()
  kinds, top, busy, phases = trace_summary.summarize(
      trace_summary.newest(path, "*.trace.json.gz"), text,
      benchmark.PROFILE_STEPS)
  # Per image, forward (as in test_benchmark): stem 4x768x32, q/k/v/out
  # 4 x 4x32x32, attention 2 x 2 heads x 4x4x16, MLP 2 x 4x32x128, head
  # 32x1000, in MACs. The backward doubles all but the stem (no image
  # gradient), so a step is 2 stem + 3 rest.
  stem = 4 * 768 * 32 * 2
  rest = (4 * 4 * 32 * 32 + 2 * 2 * 4 * 4 * 16 + 2 * 4 * 32 * 128
          + 32 * 1000) * 2
  assert kinds["matmul"]["flops"] == pytest.approx(8 * (2 * stem + 3 * rest))
  assert kinds["matmul"]["count"] > 0 and kinds["elementwise"]["count"] > 0
  total = sum(k["ms"] for k in kinds.values())
  assert total == pytest.approx(sum(t[0] for t in top))
  assert 0 < busy <= 1
  # Every op falls in one phase; the matmuls run forward and backward, the
  # AdamW update has none.
  assert sum(p["ms"] for p in phases.values()) == pytest.approx(total)
  assert phases["forward"]["matmul_ms"] > 0
  assert phases["backward"]["matmul_ms"] > 0
  assert phases["update and rest"]["ms"] > 0
  assert phases["update and rest"]["matmul_ms"] == 0
  # By module: every op in one row; the first MLP layer's matmuls (forward,
  # and the two of the backward) are the hand count's 4x32x128, 3 times.
  modules = trace_summary.by_module(top, trace_summary.parse_hlo(text)[0])
  assert sum(m["ms"] for m in modules.values()) == pytest.approx(total)
  (dense_0,) = [m for name, m in modules.items()
                if name.endswith("MlpBlock_0/Dense_0")]
  assert dense_0["flops"] == pytest.approx(8 * 3 * 2 * (4 * 32 * 128))
  assert dense_0["forward"] > 0 and dense_0["backward"] > 0


def test_command_line_prints_the_table(traced_step, capsys):
  trace_summary.main([traced_step, "--steps", "3", "--top", "4"])
  out = capsys.readouterr().out
  assert "HLO: " + traced_step in out and "| matmul | " in out
  assert "| phase (JAX name stack) |" in out and "| backward | " in out
  assert "| module (name stack; repeated layers merged) |" in out
  assert "more modules) | " in out  # --top 4 of the tiny ViT's ~15.
  assert out.count("\n| ") >= 4 + 4
  with pytest.raises(SystemExit):
    trace_summary.main([traced_step + "/plugins/nothing"])


def _gpu_trace(path, gpus):
  """Writes a GPU-shaped trace of 2 steps on `gpus` (see below) to `path`."""
  meta = [{"ph": "M", "name": "process_name", "pid": g + 1,
           "args": {"name": f"/device:GPU:{g}"}} for g in gpus]
  meta.append({"ph": "M", "name": "process_name", "pid": 99,
               "args": {"name": "/host:CPU"}})
  # The host's launch of an op names it too: not device time.
  launch = {"ph": "X", "pid": 99, "tid": 1, "ts": 0.0, "dur": 5.0,
            "name": "custom-call.7",
            "args": {"hlo_op": "custom-call.7", "device_ordinal": "0"}}
  kernels = [("custom-call.7", "nvjet_hsh_256x128_splitK", 300.0),
             ("custom-call.7", "cublasLt::splitKreduce_kernel", 20.0),
             ("custom-call.8", "cudnn_sdpa_flash_fprop", 100.0),
             ("gelu_fusion", "loop_multiply_fusion", 30.0)]
  events, ts = [], 0.0
  for g in gpus:
    for _ in range(2):  # Steps.
      for op, name, dur in kernels:
        events.append({"ph": "X", "pid": g + 1, "tid": 7, "ts": ts,
                       "dur": dur, "name": name,
                       "args": {"hlo_op": op, "hlo_module": "jit_step"}})
        ts += dur + 10.0  # 10 us idle between kernels.
  path.parent.mkdir(parents=True, exist_ok=True)
  with gzip.open(path, "wt") as f:
    json.dump({"traceEvents": meta + events + [launch]}, f)


def test_a_gpu_like_trace_with_two_kernels_per_gemm(tmp_path):
  """Events as a GPU trace has them (a process per device, kernels named
  by CUDA, `hlo_op` in their args): a cuBLAS GEMM that launches two
  kernels counts one run, and its FLOPs once."""
  path = tmp_path / "gpu.trace.json.gz"
  _gpu_trace(path, gpus=(0, 1))
  kinds, top, busy, phases = trace_summary.summarize(str(path), HLO, steps=2)
  # Phases from the ops' name stacks: the GEMM under transpose(jvp(...)),
  # the attention under jvp(...), the fusion named outside both.
  assert phases == {
      "forward": {"ms": pytest.approx(0.1), "matmul_ms": 0.0},
      "backward": {"ms": pytest.approx(0.32), "matmul_ms": pytest.approx(0.32)},
      "update and rest": {"ms": pytest.approx(0.03), "matmul_ms": 0.0},
      "unattributed": {"ms": 0.0, "matmul_ms": 0.0}}
  gemm = 2 * 256 * 2304 * 768
  assert kinds["matmul"] == {"count": 1, "ms": 0.32, "flops": gemm}
  assert kinds["attention"]["ms"] == pytest.approx(0.1)
  assert kinds["elementwise"]["count"] == 1
  assert top[0] == (0.32, 1, "matmul", "custom-call.7", gemm / 1e9)
  assert busy == pytest.approx(450 / 490, rel=0.02)
  # Without the HLO: kinds from the kernels' names, no FLOPs.
  kinds, _, _, phases = trace_summary.summarize(str(path), None, steps=2)
  assert phases is None
  assert kinds["matmul"]["count"] == 1 and kinds["matmul"]["flops"] == 0
  assert kinds["attention"]["count"] == 1


def test_a_multi_process_run_reads_every_process_trace(tmp_path, capsys):
  """The trainer's traces of a 2-process run (`process_<i>/`, each with one
  GPU named GPU:0 and the same host name) read as one 2-device trace."""
  one = tmp_path / "one" / "gpu.trace.json.gz"
  _gpu_trace(one, gpus=(0, 1))
  run = tmp_path / "run"
  for i in (0, 1):
    _gpu_trace(run / f"process_{i}/plugins/profile/2026_12_04_10_00_0{i}"
               / "host.trace.json.gz", gpus=(0,))
  (run / "train_step.hlo.txt").write_text(HLO)
  found = trace_summary.traces(str(run))
  assert [pathlib.Path(f).parts[-5] for f in found] == ["process_0",
                                                        "process_1"]
  assert (trace_summary.summarize(found, HLO, steps=2)
          == trace_summary.summarize(str(one), HLO, steps=2))
  trace_summary.main([str(run), "--steps", "2"])
  out = capsys.readouterr().out
  assert out.count("trace: ") == 2 and "2 processes" in out
  assert "HLO: " + str(run / "train_step.hlo.txt") in out


# A fusion whose root is named outside the model (an optimizer's add) and
# that reads a layer's gradient through a transpose named in the backward.
HLO_OPS = """HloModule jit_step

%region_add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %add.9 = f32[] add(%a, %b)
}

%fused_update (p0: f32[4,2], p1: f32[2,4]) -> f32[4,2] {
  %p1 = f32[2,4]{1,0} parameter(1)
  %transpose.5 = f32[4,2]{1,0} transpose(%p1), dimensions={1,0}, metadata={op_name="jit(step)/transpose(jvp(M))/Dense_1/transpose"}
  %p0 = f32[4,2]{1,0} parameter(0)
  ROOT %add.5 = f32[4,2]{1,0} add(%p0, %transpose.5), metadata={op_name="jit(step)/add"}
}

ENTRY %main (x: f32[2,4], w: f32[4,2]) -> f32[4,2] {
  %x = f32[2,4]{1,0} parameter(0)
  %w = f32[4,2]{1,0} parameter(1)
  %neg.1 = f32[2,4]{1,0} negate(%x), metadata={op_name="jit(step)/jvp(M)/Dense_1/neg"}
  %all-reduce.2 = f32[2,4]{1,0} all-reduce(%neg.1), replica_groups={{0,1}}, to_apply=%region_add, metadata={op_name="jit(step)/transpose(jvp(M))/Dense_1/dot_general/Dense_0/dot_general"}
  %update_fusion = f32[4,2]{1,0} fusion(%w, %all-reduce.2), kind=kLoop, calls=%fused_update, metadata={op_name="jit(step)/add"}
  ROOT %exp.1 = f32[4,2]{1,0} exponential(%update_fusion), metadata={op_name="jit(step)/jvp(M)/Dense_0/exp"}
}
"""


def _cpu_trace(path):
  """An XLA:CPU-shaped trace of 2 steps on 2 devices: device 0 runs
  neg.1, all-reduce.2, update_fusion, exp.1 (10, 5, 20, 3 us); device 1,
  listed after it, the same ops in another order."""
  meta = [{"ph": "M", "name": "process_name", "pid": 1,
           "args": {"name": "/host:CPU"}}]
  runs = {"0": [("neg.1", 10.0), ("all-reduce.2", 5.0),
                ("update_fusion", 20.0), ("exp.1", 3.0)]}
  runs["1"] = runs["0"][::-1]
  events, ts = [], 0.0
  for device, ops in runs.items():
    for _ in range(2):
      for op, dur in ops:
        events.append({"ph": "X", "pid": 1, "tid": int(device), "ts": ts,
                       "dur": dur, "name": op,
                       "args": {"hlo_op": op, "device_ordinal": device}})
        ts += dur
  with gzip.open(path, "wt") as f:
    json.dump({"traceEvents": meta + events}, f)


def test_ops_matching_lists_ops_in_run_order_by_fused_names(tmp_path):
  path = str(tmp_path / "cpu.trace.json.gz")
  _cpu_trace(path)
  rows = trace_summary.ops_matching(path, HLO_OPS, "Dense_1", steps=2)
  # The update fusion matches through the transpose fused into it; the
  # combined all-reduce, whose name joins every operand's, only by its own
  # name or phase. In device 0's order, per step.
  assert [r["op"] for r in rows] == ["neg.1", "update_fusion"]
  neg, update = rows
  assert neg == dict(op="neg.1", ms=pytest.approx(0.01), runs=1.0,
                     kind="elementwise", phase="forward",
                     shape="f32[2,4]{1,0}",
                     names=["jit(step)/jvp(M)/Dense_1/neg"])
  assert update["phase"] == "update and rest"
  assert update["ms"] == pytest.approx(0.02)
  assert update["names"] == ["jit(step)/add",
                             "jit(step)/transpose(jvp(M))/Dense_1/transpose"]
  by_phase = trace_summary.ops_matching(path, HLO_OPS, "update and rest", 2)
  assert [r["op"] for r in by_phase] == ["update_fusion"]
  (reduce,) = trace_summary.ops_matching(path, HLO_OPS, "^all-reduce", 2)
  assert reduce["kind"] == "collective" and reduce["names"] == []
  table = trace_summary.format_ops(rows, "Dense_1")
  assert "2, 0.03 ms / step" in table
  assert ("| update_fusion | elementwise | update and rest | f32[4,2]{1,0} | "
          "0.02 | add; Dense_1/transpose |") in table
  with pytest.raises(ValueError, match=r"--ops '\(': bad regex"):
    trace_summary.ops_matching(path, HLO_OPS, "(", 2)


def test_command_line_lists_one_modules_ops(traced_step, capsys):
  trace_summary.main([traced_step, "--steps", "3", "--ops", "Dense_0/"])
  out = capsys.readouterr().out
  listing = out[out.index("Ops matching 'Dense_0/'"):]
  rows = [line for line in listing.splitlines()
          if line.startswith("| ") and not line.startswith("| op |")]
  assert rows and all("Dense_0/" in row for row in rows)
  # Dense_0's forward matmul, then its two backward ones (one device).
  phases = [row.split(" | ")[2] for row in rows if " | matmul | " in row]
  assert phases == ["forward", "backward", "backward"]
  with pytest.raises(SystemExit):  # Before any trace is read.
    trace_summary.main([traced_step + "/nothing", "--ops", "("])
  assert "--ops '(': bad regex" in capsys.readouterr().err
