"""The rows behind the GPU parity test: every broken kernel whose CPU status is oob_read and
every unguarded fixture, over the suites that show their reads.

The GPU machines' numpy is too new for their triton's interpreter, so the CPU side is kept
in tests/cpu_reads.csv: test_plausible.py checks that file against a CPU run (so it is never
stale) and test_gpu.py compares the GPU's statuses with it. Regenerate it with
``python tests/parity.py``.
"""

import csv
import os
import sys
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, str(Path(__file__).parent))

CPU_READS = Path(__file__).with_name("cpu_reads.csv")
FIELDS = ("implementation", "case_id", "status", "wild", "buffers")
#: kernels whose reads no red-zone filling shows (tests/bounded_reads.py): the instrumented
#: kernel alone sees them on a GPU
BOUNDED = {"decode_peeks_past_kv_indptr": ("smoke", "edge"),
           "mtp_reads_before_kv_indptr": ("domain", "stale")}


def parity_jobs():
    """[(implementation, cases)] of the parity rows."""
    from conftest import make_impl, suite_cases
    from test_broken_kernels import EXPECTED, RUN_WITH

    from diffcheck.impls import builtin
    from diffcheck.status import Status

    chosen = [(make_impl(f"{n.split('_')[0]}:{n}", f"broken_kernels:{n}"),
               RUN_WITH.get(n, {}).get("suites", ("smoke", "edge")))
              for n, (status, _) in EXPECTED.items() if status == Status.OOB_READ]
    chosen += [(i, ("smoke", "edge", "stale")) for i in builtin().values()
               if i.name.endswith(":unguarded")]
    chosen += [(make_impl(f"{n.split('_')[0]}:{n}", f"bounded_reads:{n}"), suites)
               for n, suites in BOUNDED.items()]
    return [(impl, suite_cases(impl.path, *suites)) for impl, suites in chosen]


def read_buffers(findings) -> str:
    """The buffers an outcome's out-of-bounds read finding names, space-separated."""
    from diffcheck.status import Status

    return " ".join(sorted({e.buffer for f in findings if f.kind == Status.OOB_READ
                            for e in f.examples} | {f.buffer for f in findings
                                                    if f.kind == Status.OOB_READ}))


def same_buffer(path: str, theirs: str, mine: str) -> bool:
    """Two read findings name the same buffer: a name in common, or one side names a tensor
    the kernel allocated itself (its parameter's name, e.g. ``out_ptr``): which of that and a
    staged buffer is nearest a wild address depends on where the allocator put it."""
    from diffcheck.paths import get_path

    staged = {*get_path(path).names, "out"}
    a, b = set(theirs.split()), set(mine.split())
    return bool(a & b) or bool((a | b) - staged)


def cpu_reads() -> list[dict]:
    """The CPU sandbox's oob_read rows of the parity jobs (wild: far from every tensor;
    buffers: those its read finding names)."""
    from conftest import CPU

    from diffcheck.executors import run_all
    from diffcheck.job import Job
    from diffcheck.modes import Eager
    from diffcheck.settings import RunSettings

    found = []
    settings = RunSettings(CPU, "test", 0, None, True, 2, 60.0, "none")

    def keep(outcome) -> None:
        row = outcome.row
        if row.status == "oob_read":
            wild = "a wild address" in row.detail
            # a wild address names whatever tensor the allocator put nearest: not recorded
            found.append({"implementation": row.implementation, "case_id": row.case_id,
                          "status": row.status, "wild": str(wild),
                          "buffers": "" if wild else read_buffers(outcome.findings)})

    for impl, cases in parity_jobs():
        run_all([Job(c, impl, Eager()) for c in cases if c.path == impl.path], settings, keep)
    return found


def recorded() -> list[dict]:
    with open(CPU_READS, newline="") as f:
        return list(csv.DictReader(f))


if __name__ == "__main__":
    rows = cpu_reads()
    with open(CPU_READS, "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"{CPU_READS}: {len(rows)} rows")
