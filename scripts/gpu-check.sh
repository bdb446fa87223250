#!/usr/bin/env bash
# Run on a GPU machine from the repository root: versions, the cuda-marked tests, and the CLI
# over every suite with every implementation. Logs and reports go to ${OUT:-gpu-out}/.
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
unset TRITON_INTERPRET
if ! python3 -c "import pytest" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
python3 - <<'PY' | tee "$OUT/versions.txt"
import numpy, pandas, torch, triton, typer
print("torch", torch.__version__, "triton", triton.__version__, "numpy", numpy.__version__,
      "pandas", pandas.__version__, "typer", typer.__version__)
print("device", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
PY
python3 -m pytest -q -m cuda tests/test_gpu.py --durations=10 2>&1 | tee "$OUT/pytest-cuda.log"
for fill in 0 -1; do
  /usr/bin/time -f "wall %e s" python3 -m diffcheck compare --device cuda --suite smoke \
    --suite edge --invalid-fill "$fill" --impl decode:guarded --impl decode:pid \
    --impl decode:unguarded --impl decode:reference --impl mtp:guarded --impl mtp:unguarded \
    --impl mtp:reference --report "$OUT/report-fill$fill.csv" 2>&1 | tail -n 12
done
/usr/bin/time -f "wall %e s" python3 -m diffcheck compare --device cuda --suite stale \
  --impl decode:guarded --impl decode:pid --impl decode:unguarded --impl mtp:guarded \
  --impl mtp:unguarded --report "$OUT/report-stale.csv" --details "$OUT/details-stale.csv" \
  2>&1 | tail -n 12
IMPLS="--impl decode:guarded --impl decode:pid --impl decode:unguarded --impl decode:reference \
  --impl mtp:guarded --impl mtp:unguarded --impl mtp:reference"
/usr/bin/time -f "wall %e s" python3 -m diffcheck compare --device cuda --mode all \
  --suite smoke --suite edge --suite stale --suite glm52 --suite replay $IMPLS \
  --report "$OUT/report-graph.csv" 2>&1 | tail -n 3
/usr/bin/time -f "wall %e s" python3 -m diffcheck compare --device cuda --mode all \
  --suite production --suite production-replay --report "$OUT/report-production.csv" \
  2>&1 | tail -n 25
