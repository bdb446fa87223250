#!/usr/bin/env bash
# What the open issues wait for on a GPU, most needed first, in three device calls (`1`,
# `2 3`, then `4`: each under the 10-minute limit of a call; every step has its own limit, so
# a hang costs only its step). From the repository root, with .whl carried; logs, reports and
# a profile in ${OUT:-gpu-out}/.
#   1. issue 24: every cuda test after the renovation (parity passed on an H100 on 2026-12-07)
#   2. issues 22/23: bench (the full, captured and instrumented check at 4K and 128K), and a
#      profile of compare in this process (pstats file and its top lines) to find where the
#      GPU default's 212 s go (target: 60 s)
#   3. issue 21: the GPU-only planted kernel and its twin under the GPU default, and the GPU
#      default without instrumentation (what instrumentation costs the whole run)
#   4. issue 21: `fuzz --fast` (60 s each) on every planted kernel, from an empty folder
#   bash scripts/gpu-next.sh 1; bash scripts/gpu-next.sh "2 3"; bash scripts/gpu-next.sh 4
set -uo pipefail
STEPS=" ${1:-1 2 3 4} "
. scripts/gpu-env.sh
step() { echo "== $1 ($(date +%T))"; }
wants() { [[ "$STEPS" == *" $1 "* ]]; }
timed() { /usr/bin/time -f "wall %e s" timeout "$1" python3 -m diffcheck "${@:2}" 2>&1 | \
  grep -v "^  " | tail -n 8; }
statuses() { python3 -c "import pandas as p; d=p.read_csv('$1'); print(d.status.value_counts().to_dict()); print(d[~d.status.isin(['pass','stale_sensitive'])][['case_id','mode','status','finding']].head(3).to_string())"; }
KERNELS=tests/domain_kernels.py
if wants 1; then
step "1. every cuda test"
timeout 540 python3 -m pytest -q -m cuda tests/test_gpu.py --durations=12 -p no:cacheprovider \
  --deselect tests/test_gpu.py::test_every_read_the_cpu_sandbox_sees_is_a_read_on_the_gpu \
  2>&1 | tee "$OUT/pytest-cuda.log" | tail -n 30
fi
if wants 2; then
step "2. bench, then a profile of compare"
timeout 120 python3 -m diffcheck bench --path decode --regime 4k --regime 128k \
  --report "$OUT/bench.csv" 2>&1 | tee "$OUT/bench.log" | tail -n 26
timeout 150 python3 -m cProfile -o "$OUT/compare.pstats" -m diffcheck compare --path decode \
  --suite smoke --suite domain --isolation none --report "$OUT/profiled.csv" --quiet 2>&1 | tail -n 3
python3 -c "import pstats; pstats.Stats('$OUT/compare.pstats').sort_stats('tottime').print_stats(22)" \
  2>&1 | tail -n 34
fi
if wants 3; then
step "3. the GPU-only planted kernel and its twin, then the default without instrumentation"
for kernel in blocktable_int32_row_offset blocktable_int64_row_offset; do
  timed 150 compare --impl "$KERNELS:$kernel" --path blocktable --report "$OUT/planted-$kernel.csv" --quiet
  statuses "$OUT/planted-$kernel.csv"
done
timed 230 compare --no-instrument --report "$OUT/default-plain.csv" --quiet
fi
if wants 4; then
step "4. fuzz --fast on each planted kernel (60 s each)"
for entry in blocktable_page_by_shift:blocktable blocktable_zero_block_is_null:blocktable \
    prefill_minus_one_block:prefill prefill_trusts_cu_seqlens:prefill decode_fixed_tile:decode \
    blocktable_stride_by_16:blocktable blocktable_int32_row_offset:blocktable; do
  kernel=${entry%%:*}; path=${entry##*:}
  echo "-- $kernel ($path)"
  rm -rf "/tmp/fz-$kernel"
  /usr/bin/time -f "wall %e s" timeout 75 python3 -m diffcheck fuzz --impl "$KERNELS:$kernel" \
    --path "$path" --fast --budget 60s --save-to "/tmp/fz-$kernel" 2>&1 | \
    grep -E "^fuzz: [a-z_]+ after|^fuzz: no failure|^wall" | head -4
done
fi
step "done"
