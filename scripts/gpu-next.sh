#!/usr/bin/env bash
# What the open issues wait for on a GPU, most needed first, one device call per step (each
# under the 10-minute limit of a call, each with its own limit, so a hang costs only its
# step). From the repository root, with .whl carried; logs and reports in ${OUT:-gpu-out}/.
#   1. issue 24: the cuda tests not yet rerun since the renovation (on 2026-12-07 these passed
#      on an H100: safe, unguarded, fault, stale, broken, without-instrumentation, bounded x2,
#      glm52, host read; the parity test the session before)
#   1b. the tests that changed after the last GPU run (reversed program ids on a GPU)
#   2. issue 22: the GPU default without instrumentation, then with it (what it costs the run;
#      212 s with it on 2026-12-07, target 60 s)
#   3. issue 21: `fuzz --fast --budget 60s` on every planted kernel (scripts/fuzz_reach.sh;
#      on 2026-12-07, before fuzz checked a stale draw's intended batch, 2 of 7 were found)
#   4. issue 23: bench (the full, captured and instrumented check at 4K and 128K) and a
#      profile of compare in this process (pstats file and its top lines)
#   bash scripts/gpu-next.sh 1; bash scripts/gpu-next.sh 2; ...
set -uo pipefail
STEPS=" ${1:-1 1b 2 3 4} "
. scripts/gpu-env.sh
step() { echo "== $1 ($(date +%T))"; }
wants() { [[ "$STEPS" == *" $1 "* ]]; }
timed() { /usr/bin/time -f "wall %e s" timeout "$1" python3 -m diffcheck "${@:2}" 2>&1 | \
  grep -v "^  " | tail -n 8; }
if wants 1; then
step "1. the cuda tests not rerun since the renovation"
timeout 560 python3 -m pytest -q -m cuda tests/test_gpu.py --durations=12 -p no:cacheprovider \
  --tb=short -k "default_command or leftover_thread or memcheck or captured_check or \
  fuzz_on_the_gpu or device_mutant or issue25 or autotune" 2>&1 | tee "$OUT/pytest-cuda.log" | tail -n 40
fi
if wants 1b; then
step "1b. tests that changed on 2026-12-07: the broken kernels with reversed program ids, the planted domain kernels"
timeout 560 python3 -m pytest -q -m cuda tests/test_gpu.py --durations=6 -p no:cacheprovider \
  --tb=short -k "broken_kernels_are_caught or planted_domain_kernel" 2>&1 | \
  tee "$OUT/pytest-cuda-1b.log" | tail -n 40
fi
if wants 2; then
step "2. the GPU default without instrumentation, then with it"
timed 280 compare --no-instrument --report "$OUT/default-plain.csv" --quiet
timed 280 compare --report "$OUT/default.csv" --quiet
fi
if wants 3; then
step "3. fuzz --fast on each planted kernel (60 s each)"
PYTHON=python3 timeout 580 bash scripts/fuzz_reach.sh --fast --budget 60s 2>&1 | tee "$OUT/reach.log"
fi
if wants 4; then
step "4. bench, then a profile of compare"
timeout 120 python3 -m diffcheck bench --path decode --regime 4k --regime 128k \
  --report "$OUT/bench.csv" 2>&1 | tee "$OUT/bench.log" | tail -n 26
timeout 150 python3 -m cProfile -o "$OUT/compare.pstats" -m diffcheck compare --path decode \
  --suite smoke --suite domain --isolation none --report "$OUT/profiled.csv" --quiet 2>&1 | tail -n 3
python3 -c "import pstats; pstats.Stats('$OUT/compare.pstats').sort_stats('tottime').print_stats(22)" \
  2>&1 | tail -n 34
fi
step "done"
