"""How many torch calls one full memory-safety check makes, and where: a proxy, on any machine,
for what a check costs a GPU's host (each torch call is a dispatch of 15-35 us there; the
kernels themselves take microseconds).

    python3 scripts/count_check_ops.py [decode|mtp] [rows] [k]

Runs the check as a GPU runs it by default (four fillings, instrumented kernels, no
interpreter sandbox) through the Triton interpreter, counts every torch call under a
dispatch mode, and groups them by diffcheck's function that made them. The interpreter's own
calls (its launch copies arguments with torch) are counted apart: a GPU makes none.
"""

import collections
import os
import sys
import traceback

os.environ.setdefault("TRITON_INTERPRET", "1")

if __name__ == "__main__":
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from diffcheck.bench import bench_case
    from diffcheck.impls import builtin
    from diffcheck.job import Job
    from diffcheck.modes import Eager
    from diffcheck.runner import run_job
    from diffcheck.settings import RunSettings

    path = sys.argv[1] if len(sys.argv) > 1 else "decode"
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    k = int(sys.argv[3]) if len(sys.argv) > 3 else 256

    class Where(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.by = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            ours = [f for f in traceback.extract_stack()[:-1] if "/diffcheck/" in f.filename]
            last = ours[-1] if ours else None
            where = (f"{os.path.basename(last.filename)}:{last.name}" if last else "elsewhere")
            if any(f.name == "launched" for f in ours[-2:]):
                where = "the interpreter's launch (none on a GPU)"
            self.by[where] += 1
            return func(*args, **(kwargs or {}))

    case = bench_case(path, "4k", rows, k)
    settings = RunSettings(torch.device("cpu"), "ops", 0, isolation="none",
                           interpreter_check=False, instrument=True, fillings=4)
    job = Job(case, builtin()[f"{path}:guarded"].described(), Eager())
    (first,) = run_job(job, settings)  # compiles, uploads, computes the reference once
    for reused in (False, True):
        if not reused:
            settings.forget_references()
        with Where() as seen:
            run_job(job, settings)
        on_gpu = sum(n for w, n in seen.by.items() if not w.startswith("the interpreter"))
        print(f"{path} {rows}x{k}, reference {'reused' if reused else 'computed'}: "
              f"{sum(seen.by.values())} torch calls, {on_gpu} of them a GPU's host would make "
              f"(status {first.row.status})")
        for where, count in seen.by.most_common(14):
            print(f"  {count:5d}  {where}")
