#!/usr/bin/env bash
# What the open issues wait for on a GPU, most needed first, one device call per step (each
# under the 10-minute limit of a call, each with its own limit, so a hang costs only its
# step). From the repository root, with .whl carried; logs and reports in ${OUT:-gpu-out}/.
#   1. issue 24: the cuda tests not yet rerun since the renovation (2026-12-07, late: 13 of 16
#      passed on an H100 (issue 25's, autotune, leftover thread, devices_all among them) and one
#      of memcheck x2, captured_check, device_mutant, fuzz_on_the_gpu, broken_kernels failed,
#      unnamed: rerun those six with -rf first; on 2026-12-07, earlier, these passed
#      on an H100: safe, unguarded, fault, stale, broken, without-instrumentation, bounded x2,
#      glm52, host read; the parity test the session before)
#      and the tests that changed after the last GPU run (reversed program ids on a GPU);
#      four pytest workers share the GPU
#   2. issue 22: the GPU default, instrumented (212 s on 2026-12-07, target 60 s)
#   3. issue 21: `fuzz --fast --budget 60s` on every planted kernel (scripts/fuzz_reach.sh;
#      on 2026-12-07, before fuzz checked a stale draw's intended batch, 2 of 7 were found)
#   4. issue 23: bench (the full, captured and instrumented check at 4K and 128K), what a
#      kernel faulting on every other row costs (scripts/fault_cost.py), and a profile of
#      compare on decode's default suites in this process (pstats file and its top lines)
#   bash scripts/gpu-next.sh 1; bash scripts/gpu-next.sh 2; ...
set -uo pipefail
STEPS=" ${1:-1 2 3 4} "
. scripts/gpu-env.sh
step() { echo "== $1 ($(date +%T))"; }
wants() { [[ "$STEPS" == *" $1 "* ]]; }
timed() { /usr/bin/time -f "wall %e s" timeout "$1" python3 -m diffcheck "${@:2}" 2>&1 | \
  grep -v "^  " | tail -n 8; }
if wants 1; then
step "1. the cuda tests not rerun since the renovation, and those changed since (four at a time)"
timeout 570 python3 -m pytest -q -n 4 -m cuda tests/test_gpu.py --durations=20 -p no:cacheprovider \
  --tb=short -k "default_command or leftover_thread or memcheck or captured_check or \
  fuzz_on_the_gpu or device_mutant or issue25 or autotune or broken_kernels_are_caught or \
  planted_domain_kernel or devices_all" 2>&1 | tee "$OUT/pytest-cuda.log" | tail -n 60
fi
if wants 2; then
step "2. the GPU default (instrumented)"
timed 400 compare --report "$OUT/default.csv" --quiet
fi
if wants 3; then
step "3. fuzz --fast on each planted kernel (60 s each, all at once)"
JOBS=${JOBS:-9} PYTHON=python3 timeout 580 bash scripts/fuzz_reach.sh --fast --budget 60s 2>&1 | tee "$OUT/reach.log"
fi
if wants 4; then
step "4. bench, what faults cost, then a profile of compare on decode's default suites"
timeout 120 python3 -m diffcheck bench --path decode --regime 4k --regime 128k \
  --report "$OUT/bench.csv" 2>&1 | tee "$OUT/bench.log" | tail -n 26
timeout 120 python3 scripts/fault_cost.py 200 cuda 2>&1 | tail -n 3
timeout 200 python3 -m cProfile -o "$OUT/compare.pstats" -m diffcheck compare --path decode \
  --isolation none --report "$OUT/profiled.csv" --quiet 2>&1 | tail -n 3
python3 -c "import pstats; s = pstats.Stats('$OUT/compare.pstats'); \
  s.sort_stats('tottime').print_stats(25); s.sort_stats('cumulative').print_stats(45)" 2>&1 | \
  grep -v "^$" > "$OUT/profile.txt"; head -c 6000 "$OUT/profile.txt"
fi
step "done"
