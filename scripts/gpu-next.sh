#!/usr/bin/env bash
# What the open issues wait for on a GPU, most needed first, in two device calls (`1 2`,
# then `3 4`: each under the 10-minute limit of a call; every step has its own limit, so a
# hang costs only its step). From the repository root, with .whl carried; logs and reports
# in ${OUT:-gpu-out}/.
#   1. issue 22: the parity and bounded-read tests (parity failed with a bare AssertionError
#      in every row: GPU workers started by an interpreting test session; fixed since)
#   2. issue 21: production-domain alone, then the whole GPU default (it ran out of memory)
#   3. issue 24: every cuda test after the renovation
#   4. issue 23: the full and the captured check at 4K and 128K
#   bash scripts/gpu-next.sh "1 2"; bash scripts/gpu-next.sh "3 4"
set -uo pipefail
STEPS=" ${1:-1 2 3 4} "
. scripts/gpu-env.sh
step() { echo "== $1 ($(date +%T))"; }
wants() { [[ "$STEPS" == *" $1 "* ]]; }
if wants 1; then
step "1. instrumented parity"
DIFFCHECK_DEBUG=1 timeout 150 python3 -m pytest -q -s -m cuda tests/test_gpu.py \
  -k "bounded or every_read" 2>&1 | tee "$OUT/pytest-instrument.log" | grep -v "^  " | tail -n 25
fi
if wants 2; then
step "2. production-domain, then the GPU default"
timed() { /usr/bin/time -f "wall %e s" timeout "$1" python3 -m diffcheck "${@:2}" 2>&1 | \
  grep -v "^  " | tail -n 8; }
timed 120 compare --suite production-domain --report "$OUT/production-domain.csv" --quiet
timed 240 compare --report "$OUT/default.csv" --coverage "$OUT/coverage.csv" --quiet
python3 -c "import pandas as p; d=p.read_csv('$OUT/default.csv'); print(d.status.value_counts().to_dict()); print(d[d.status=='error'][['case_id','mode','error']].head(3).to_string())"
fi
if wants 3; then
step "3. every cuda test"
timeout 400 python3 -m pytest -q -m cuda tests/test_gpu.py --durations=8 \
  --deselect tests/test_gpu.py::test_every_read_the_cpu_sandbox_sees_is_a_read_on_the_gpu \
  2>&1 | tee "$OUT/pytest-cuda.log" | tail -n 20
fi
if wants 4; then
step "4. bench: the full check at 4K and 128K"
timeout 120 python3 -m diffcheck bench --path decode --regime 4k --regime 128k \
  --report "$OUT/bench.csv" 2>&1 | tee "$OUT/bench.log" | tail -n 30
fi
step "done"
