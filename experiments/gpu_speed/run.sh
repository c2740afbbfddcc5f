#!/usr/bin/env bash
# The GPU speed check of issue 13, in parts (PART=1, PART=2; PART=3 the
# rows the first two left unmeasured), each one command that fits a
# 10-minute call (timeouts: 420 s; 650 s, 560 s where the pipeline is
# skipped; 600 s; most important first, each under its own timeout, so a
# slow or broken one costs only itself):
# the attention tests on the GPU (cuDNN next to einsum, values and gradients);
# train-step throughput and FLOP utilisation of ViT-B/16, ViT-S/16, NFNet-F0
# next to timm (torch.autocast bf16, its fused attention, cudnn.benchmark)
# in bfloat16 matmuls at batch 128 and 256, steps alternating; ViT-B/16 with
# the "xla" attention kernel and at a larger batch; the SigLIP B/16 two-tower
# step (sigmoid, chunked); then the ImageNet-style input pipeline on all CPU
# cores (needs TensorFlow; skipped, with a line saying so, where it is not
# installed; PART=pipeline: TensorFlow carried in parts, the pipeline on
# all, 1 and half of the cores, and the ViT-B/16 step it feeds). Writes
# everything to $OUT (default ./gpu_speed).
#
# On a machine with the project installed (pip install -e ".[gpu,torch]"):
#   bash experiments/gpu_speed/run.sh
# On the device tool's H200 (no network; jax, flax, optax, orbax, chex, etils,
# torch, timm installed; ml-collections and TensorFlow not), see README.md
# beside this file: the package runs from this tree (PYTHONPATH), and
# ml-collections travels as a wheel.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu_speed}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
# No preallocation: timm's step runs in a second process on the same GPU.
export TF_CPP_MIN_LOG_LEVEL=3 XLA_PYTHON_CLIENT_PREALLOCATE=false
# `--batch_size max` compiles steps from shapes, then the one it found again
# on real arrays: the same program, a hit in this cache.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/bvl_jax_cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
# The sizes (a dry run on a CPU: BATCHES=2 BIG=4 RES=32 STEPS=1 MATMUL=256).
BATCHES=${BATCHES:-128,256} BIG=${BIG:-max} RES=${RES:-224}
STEPS=${STEPS:-20} MATMUL=${MATMUL:-8192} LARGEST=${BATCHES##*,}
# With BIG=max on a CPU (no memory limit to read): FIT_ARGS="--memory_limit_gib 2".
FIT_ARGS=${FIT_ARGS:-}
BENCH="$PY -m big_vision_like.tools.benchmark --res $RES --dtype_mm bfloat16
  --steps $STEPS --matmul_size $MATMUL"
PART=${PART:-all}
# PART=pipeline: TensorFlow carried in parts, one a call
# (pack_tensorflow.sh; README.md): the parts gather in $TF_PARTS, and are
# unpacked into $TF_SITE once all that SHA256SUMS lists are there.
TF_SITE=${TF_SITE:-/tmp/tfsite} TF_PARTS=${TF_PARTS:-/tmp/tfc}
if [[ $PART == pipeline ]]; then
  if [[ -d .tfc ]]; then mkdir -p "$TF_PARTS" && cp .tfc/* "$TF_PARTS/"; fi
  if [[ -f $TF_PARTS/SHA256SUMS && ! -d $TF_SITE ]]; then
    if (cd "$TF_PARTS" && sha256sum --quiet -c SHA256SUMS); then
      cat "$TF_PARTS"/part_* | $PY -c "import sys, tarfile
tar = tarfile.open(fileobj=sys.stdin.buffer, mode='r|xz')
tar.extractall('$TF_SITE.tmp', filter='data')" && mv "$TF_SITE.tmp" "$TF_SITE"
    else
      echo "TensorFlow: parts missing or damaged (above); carry the rest"
    fi
  fi
  if [[ ! -d $TF_SITE ]]; then
    ls -l "$TF_PARTS" 2>&1; exit 0  # A call that carries one more part.
  fi
  export PYTHONPATH="$TF_SITE:$PYTHONPATH"
fi
JPEGS=/tmp/bvl_jpegs  # 2,048 synthetic 500x375 JPEGs, written once.
pipeline() {  # The input pipeline on each of N... cores: pipeline N [N ...].
  local err n
  if ! err=$($PY -c "import tensorflow, tensorflow_datasets" 2>&1); then
    echo "pipeline: not run, TensorFlow / tensorflow-datasets do not" \
      "import here: $(echo "$err" | tail -1)" | tee -a "$OUT/pipeline.md"
    return
  fi
  [[ -d $JPEGS/train ]] || $PY -c "import sys
from big_vision_like.tools import pipeline_benchmark as p
p.write_images(sys.argv[1], 2048, 375, 500)" "$JPEGS" 2>&1 | grep -v -i warn
  for n in "$@"; do
    local pin=()
    command -v taskset > /dev/null && pin=(taskset -c "0-$((n - 1))")
    timeout 120 "${pin[@]}" $PY -m big_vision_like.tools.pipeline_benchmark \
      --root "$JPEGS" --batch_size "$LARGEST" --batches 32 2>&1 \
      | grep -v -i -E "warning|oneDNN custom" \
      | sed "s/^/[$n of $(nproc) cores] /" | tee -a "$OUT/pipeline.md"
  done
}
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  $PY -c "import jax, jaxlib; print('jax', jax.__version__, jax.devices()); \
from jax._src.lib import cuda_versions as v; \
print('cuda', v.cuda_runtime_get_version(), 'cudnn', v.cudnn_get_version())" \
    2>&1 | tail -2
  $PY -c "import torch, timm; print('torch', torch.__version__, 'cuda', \
torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'timm', \
timm.__version__)"
  $PY -c "import flax, optax, orbax.checkpoint, ml_collections; \
print('flax', flax.__version__, 'optax', optax.__version__)"
  $PY -c "import tensorflow as tf; print('tensorflow', tf.__version__)" 2>&1 \
    | tail -1
} > "$OUT/versions.txt" 2>&1
cat "$OUT/versions.txt"

# PART=1 (about 6 minutes on the H200): the attention tests, ViT-B/16 and
# ViT-S/16 next to timm, ViT-B/16 with the "xla" kernel. PART=2 (about 7-8):
# NFNet-F0 next to timm, ViT-B/16 at batch $BIG ("max": the largest that
# fits the GPU, found from compiled steps' memory), the SigLIP step, the
# pipeline. One part per device call; PART=all runs both. PART=3 (about 8
# minutes): what parts 1 and 2 left unmeasured on the H200 of 2026-12-04
# (the attention tests added since, a profile of ViT-B/16's step, ViT-B/16
# and the SigLIP step at the largest batch that fits, NFNet-F0 at the larger
# batch), then the SigLIP step's largest batch with 4 accumulation steps.
if [[ $PART == pipeline ]]; then
  # The ImageNet-style input pipeline on all cores, on 1 and on half of
  # them, and the ViT-B/16 step it has to feed (about 3 minutes).
  pipeline "$(nproc)" 1 $(($(nproc) / 2))
  timeout 120 $BENCH --models vit:B/16 --batch_size "$LARGEST" 2>&1 \
    | grep -E "^\| (model|---|vit:B)" | tee -a "$OUT/pipeline.md"
  exit 0
fi
SIGLIP="$PY -m big_vision_like.tools.accum_benchmark --res $RES
  --dtype_mm bfloat16 --steps $STEPS"
if [[ $PART == 3 ]]; then
  timeout 100 $PY -m pytest --noconftest -q -p no:cacheprovider \
    tests/models/test_attention.py 2>&1 | tail -15 | tee "$OUT/tests.txt"
  # Where ViT-B/16's step time goes (tools/trace_summary.py): its kernels
  # by kind, the matmuls' FLOP rate, the GPU's idle share.
  PROF=/tmp/bvl_profile/vit_B16_b$LARGEST
  timeout 90 $BENCH --models vit:B/16 --batch_size "$LARGEST" --steps 5 \
    --profile_dir /tmp/bvl_profile 2>&1 | grep "^| vit:B" \
    | sed "s/^| vit:B\/16/| vit:B\/16 (profiled)/" | tee -a "$OUT/steps.md"
  timeout 40 $PY -m big_vision_like.tools.trace_summary "$PROF" --steps 3 \
    --top 25 2>&1 | tee "$OUT/trace_summary.md"
  cp "$(ls -t "$PROF"/plugins/profile/*/*.trace.json.gz | head -1)" "$OUT/"
  timeout 130 $BENCH --models vit:B/16 --batch_size "$BIG" $FIT_ARGS 2>&1 \
    | grep -E "^\| (vit:B|\(largest)" | tee -a "$OUT/steps.md"
  timeout 150 $SIGLIP --batch_size "$BIG" --grad_accum 1 $FIT_ARGS 2>&1 \
    | grep -v -i warning | tee -a "$OUT/siglip.md"
  timeout 150 $BENCH --models nfnet:F0 --batch_size "$LARGEST" \
    --compare timm 2>&1 | grep -v -i warning | tee -a "$OUT/steps.md"
  # Bonus, within what is left of the call: accumulation's larger batch.
  timeout 60 $SIGLIP --batch_size "$BIG" --grad_accum 4 $FIT_ARGS 2>&1 \
    | grep -v -i warning | tee -a "$OUT/siglip.md"
  exit 0
fi
if [[ $PART == 1 || $PART == all ]]; then
  # The attention implementations on this GPU (cuDNN's run here, not on CPU).
  timeout 120 $PY -m pytest --noconftest -q -p no:cacheprovider \
    tests/models/test_attention.py 2>&1 | tail -15 | tee "$OUT/tests.txt"
  # Each model next to timm, bf16, steps alternating with timm's.
  timeout 130 $BENCH --models vit:B/16 --batch_size "$BATCHES" \
    --compare timm 2>&1 | grep -v -i warning | tee -a "$OUT/steps.md"
  timeout 110 $BENCH --models vit:S/16 --batch_size "$BATCHES" \
    --compare timm 2>&1 | grep -v -i warning | tee -a "$OUT/steps.md"
  # ViT-B/16 with the "xla" kernel (the rows above: "auto", which is cuDNN's
  # fused attention for bfloat16 on an NVIDIA GPU).
  timeout 60 $BENCH --models vit:B/16 --batch_size "$LARGEST" \
    --attention_impl xla 2>&1 | grep "^| vit:B" \
    | sed "s/^| vit:B\/16/| vit:B\/16 attention xla/" | tee -a "$OUT/steps.md"
fi
[[ $PART == 1 ]] && exit 0
timeout 230 $BENCH --models nfnet:F0 --batch_size "$BATCHES" --compare timm \
  2>&1 | grep -v -i warning | tee -a "$OUT/steps.md"
timeout 150 $BENCH --models vit:B/16 --batch_size "$BIG" $FIT_ARGS 2>&1 \
  | grep -E "^\| (vit:B|\(largest)" | tee -a "$OUT/steps.md"
# SigLIP B/16 two-tower, sigmoid loss on the chunked ring.
for b in ${BATCHES//,/ }; do
  timeout 90 $SIGLIP --batch_size $b --grad_accum 1 2>&1 \
    | grep -v -i warning | tee -a "$OUT/siglip.md"
done
# The input pipeline on the machine's cores, next to the step it feeds.
pipeline "$(nproc)"
