#!/usr/bin/env bash
# Run on a GPU machine from the repository root: versions, then `tests` (the cuda-marked
# tests) and/or `cli` (the default command, every suite with every implementation, the
# production suites, each timed). Logs and reports go to ${OUT:-gpu-out}/.
#   bash scripts/gpu-check.sh [tests|cli|all]
set -uo pipefail
STAGE=${1:-all}
. scripts/gpu-env.sh
if [ "$STAGE" = tests ] || [ "$STAGE" = all ]; then
  python3 -m pytest -q -m cuda tests/test_gpu.py --durations=12 2>&1 | tee "$OUT/pytest-cuda.log"
fi
if [ "$STAGE" = cli ] || [ "$STAGE" = all ]; then
  timed() { /usr/bin/time -f "wall %e s" python3 -m diffcheck "$@" 2>&1 | tail -n 4; }
  echo "== the default command"; timed compare --report "$OUT/report-default.csv" --quiet
  IMPLS=$(python3 -c "from diffcheck.impls import builtin; print(' '.join('--impl ' + n for n in builtin()))")
  echo "== every suite, every implementation, every mode"
  timed compare --suite smoke --suite smoke-2048 --suite edge --suite stale --suite glm52 \
    --suite replay $IMPLS \
    --report "$OUT/report-all.csv" --details "$OUT/details-all.csv" --quiet
  echo "== production"
  timed compare --suite production --suite production-replay \
    --report "$OUT/report-production.csv"
fi
