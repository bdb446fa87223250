"""The same run prints the same: a fixed compare run's exit code, console output and every
report column but the run id and the times, against tests/golden/ (issue 24: a renovation
must not change what users and their CI read). After a deliberate change of output, rewrite
the file with DIFFCHECK_UPDATE_GOLDEN=1 and review its diff."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).with_name("golden") / "compare-decode.txt"
#: one safe and one unsafe kernel; a clean case, a stale one and a replay scenario; all modes
COMMAND = ["compare", "--path", "decode", "--impl", "decode:guarded", "--impl",
           "decode:unguarded", "--suite", "smoke", "--suite", "stale", "--suite", "glm52",
           "--case", "smoke/decode-shuffled", "--case", "stale/decode-stale-half-update",
           "--case", "glm52/*", "--seed", "0"]
#: what differs between two runs of the same command
VARYING = ["run_id", "elapsed_ms"]


def rendered(tmp_path: Path) -> str:
    report = tmp_path / "report.csv"
    env = {**os.environ, "TRITON_INTERPRET": "1", "COLUMNS": "120"}
    done = subprocess.run([sys.executable, "-m", "diffcheck", *COMMAND, "--report", str(report)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    rows = pd.read_csv(report, keep_default_na=False, dtype=str)
    table = io.StringIO()
    rows.drop(columns=VARYING).to_csv(table, index=False, lineterminator="\n")
    return (f"$ diffcheck {' '.join(COMMAND)}\nexit code: {done.returncode}\n"
            f"columns: {','.join(rows.columns)}\n--- stdout\n{done.stdout}"
            f"--- report (without {', '.join(VARYING)})\n{table.getvalue()}")


def test_a_fixed_run_prints_and_reports_what_it_did_before(tmp_path):
    now = rendered(tmp_path)
    if os.environ.get("DIFFCHECK_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(now)
    assert now == GOLDEN.read_text()
