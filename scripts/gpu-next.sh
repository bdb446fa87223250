#!/usr/bin/env bash
# What the open issues wait for on a GPU, most needed first, one device call per step (each
# under the 10-minute limit of a call, each with its own limit, so a hang costs only its
# step). From the repository root, with .whl carried; logs and reports in ${OUT:-gpu-out}/.
#   1. issue 24: on 2026-12-08 (H100) the failure of the day before was named:
#      test_a_device_mutant_that_faults_the_device_is_named_and_saved FAILED (its output was
#      not kept: rerun it alone with --tb=long first); memcheck x2, captured_check and
#      broken_kernels (reversed program ids) passed; fuzz_on_the_gpu did not finish in the
#      300 s left. Then default_command and planted_domain_kernel (not run since the reach
#      work). Four pytest workers share the GPU.
#   2. issue 22: the GPU default, instrumented (212 s on 2026-12-07, target 60 s)
#   3. issue 21: `fuzz --fast --budget 60s` on every planted kernel (scripts/fuzz_reach.sh);
#      2026-12-08, nine at once on one H100: 5 of 9 found (prefill_minus_one_block,
#      prefill_trusts_cu_seqlens, decode_fixed_tile, blocktable_stride_by_16,
#      blocktable_slot_through_float in 30-56 s); the three blocktable page-size/NULL
#      kernels and decode_ends_at_the_table not (each search drew only 9-11 cases: its
#      time went to 12-18K device mutants of them): three at a time now (JOBS=3)
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
step "1. the failing device-mutant test alone, then the cuda tests not rerun since the reach work"
timeout 200 python3 -m pytest -q -m cuda tests/test_gpu.py -p no:cacheprovider --tb=long \
  -k device_mutant 2>&1 | tail -n 80
timeout 360 python3 -m pytest -v -n 4 -m cuda tests/test_gpu.py -p no:cacheprovider --tb=short \
  -rf -k "default_command or planted_domain_kernel or fuzz_on_the_gpu" 2>&1 | \
  grep -v -i benchmark | tail -n 60
fi
if wants 2; then
step "2. the GPU default (instrumented)"
timed 400 compare --report "$OUT/default.csv" --quiet
fi
if wants 3; then
step "3. fuzz --fast on each planted kernel (60 s each, three at a time)"
JOBS=${JOBS:-3} PYTHON=python3 timeout 580 bash scripts/fuzz_reach.sh --fast --budget 60s 2>&1 | tee "$OUT/reach.log"
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
