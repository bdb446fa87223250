#!/usr/bin/env bash
# Run on a GPU machine from the repository root: `diffcheck bench`, the launch-shape sweep, a
# profile of one memory-safety check and the timed production compare. Output in ${OUT:-gpu-out}/.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
unset TRITON_INTERPRET
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
timeout 300 python3 -m diffcheck bench --report "$OUT/bench.csv" 2>&1 | tail -n 60
timeout 300 python3 scripts/profile_check.py decode 4k 10 2>&1 | head -n 70 > "$OUT/profile.txt"
head -n 3 "$OUT/profile.txt"
timeout 420 python3 -m diffcheck bench --sweep --regime 4k --regime 128k --repeats 20 \
  --report "$OUT/sweep.csv" > "$OUT/sweep.txt" 2>&1; echo "sweep rc $?"
/usr/bin/time -f "wall %e s" timeout 300 python3 -m diffcheck compare --device cuda \
  --mode all --suite production --report "$OUT/production.csv" 2>&1 | tail -n 8
