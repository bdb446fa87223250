# Sourced by the GPU scripts, from the repository root: $OUT made, this checkout first on
# PYTHONPATH, compiled kernels (no interpreter), carried wheels (.whl: pytest, hypothesis)
# installed when the machine lacks them, and the versions printed into $OUT/versions.txt.
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
if ! python3 -c "import pytest, hypothesis" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
python3 - <<'PY' | tee "$OUT/versions.txt"
import numpy, pandas, torch, triton, typer
print("torch", torch.__version__, "triton", triton.__version__, "numpy", numpy.__version__,
      "pandas", pandas.__version__, "typer", typer.__version__)
print("device", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
PY
