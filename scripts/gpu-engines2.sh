#!/usr/bin/env bash
# Engines' kernels part 2 on a GPU machine, from the repository root (issue 25): autotuned and
# heuristic kernels, a bug in one config, and launchers whose graphs keep freed memory
# (tests/autotuned_kernels.py). Reports copied to ${OUT:-gpu-out}/.
#   bash scripts/gpu-engines2.sh
set -uo pipefail
. scripts/gpu-env.sh
python3 -m pytest -q -m cuda tests/test_gpu.py -k "issue25 or autotune_config" -s \
  --durations=8 2>&1 | tee "$OUT/pytest-engines2.log" | grep -v "^  " | tail -40
