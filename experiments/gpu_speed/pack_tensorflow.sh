#!/usr/bin/env bash
# TensorFlow and tensorflow-datasets for the device tool's H200 host
# (Python 3.12, no network, no TensorFlow), so that the input-pipeline part
# of run.sh can run there (PART=pipeline). The TensorFlow wheel alone
# (274 MB) is over the tool's 64 MiB carry limit. So this script installs
# it and the packages it imports that the host lacks into a folder, for
# Python 3.12 on x86-64. It drops TensorFlow's C++ headers (287 MB,
# unused), packs the rest as tar.xz (about 150 MB), and splits the archive
# into parts of PART_MIB MiB: .tfc/part_aa, part_ab, ..., with their
# checksums in .tfc/SHA256SUMS. Each device call carries one part. The
# files a call leaves there stay while the machine is warm, so the last
# call has all the parts (see README.md).
#
#   bash experiments/gpu_speed/pack_tensorflow.sh   # once, here (2.5 min)
#
# The list is what `import tensorflow, tensorflow_datasets` and
# tools/pipeline_benchmark.py needed beyond the host's packages (KINDS.md
# of the device tool), found by running them in a venv with only those.
# protobuf travels too: TensorFlow 2.21 needs >= 6.31.1, and the host's
# version is not known. PY_VERSION=3.11 packs for this machine's Python,
# to try the parts here first.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-.tfc}
PART_MIB=${PART_MIB:-48}
PY_VERSION=${PY_VERSION:-3.12}
PY=${PY:-python3}
PACKAGES=(tensorflow-cpu==2.21.0 tensorflow-datasets==4.9.10
  ml-collections==1.1.0 protobuf==7.36.2 gast==0.7.0 astunparse==1.6.3
  google-pasta==0.2.0 termcolor==3.3.0 toml==0.10.2 immutabledict==4.3.1
  tensorflow-metadata==1.21.0)
# Has no wheel: built here (pure Python), installed from the wheel.
SDIST_ONLY=(promise==2.3)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
site=$tmp/site
$PY -m pip wheel -q --no-deps -w "$tmp/wheels" "${SDIST_ONLY[@]}"
$PY -m pip install -q --no-deps --no-compile --target "$site" \
  --python-version "$PY_VERSION" --implementation cp --only-binary=:all: \
  --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 "${PACKAGES[@]}" "$tmp"/wheels/*.whl
rm -rf "$site/tensorflow/include" "$site/bin"
mkdir -p "$OUT"
rm -f "$OUT"/part_* "$OUT/SHA256SUMS"
tar -C "$site" -cf - . | xz -T0 -6 | split -b "${PART_MIB}m" - "$OUT/part_"
(cd "$OUT" && sha256sum part_* > SHA256SUMS)
ls -l "$OUT"
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx "/$OUT/" "$exclude" 2>/dev/null || echo "/$OUT/" >> "$exclude"
