#!/usr/bin/env bash
# Trains configs/vit_digits.py with three seeds (final recipe and :tune), then
# prints the table of README.md. Usage: experiments/digits_vit/run.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-workdirs/experiments/digits_vit}
py=${PYTHON:-.venv/bin/python}
for arg in "" ":tune"; do
  for seed in 0 1 2; do
    name="seed${seed}${arg/:/_}"
    "$py" -m big_vision_like.train --config "configs/vit_digits.py${arg}" \
        --workdir "$out/$name" --config.seed="$seed" > "$out/$name.log" 2>&1 \
      || { echo "run $name failed, see $out/$name.log"; exit 1; }
  done
done
"$py" experiments/digits_vit/summarize.py "$out"
