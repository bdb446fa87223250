"""Run as a script on a GPU (a fresh process: the test suite's own process imports the kernels
through the Triton interpreter). The captured check counts nothing for correct kernels over
generated cases of one shape, and something for a kernel the full check fails."""

import numpy as np
import torch

from diffcheck.fastcheck import CapturedCheck
from diffcheck.fixtures.decode import decode_batch
from diffcheck.fixtures.layouts import Layout
from diffcheck.impls import builtin
from diffcheck.runner import RunSettings


def main() -> None:
    settings = RunSettings(torch.device("cuda"), "gpu", 0, isolation="none")
    rng = np.random.default_rng(0)
    cases = [Layout(f"c{i}", "", 2048, decode_batch([int(c) for c in rng.integers(
        0, 9000, 64)], shuffled=True, oddities=("minus_one", "beyond", "negative")))
        .case("decode", "gpu", i, 0) for i in range(4)]
    for name in ("decode:guarded", "decode:pid"):
        check = CapturedCheck(cases[0], builtin()[name].described(), settings)
        for case in cases:
            counts = check.run(case)
            assert not any(counts.values()), (name, case.case_id, counts)
    unguarded = CapturedCheck(cases[0], builtin()["decode:unguarded"].described(), settings)
    counts = unguarded.run(cases[1])
    assert any(counts.values()), counts
    print("captured check agrees:", counts)


if __name__ == "__main__":
    main()
