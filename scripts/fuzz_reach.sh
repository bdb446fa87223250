#!/usr/bin/env bash
# How soon `diffcheck fuzz` finds each planted kernel of tests/domain_kernels.py (and the
# float32 slot of tests/fuzz_kernels.py), from an empty regression folder at seed 0: one line
# per kernel with the draws and seconds to the finding. From the repository root.
#   CPU (issue 21: each within 5 minutes): bash scripts/fuzz_reach.sh
#   GPU (each within 60 s):               bash scripts/fuzz_reach.sh --fast --budget 60s
# Extra arguments go to every fuzz command (default budget 300s, shrinking cut to 5 s).
# JOBS=N runs N searches at once (each slower for sharing the machine; lines keep their order).
set -uo pipefail
export PYTHONPATH=$PWD/tests${PYTHONPATH:+:$PYTHONPATH}
KERNELS="blocktable_page_by_shift:blocktable blocktable_zero_block_is_null:blocktable
  prefill_minus_one_block:prefill prefill_trusts_cu_seqlens:prefill decode_fixed_tile:decode
  blocktable_stride_by_16:blocktable blocktable_page_by_reciprocal:blocktable
  decode_ends_at_the_table:decode"
PYTHON=${PYTHON:-python3}
folder=$(mktemp -d)
trap 'rm -rf "$folder"' EXIT
reach() {  # module, kernel, path, extra arguments
  local found
  found=$(timeout 420 "$PYTHON" -m diffcheck fuzz --impl "$1:$2" --path "$3" --budget 300s \
    --shrink-time 5 --save-to "$folder/$2" "${@:4}" 2>/dev/null | \
    grep -E "^fuzz: [a-z_]+ after|^fuzz: no failure" | head -n 1)
  printf '%-34s %s\n' "$2" "${found:-fuzz: no result (error or time-out)}"
}
JOBS=${JOBS:-1}
n=0
for entry in $KERNELS fuzz_kernels/blocktable_slot_through_float:blocktable; do
  module=domain_kernels kernel=${entry%%:*}
  [[ "$kernel" == */* ]] && module=${kernel%%/*} kernel=${kernel##*/}
  n=$((n + 1))
  reach "$module" "$kernel" "${entry##*:}" "$@" > "$folder/line-$n" &
  (( n % JOBS == 0 )) && wait
done
wait
cat "$folder"/line-*
