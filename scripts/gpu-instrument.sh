#!/usr/bin/env bash
# Bounds-checked compilation on a GPU machine, from the repository root (issue 22): the GPU
# tests of instrumentation (parity with the CPU sandbox, the bounded reads in every mode,
# red zones alone missing them), then the cost: the default command and the production
# suites with and without instrumentation, each timed. Output in ${OUT:-gpu-out}/.
#   bash scripts/gpu-instrument.sh [tests|cost|all]
set -uo pipefail
STAGE=${1:-all}
. scripts/gpu-env.sh
if [ "$STAGE" = tests ] || [ "$STAGE" = all ]; then
  # DIFFCHECK_DEBUG: an implementation call that raises prints its whole traceback
  DIFFCHECK_DEBUG=1 python3 -m pytest -q -s -m cuda tests/test_gpu.py -k "bounded or every_read" --durations=6 \
    2>&1 | tee "$OUT/pytest-instrument.log" | grep -v "^  "
fi
if [ "$STAGE" = cost ] || [ "$STAGE" = all ]; then
  echo "== bench: kernels in a graph, plain and instrumented, and the full check (4K contexts)"
  timeout 240 python3 -m diffcheck bench --regime 4k --report "$OUT/bench-instrument.csv" 2>&1 | \
    grep -E "instrumented|check|graph " | head -40
  timed() { /usr/bin/time -f "wall %e s" python3 -m diffcheck "$@" 2>&1 | grep -E "^(report|time|wall)"; }
  for flag in --instrument --no-instrument; do
    echo "== the default command $flag"
    timed compare --report "$OUT/default$flag.csv" --quiet $flag
    python3 -c "import pandas as p; d=p.read_csv('$OUT/default$flag.csv'); print(d.status.value_counts().to_dict())"
    echo "== production suites $flag"
    timed compare --suite production --suite production-replay --report "$OUT/production$flag.csv" --quiet $flag
  done
fi
