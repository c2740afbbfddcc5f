r"""Where a profiled step's device time goes, by kind of op.

  python -m big_vision_like.tools.trace_summary workdir/profile --steps 3
  # A benchmark row, traced with the step's HLO beside it:
  python -m big_vision_like.tools.benchmark --models vit:B/16 \
      --batch_size 256 --profile_dir /tmp/prof
  python -m big_vision_like.tools.trace_summary /tmp/prof/vit_B16_b256

Reads the newest `*.trace.json.gz` under the directory (what
`jax.profiler` writes: the trainer's `config.profile`, `benchmark
--profile_dir`; of a run of several processes, the newest of each
`process_<index>/` folder, all their devices together) and sums the time
of every op event that names an HLO op (`hlo_op`: XLA:CPU's thunks, the
GPU kernels XLA launches), per device, into kinds:

- `matmul`: dots and convolutions (cuBLAS and cuDNN calls, and fusions
  around a dot: YNNPACK's, Triton's GEMMs);
- `attention`: fused attention calls (cuDNN's flash attention);
- `collective`: all-reduce, all-gather, ... ;
- `data movement`: copies, transposes, slices, pads and fusions of
  nothing else (a dtype conversion is elementwise);
- `reduction`: fusions with a reduce (softmax, LayerNorm, losses);
- `elementwise`: other fusions and ops (GELU, the optimizer update);
- `other`.

With the compiled step's HLO text (`*.hlo.txt` in the directory, or
`--hlo`; `benchmark --profile_dir` writes it) ops are classified by what
they compute, and the matmul rows get their FLOPs (from the HLO's shapes)
and the rate they ran at; without it, by their names. The table also gives
each device's busy share of the traced window (the rest: waiting for the
host, launches, the input). On a CPU an op's time is its wall time on the
thread that ran it; YNNPACK's parallel matmuls count once. XLA:CPU's
generic dot (a `dot.N` op, not a `ynn_fusion`) is an exception: it hands
its work to Eigen's thread pool and its event ends before the work does,
so part of its time shows as idle, a gap after the event (measured on a
ViT-S/16 step: 3.5 ms of event and 2.8 ms of gap per such dot).

With the HLO, a second table splits the time by phase of the step, read
from each op's JAX name stack (its `op_name` metadata): `forward` (under
`jvp(...)`: the model and the loss), `backward` (under `transpose(...)`,
`remat`'s recomputed forward included), `update and rest` (named ops
outside both: the optimizer update, gradient clipping, the schedule,
metrics) and `unattributed` (ops without a name that XLA made: layout
copies, some collectives).

A third table splits it by module: the op's name stack without the
transformation wrappers (`jit(...)`, `jvp(...)`, `transpose(...)`) and
without its last entry (the primitive), e.g. `Transformer/encoderblock_*/
encoderblock_*._mlp/MlpBlock_0/Dense_1` for both matmuls of the backward
and the forward one of every block's second MLP layer; an index that runs
over `MERGE_INDICES` or more values in the step (`encoderblock_0` to
`encoderblock_11`) is merged into `*`, so a repeated layer is one row, while
a module's few named children (`Dense_0`, `Dense_1`) stay apart. Ops named
outside every module (optax's update, metrics) are `(outside modules)`,
those without a name `(unnamed)`, collectives (XLA combines the gradients'
all-reduces into one) `(collectives)`. Each row gives its forward and backward
time and the rate of its matmuls.

`--ops REGEX` then lists, in the order they ran (on the first traced
device), the ops whose name, phase or JAX name stacks match: those of the
op and of every instruction fused into it, so a fusion that reads one
layer's values from another module's (an optimizer update reading a
gradient left transposed by the backward, say) is listed under both.
E.g. `--ops encoderblock_5/` for one block's forward and backward, or
`--ops "update and rest"` for the optimizer update. Each row gives the
op's output shape and the name stacks fused into it.
"""

import argparse
import collections
import functools
import gzip
import json
import math
import re

from big_vision_like import fs

KINDS = ("matmul", "attention", "collective", "data movement", "reduction",
         "elementwise", "other")
PHASES = ("forward", "backward", "update and rest", "unattributed")
_COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter",
                "collective-permute", "all-to-all", "collective-broadcast")
_MOVES = {"parameter", "copy", "transpose", "bitcast", "reshape", "slice",
          "concatenate", "pad", "dynamic-slice", "dynamic-update-slice",
          "tuple", "get-tuple-element", "broadcast", "constant", "iota",
          "copy-start", "copy-done"}
# Ops that are neither elementwise nor any kind above.
_OTHER = {"sort", "while", "conditional", "call", "rng", "rng-bit-generator",
          "scatter", "gather", "infeed", "outfeed", "send", "recv",
          "custom-call", "after-all", "partition-id", "replica-id"}
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+) = (.*)$")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+) \(.*\{$")
_SHAPE = re.compile(r"^[a-z]\w*\[([\d,]*)\]")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_INDEXED = re.compile(r"^([A-Za-z]\w*?)_(\d+)(?=$|\.)")
MERGE_INDICES = 3


def _split_type(rest):
  """'f32[8,4]{1,0} dot(%a, %b), ...' -> ('f32[8,4]{1,0}', 'dot', args...)."""
  depth = 0
  for i, ch in enumerate(rest):
    depth += ch in "([{"
    depth -= ch in ")]}"
    if ch == " " and depth == 0:
      break
  else:
    return rest, "", ""
  shape, tail = rest[:i], rest[i + 1:]
  m = re.match(r"([a-z][\w\-]*)\((.*)$", tail)
  return (shape, m.group(1), m.group(2)) if m else (shape, "", tail)


def _dims(shape):
  """'f32[8,4]{1,0}' (or a tuple's first element) -> [8, 4]; None if none."""
  m = _SHAPE.match(shape.lstrip("("))
  if not m:
    return None
  return [int(d) for d in m.group(1).split(",") if d]


@functools.lru_cache(maxsize=1)
def parse_hlo(text):
  """Instructions of an HLO module's text: {name: dict(opcode, shape,
  operands, attrs, calls, op_name)} and {computation: [names]}. Cached for
  the last text (`summarize` and the module table read the same step's): the
  dicts are shared, read them only."""
  instrs, comps, comp = {}, collections.defaultdict(list), None
  for line in text.splitlines():
    c = _COMPUTATION.match(line)
    if c:
      comp = c.group(1)
      continue
    m = _INSTR.match(line)
    if not m or comp is None:
      continue
    name, rest = m.groups()
    shape, opcode, args = _split_type(rest)
    depth, end = 1, len(args)
    for i, ch in enumerate(args):
      depth += (ch == "(") - (ch == ")")
      if depth == 0:
        end = i
        break
    operands = re.findall(r"%?([\w.\-]+)(?:,|$)", args[:end].replace(" ", ""))
    attrs = args[end + 1:]
    calls = re.findall(r"(?:calls|to_apply)=%?([\w.\-]+)", attrs)
    op_name = _OP_NAME.search(attrs)
    instrs[name] = dict(opcode=opcode, shape=shape, operands=operands,
                        attrs=attrs, calls=calls,
                        op_name=op_name.group(1) if op_name else "")
    comps[comp].append(name)
  return instrs, dict(comps)


def _target(instr):
  m = re.search(r'custom_call_target="([^"]+)"', instr["attrs"])
  return m.group(1) if m else ""


def _flops(instr, instrs):
  """FLOPs of a dot, a convolution, a cuBLAS GEMM or a cuDNN convolution
  call (2 per MAC; a cuDNN call keeps the replaced convolution's labels)."""
  out = _dims(instr["shape"])
  if out is None:
    return 0.0
  operand = lambda i: (_dims(instrs[instr["operands"][i]]["shape"])
                       if len(instr["operands"]) > i
                       and instr["operands"][i] in instrs else None)
  op, attrs, target = instr["opcode"], instr["attrs"], _target(instr)
  if op == "dot" or (op == "custom-call" and ("gemm" in target
                                              or "matmul" in target)):
    lhs = operand(0)
    m = re.search(r"lhs_contracting_dim(?:s|ensions)[\"=:]*[\[{]([^\]}]*)",
                  attrs)
    if lhs is None or not m:
      return 0.0
    contract = [int(d.strip('" ')) for d in m.group(1).split(",") if d.strip()]
    return 2.0 * math.prod(out) * math.prod(lhs[d] for d in contract)
  if op == "convolution" or (op == "custom-call" and "conv" in target):
    rhs, m = operand(1), re.search(r"dim_labels=\w+_(\w+)->", attrs)
    if rhs is None or not m or "o" not in m.group(1):
      return 0.0
    return 2.0 * math.prod(out) * math.prod(rhs) / rhs[m.group(1).index("o")]
  return 0.0


def classify(instrs, comps):
  """{instruction name: (kind, FLOPs of one run)} from `parse_hlo`."""
  out = {}

  def fused(calls):  # Opcodes and FLOPs of fused computations, recursively.
    ops, flops = set(), 0.0
    for name in (n for comp in calls for n in comps.get(comp, ())):
      instr = instrs[name]
      ops.add(instr["opcode"])
      flops += _flops(instr, instrs)
      if instr["opcode"] == "fusion":
        o, f = fused(instr["calls"])
        ops |= o
        flops += f
    return ops, flops

  for name, instr in instrs.items():
    op, target = instr["opcode"], _target(instr).lower()
    # A fusion is what it fuses.
    ops, flops = (fused(instr["calls"]) if op == "fusion"
                  else ({op}, _flops(instr, instrs)))
    if any(k in target for k in ("fmha", "flash", "attention")):
      kind = "attention"
    elif ops & {"dot", "convolution"} or flops or "conv" in target:
      kind = "matmul"
    elif any(op.startswith(c) for c in _COLLECTIVES):
      kind = "collective"
    elif ops & {"reduce", "reduce-window"}:
      kind = "reduction"
    elif ops <= _MOVES:
      kind = "data movement"
    elif op == "fusion" or op not in _OTHER:
      kind = "elementwise"
    else:
      kind = "other"
    out[name] = (kind, flops)
  return out


def phase(op_name):
  """The step's phase of an op from its JAX name stack (see PHASES)."""
  if not op_name:
    return "unattributed"
  if "transpose(" in op_name:
    return "backward"
  if "jvp(" in op_name:
    return "forward"
  return "update and rest"


def module_path(op_name):
  """An op's module from its JAX name stack: wrappers and the primitive
  dropped (see the module doc), before indices are merged."""
  if not op_name:
    return "(unnamed)"
  parts = [c for c in op_name.split("/")[:-1] if "(" not in c]
  return "/".join(parts) or "(outside modules)"


def merge_indices(paths, at_least=MERGE_INDICES):
  """{path: path with `name_<i>` written `name_*` where `name` (at that
  depth) takes at least `at_least` indices among `paths`}."""
  seen = collections.defaultdict(set)
  for path in paths:
    for depth, part in enumerate(path.split("/")):
      m = _INDEXED.match(part)
      if m:
        seen[depth, m.group(1)].add(m.group(2))

  def merged(path):
    parts = path.split("/")
    for depth, part in enumerate(parts):
      m = _INDEXED.match(part)
      if m and len(seen[depth, m.group(1)]) >= at_least:
        parts[depth] = _INDEXED.sub(lambda m: m.group(1) + "_*", part)
    return "/".join(parts)
  return {path: merged(path) for path in paths}


def by_module(top, instrs):
  """{module: dict(ms, forward, backward, matmul_ms, flops)} per step from
  `summarize`'s top ops and the HLO's instructions (see the module doc),
  the largest first."""
  names = {op: instrs.get(op, {}).get("op_name", "") for _, _, _, op, _ in top}
  paths = merge_indices({module_path(n) for n in names.values()})
  rows = collections.defaultdict(
      lambda: dict(ms=0.0, forward=0.0, backward=0.0, matmul_ms=0.0,
                   flops=0.0))
  for ms, runs, kind, op, gflop in top:
    # A combined collective's name joins those of all its operands.
    row = rows["(collectives)" if kind == "collective"
               else paths[module_path(names[op])]]
    row["ms"] += ms
    p = phase(names[op])
    if p in ("forward", "backward"):
      row[p] += ms
    if kind == "matmul":
      row["matmul_ms"] += ms
      row["flops"] += gflop * 1e9 * runs
  return dict(sorted(rows.items(), key=lambda kv: -kv[1]["ms"]))


def kind_from_name(name):
  """A kind from an op's (or kernel's) name alone, where no HLO is given."""
  n = name.lower()
  if any(k in n for k in ("fmha", "flash", "attention")):
    return "attention"
  if any(k in n for k in ("dot", "gemm", "conv", "matmul", "cublas", "nvjet",
                          "xmma", "cutlass")):
    return "matmul"
  if any(c in n for c in _COLLECTIVES) or "nccl" in n:
    return "collective"
  if "reduce" in n:
    return "reduction"
  if any(k in n for k in ("copy", "transpose", "memcpy", "bitcast",
                          "concatenate", "slice")):
    return "data movement"
  if "fusion" in n:
    return "elementwise"
  return "other"


def newest(directory, pattern):
  """The last (by name: traces sit in `<time>` folders) file matching
  `pattern` in `directory`, a run of it (`<time>/`) or its profile's runs
  (`plugins/profile/<time>/`), local or remote; None if none."""
  root = fs.path(directory)
  files = [str(f) for glob in (pattern, f"*/{pattern}",
                               f"plugins/profile/*/{pattern}")
           for f in root.glob(glob)]
  return max(files) if files else None


def traces(directory, pattern="*.trace.json.gz"):
  """The traces to read under `directory`: the newest of each
  `process_<index>/` folder (the trainer's traces of a multi-process run),
  else the newest of all (`newest`); [] if none."""
  per_process = sorted(
      (p for p in fs.path(directory).glob("process_*")
       if re.fullmatch(r"process_\d+", p.name)),
      key=lambda p: int(p.name.split("_")[1]))
  found = [t for t in (newest(str(p), pattern) for p in per_process) if t]
  if found:
    return found
  one = newest(directory, pattern)
  return [one] if one else []


@functools.lru_cache(maxsize=8)
def op_events(trace_path):
  """[(device, hlo_op, kernel name, start us, duration us)] of a trace.

  Cached by path (`summarize` and `ops_matching` read the same traces): the
  list is shared, read it only.

  Where the trace has accelerator processes (`/device:GPU:0`, ...), their
  events alone (a host thread's event naming an op is its launch); else
  (XLA:CPU) the host's, each device by its `device_ordinal`.
  """
  with fs.open(trace_path, "rb") as raw, gzip.open(raw) as f:
    events = json.load(f)["traceEvents"]
  procs = {e["pid"]: e["args"]["name"] for e in events
           if e.get("ph") == "M" and e.get("name") == "process_name"}
  by_process = collections.defaultdict(list)
  for e in events:
    args = e.get("args") or {}
    if e.get("ph") != "X" or "hlo_op" not in args:
      continue
    process = str(procs.get(e["pid"], e["pid"]))
    device = (process if process.startswith("/device:")
              else str(args.get("device_ordinal", process)))
    by_process[process.startswith("/device:")].append(
        (device, args["hlo_op"], e.get("name", ""), float(e["ts"]),
         float(e.get("dur", 0.0))))
  return by_process[True] or by_process[False]


def _busy(intervals):
  """Length of the union of [start, end) intervals and their span."""
  intervals.sort()
  busy, end = 0.0, -math.inf
  for s, e in intervals:
    if e > end:
      busy += e - max(s, end)
      end = e
  return busy, intervals[-1][1] - intervals[0][0] if intervals else 0.0


def summarize(trace_paths, hlo_text=None, steps=1):
  """Rows {kind: dict(count, ms, flops)} per step (mean over devices), the
  top ops [(ms per step, runs per step, kind, op, GFLOP per run)], the
  devices' mean busy share of the traced window, and with `hlo_text` rows
  {phase: dict(ms, matmul_ms)} per step (see `phase`; None without it).

  `trace_paths`: a trace, or several (one per process of one run: their
  devices are told apart by the trace's position in the list).
  An op's runs are its events over the kernel names it launches (a GEMM
  may launch a second, reducing kernel; on a CPU every op is one event).
  """
  if isinstance(trace_paths, str):
    trace_paths = [trace_paths]
  events = [((i, device), *rest) for i, path in enumerate(trace_paths)
            for device, *rest in op_events(path)]
  if not events:
    raise ValueError(f"{', '.join(trace_paths)}: no op events with an "
                     "`hlo_op` (was the step traced while it ran?).")
  instrs, comps = parse_hlo(hlo_text) if hlo_text else ({}, {})
  known = classify(instrs, comps)
  phases = ({p: dict(ms=0.0, matmul_ms=0.0) for p in PHASES} if hlo_text
            else None)
  per = len({e[0] for e in events}) * steps
  ops = collections.defaultdict(lambda: dict(events=0, kernels=set(), ms=0.0))
  spans = collections.defaultdict(list)
  for device, op, kernel, ts, dur in events:
    o = ops[op]
    o["events"] += 1
    o["kernels"].add(kernel)
    o["ms"] += dur / 1e3 / per
    spans[device].append((ts, ts + dur))
  kinds = {k: dict(count=0.0, ms=0.0, flops=0.0) for k in KINDS}
  top = []
  for op, o in ops.items():
    kind, flops = known.get(op) or (
        kind_from_name(" ".join([op, *o["kernels"]])), 0.0)
    runs = o["events"] / len(o["kernels"]) / per
    row = kinds[kind]
    row["count"] += runs
    row["ms"] += o["ms"]
    row["flops"] += flops * runs
    top.append((o["ms"], runs, kind, op, flops / 1e9))
    if phases is not None:
      p = phases[phase(instrs.get(op, {}).get("op_name", ""))]
      p["ms"] += o["ms"]
      p["matmul_ms"] += o["ms"] if kind == "matmul" else 0.0
  busy = [b / s for b, s in (_busy(v) for v in spans.values()) if s > 0]
  return (kinds, sorted(top, reverse=True), sum(busy) / max(len(busy), 1),
          phases)


def fused_op_names(name, instrs, comps):
  """The JAX name stacks of instruction `name` and of every instruction in
  the computations it calls, recursively (sorted; names XLA made up, with
  no `/`, left out)."""
  names, todo, seen = set(), [name], set()
  while todo:
    instr = instrs.get(todo.pop())
    if instr is None:
      continue
    names.add(instr["op_name"])
    for comp in instr["calls"]:
      if comp not in seen:
        seen.add(comp)
        todo.extend(comps.get(comp, ()))
  return sorted(n for n in names if "/" in n)


def _short(op_name):
  """A name stack without `jit(...)` and the transformation wrappers."""
  return "/".join(c for c in op_name.split("/") if "(" not in c) or op_name


def _ops_regex(pattern):
  try:
    return re.compile(pattern)
  except re.error as e:
    raise ValueError(f"--ops {pattern!r}: bad regex ({e}).") from None


def ops_matching(trace_paths, hlo_text, pattern, steps=1):
  """Rows dict(op, ms, runs, kind, phase, shape, names) per step of the
  first traced device, for the ops that match `pattern` (a regex searched
  in the op's name, its phase, and `fused_op_names`), in the order of
  their first run."""
  if isinstance(trace_paths, str):
    trace_paths = [trace_paths]
  events = op_events(trace_paths[0])
  if not events:
    raise ValueError(f"{trace_paths[0]}: no op events with an `hlo_op`.")
  regex = _ops_regex(pattern)
  instrs, comps = parse_hlo(hlo_text) if hlo_text else ({}, {})
  known = classify(instrs, comps)
  first_device = events[0][0]
  ops = {}
  for device, op, _, ts, dur in events:
    if device != first_device:
      continue
    o = ops.setdefault(op, dict(op=op, start=ts, ms=0.0, runs=0.0))
    o["start"] = min(o["start"], ts)
    o["ms"] += dur / 1e3 / steps
    o["runs"] += 1 / steps
  rows = []
  for o in sorted(ops.values(), key=lambda o: o["start"]):
    instr = instrs.get(o["op"], {})
    kind = known.get(o["op"], (kind_from_name(o["op"]), 0.0))[0]
    # A combined collective's name stack joins those of all its operands:
    # it would match every pattern.
    names = ([] if kind == "collective"
             else fused_op_names(o["op"], instrs, comps))
    o.update(kind=kind, phase=phase(instr.get("op_name", "")),
             shape=instr.get("shape", ""), names=names)
    if any(regex.search(t) for t in [o["op"], o["phase"], *names]):
      del o["start"]
      rows.append(o)
  return rows


def format_ops(rows, pattern):
  total = sum(r["ms"] for r in rows)
  lines = [f"Ops matching {pattern!r} in the order they ran: {len(rows)}, "
           f"{total:.2f} ms / step (first device).\n",
           "| op | kind | phase | shape | ms / step | name stacks fused into "
           "it |", "|---|---|---|---|---|---|"]
  for r in rows:
    names = "; ".join(dict.fromkeys(_short(n) for n in r["names"]))
    shape = r["shape"] if len(r["shape"]) <= 60 else r["shape"][:57] + "..."
    lines.append(f"| {r['op']} | {r['kind']} | {r['phase']} | {shape} | "
                 f"{r['ms']:.2f} | {names} |")
  return "\n".join(lines)


def format_table(kinds, top, busy, n_top=12, phases=None, modules=None):
  total = sum(r["ms"] for r in kinds.values())
  lines = ["| kind | runs / step | ms / step | share | GFLOP / step | "
           "TFLOP/s |", "|---|---|---|---|---|---|"]
  for kind, r in kinds.items():
    if not r["count"]:
      continue
    rate = (f"{r['flops'] / r['ms'] / 1e9:.2f}" if r["flops"] and r["ms"]
            else "")
    gflop = f"{r['flops'] / 1e9:.1f}" if r["flops"] else ""
    lines.append(f"| {kind} | {r['count']:.0f} | {r['ms']:.2f} | "
                 f"{r['ms'] / total:.1%} | {gflop} | {rate} |")
  lines.append(f"| all ops | {sum(r['count'] for r in kinds.values()):.0f} "
               f"| {total:.2f} | 100% | | |")
  lines.append(f"\nDevices busy {busy:.1%} of the traced window (mean).\n")
  if phases:
    lines += ["| phase (JAX name stack) | ms / step | share | of it matmul ms "
              "|", "|---|---|---|---|"]
    lines += [f"| {p} | {r['ms']:.2f} | {r['ms'] / total:.1%} | "
              f"{r['matmul_ms']:.2f} |" for p, r in phases.items() if r["ms"]]
    lines.append("")
  if modules:
    lines += ["| module (name stack; repeated layers merged) | ms / step | "
              "share | forward | backward | matmul ms | matmul GFLOP/s |",
              "|---|---|---|---|---|---|---|"]
    for name, r in list(modules.items())[:n_top]:
      rate = (f"{r['flops'] / r['matmul_ms'] / 1e6:.1f}" if r["flops"]
              and r["matmul_ms"] else "")
      lines.append(f"| {name} | {r['ms']:.2f} | {r['ms'] / total:.1%} | "
                   f"{r['forward']:.2f} | {r['backward']:.2f} | "
                   f"{r['matmul_ms']:.2f} | {rate} |")
    if len(modules) > n_top:
      lines.append(f"| ({len(modules) - n_top} more modules) | "
                   f"{sum(r['ms'] for r in list(modules.values())[n_top:]):.2f}"
                   " | | | | | |")
    lines.append("")
  lines += ["| op | kind | runs / step | ms / step | GFLOP / run |",
            "|---|---|---|---|---|"]
  for ms, count, kind, op, gflop in top[:n_top]:
    lines.append(f"| {op} | {kind} | {count:.0f} | {ms:.2f} | "
                 f"{gflop:.3g} |" if gflop else
                 f"| {op} | {kind} | {count:.0f} | {ms:.2f} | |")
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("directory", help="A profile directory (or a trace file).")
  p.add_argument("--hlo", default=None, help="The step's HLO text (default: "
                 "the newest *.hlo.txt under the directory, if any).")
  p.add_argument("--steps", type=int, default=1,
                 help="Steps the trace holds (for per-step figures).")
  p.add_argument("--top", type=int, default=12, help="Top ops to list.")
  p.add_argument("--ops", default=None, metavar="REGEX",
                 help="Also list, in the order they ran, the ops whose name, "
                 "phase or fused JAX name stacks match REGEX (needs the HLO "
                 "for phases and name stacks).")
  args = p.parse_args(argv)
  if args.ops is not None:  # A bad regex fails before any trace is read.
    try:
      _ops_regex(args.ops)
    except ValueError as e:
      p.error(str(e))
  is_dir = fs.isdir(args.directory)
  found = (traces(args.directory) if is_dir
           else [args.directory] if fs.exists(args.directory) else [])
  if not found:
    p.error(f"{args.directory}: no *.trace.json.gz there.")
  hlo = args.hlo or (newest(args.directory, "*.hlo.txt") if is_dir else None)
  text = fs.read_text(hlo) if hlo else None
  kinds, top, busy, phases = summarize(found, text, args.steps)
  modules = by_module(top, parse_hlo(text)[0]) if text else None
  print("\n".join(f"trace: {t}" for t in found))
  print(f"HLO: {hlo or 'none (kinds from op names)'}; {args.steps} step(s)"
        + (f"; {len(found)} processes" if len(found) > 1 else "") + "\n")
  print(format_table(kinds, top, busy, args.top, phases, modules))
  if args.ops is not None:
    try:
      rows = ops_matching(found, text, args.ops, args.steps)
    except ValueError as e:
      p.error(str(e))
    print("\n" + format_ops(rows, args.ops))


if __name__ == "__main__":
  main()
