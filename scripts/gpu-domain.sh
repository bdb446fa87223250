#!/usr/bin/env bash
# The declared domain on a GPU machine, from the repository root (issue 21): the GPU default
# over the safe kernels (it adds production-domain), each planted kernel of
# tests/domain_kernels.py under the GPU default, and `fuzz --fast` on each (a fresh
# regression folder, 60 s). Logs and reports go to ${OUT:-gpu-out}/.
#   bash scripts/gpu-domain.sh [default|planted|fuzz|all]
set -uo pipefail
STAGE=${1:-all}
. scripts/gpu-env.sh
timed() { /usr/bin/time -f "wall %e s" python3 -m diffcheck "$@" 2>&1 | grep -v "^  " | tail -n 9; }
PLANTED="blocktable_page_by_shift:blocktable blocktable_zero_block_is_null:blocktable
prefill_minus_one_block:prefill prefill_trusts_cu_seqlens:prefill decode_fixed_tile:decode
blocktable_int32_row_offset:blocktable blocktable_int64_row_offset:blocktable"
if [ "$STAGE" = default ] || [ "$STAGE" = all ]; then
  echo "== the GPU default, safe kernels"
  timed compare --report "$OUT/default.csv" --coverage "$OUT/coverage.csv" --quiet
  echo "== production-domain alone"
  timed compare --suite production-domain --report "$OUT/production-domain.csv" --quiet
fi
if [ "$STAGE" = planted ] || [ "$STAGE" = all ]; then
  for entry in $PLANTED; do
    kernel=${entry%%:*}; path=${entry##*:}
    echo "== $kernel ($path), the GPU default"
    timed compare --impl "tests/domain_kernels.py:$kernel" --path "$path" \
      --report "$OUT/planted-$kernel.csv" --quiet
    python3 -c "import pandas as p; d=p.read_csv('$OUT/planted-$kernel.csv'); print(d.status.value_counts().to_dict()); print(d[~d.status.isin(['pass','stale_sensitive'])][['case_id','mode','status','finding']].head(3).to_string())"
  done
fi
if [ "$STAGE" = fuzz ] || [ "$STAGE" = all ]; then
  for entry in $PLANTED; do
    kernel=${entry%%:*}; path=${entry##*:}
    [ "$kernel" = blocktable_int64_row_offset ] && continue
    echo "== fuzz --fast $kernel ($path)"
    rm -rf "/tmp/fz-$kernel"
    /usr/bin/time -f "wall %e s" python3 -m diffcheck fuzz --impl "tests/domain_kernels.py:$kernel" \
      --path "$path" --fast --budget 60s --save-to "/tmp/fz-$kernel" 2>&1 | \
      grep -E "^fuzz: (mismatch|oob|fault|stale|no failure|coverage|[a-z_]+ at generated)|^wall|after" | head -8
  done
fi
