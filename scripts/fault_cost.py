"""What faults cost a run: a kernel that faults the device (SIGSEGV on the CPU) on every other
row, ROWS rows in worker processes; prints the wall time and the part spent starting workers.

    python3 scripts/fault_cost.py [rows] [cpu|cuda]

Issue 23's measure: under 10% of the run replacing workers. From the repository root (the
faulting kernel is tests/broken_kernels.py's decode_faults_on_k512).
"""

import os
import sys
import time

if __name__ == "__main__":
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    device = sys.argv[2] if len(sys.argv) > 2 else "cpu"
    if device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    import torch

    from diffcheck.executors import run_all
    from diffcheck.fixtures.decode import decode_batch
    from diffcheck.fixtures.layouts import Layout
    from diffcheck.impls import Implementation
    from diffcheck.job import Job
    from diffcheck.modes import Eager
    from diffcheck.settings import RunSettings
    from diffcheck.worker import use_fork_server

    use_fork_server()  # as the CLI does

    impl = Implementation("decode:faults-on-k512", "broken_kernels:decode_faults_on_k512",
                          False, "faults at K=512", outside=True).described()
    faulting = Layout("k512", "", 512, decode_batch([300, 17])).case("decode", "cost", 0, 0)
    passing = Layout("k256", "", 256, decode_batch([300, 17])).case("decode", "cost", 0, 0)
    jobs = [Job(faulting if i % 2 else passing, impl, Eager()) for i in range(rows)]
    settings = RunSettings(torch.device(device), "fault-cost", 0, interpreter_check=False,
                           isolation="process", workers=1)
    starts: list[float] = []
    began = time.perf_counter()
    found = run_all(jobs, settings,
                    lambda o: starts.append((o.timing or {}).get("worker_start", 0.0)))
    wall = time.perf_counter() - began
    faults = sum(r.status == "fault" for r in found)
    replacing = sum(starts[1:])  # the first row's is the run's first start, no replacement
    print(f"{rows} rows on {device}, {faults} faults: {wall:.1f} s wall, first start "
          f"{starts[0]:.1f} s, replacing workers {replacing:.1f} s "
          f"({100 * replacing / wall:.0f}%), {wall / rows * 1e3:.0f} ms a row")
