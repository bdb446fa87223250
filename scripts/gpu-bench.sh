#!/usr/bin/env bash
# Run on a GPU machine from the repository root: `diffcheck bench` (shuffled and ascending
# positions), the launch-shape sweep, a profile of one memory-safety check and the timed
# production compare (all safe implementations, modes all). Output in ${OUT:-gpu-out}/.
# SWEEP=0 skips the sweep (a few minutes, mostly compiling).
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
unset TRITON_INTERPRET
python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.cuda.get_device_name())"
if [ "${SWEEP:-1}" = 1 ]; then
  timeout 420 python3 -m diffcheck bench --sweep --regime 4k --regime 128k --repeats 20 \
    --report "$OUT/sweep.csv" > "$OUT/sweep.txt" 2>&1; echo "sweep rc $?"
fi
timeout 300 python3 -m diffcheck bench --report "$OUT/bench.csv" > "$OUT/bench.txt" 2>&1
echo "bench rc $?"; grep -v "^bench " "$OUT/bench.txt"
timeout 300 python3 -m diffcheck bench --positions ascending --no-check \
  --report "$OUT/bench-ascending.csv" > "$OUT/bench-ascending.txt" 2>&1
echo "bench ascending rc $?"
timeout 120 python3 scripts/profile_check.py decode 4k 20 > "$OUT/profile.txt" 2>&1
head -n 2 "$OUT/profile.txt"
/usr/bin/time -f "wall %e s" timeout 300 python3 -m diffcheck compare --device cuda \
  --mode all --suite production --suite production-replay \
  --report "$OUT/production.csv" > "$OUT/production.txt" 2>&1
tail -n 3 "$OUT/production.txt"
