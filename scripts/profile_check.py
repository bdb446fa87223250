"""Where one memory-safety check of a production-shaped case spends its time.

    python3 scripts/profile_check.py [decode|mtp] [4k|32k|128k] [repeats]

Times ``run_job`` (both red-zone fillings, the reference, the comparison) on a case built by
`diffcheck bench`, then prints a cProfile of the same checks, heaviest cumulative first.
"""

import cProfile
import pstats
import sys
import time

if __name__ == "__main__":
    from diffcheck import backend

    path = sys.argv[1] if len(sys.argv) > 1 else "decode"
    regime = sys.argv[2] if len(sys.argv) > 2 else "4k"
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    device = backend.resolve("auto")
    backend.prepare(device)

    from diffcheck.bench import bench_case
    from diffcheck.impls import builtin
    from diffcheck.job import Job
    from diffcheck.modes import Eager
    from diffcheck.runner import run_job
    from diffcheck.settings import RunSettings

    case = bench_case(path, regime, 512, 2048)
    settings = RunSettings(device, "profile", 0, isolation="none")
    job = Job(case, builtin()[f"{path}:guarded"].described(), Eager())
    (first,) = run_job(job, settings)
    print(f"{path} {regime} on {backend.describe(device)}: status {first.row.status}, "
          f"{first.row.elements_checked} elements checked")

    def checks() -> float:
        began = time.perf_counter()
        for _ in range(repeats):
            settings._references.clear()
            run_job(job, settings)
        backend.synchronize(device)
        return (time.perf_counter() - began) / repeats * 1e3

    print(f"one check: {checks():.2f} ms (mean of {repeats})")
    profile = cProfile.Profile()
    profile.enable()
    checks()
    profile.disable()
    pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
