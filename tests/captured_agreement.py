"""Run as a script on a GPU (a fresh process: the test suite's own process imports the kernels
through the Triton interpreter). The captured check counts nothing for correct kernels over
cases of one shape, and something for a kernel the full check fails; device-made mutants are
the ones the host rebuilds, bit for bit."""

import numpy as np
import torch

from diffcheck.fastcheck import CapturedCheck, MutantFault
from diffcheck.fixtures.decode import decode_batch
from diffcheck.fixtures.layouts import Layout
from diffcheck.impls import builtin
from diffcheck.mutants import mutant
from diffcheck.settings import RunSettings


def main() -> None:
    settings = RunSettings(torch.device("cuda"), "gpu", 0, isolation="none")
    contexts = [int(c) for c in np.random.default_rng(0).integers(0, 9000, 64)]
    cases = [Layout(f"c{i}", "", 2048, decode_batch(contexts, shuffled=True, oddities=(
        "minus_one", "beyond", "negative"))).case("decode", "gpu", i, 0) for i in range(4)]
    for name in ("decode:guarded", "decode:pid"):
        check = CapturedCheck(cases[0], builtin()[name].described(), settings)
        for case in cases:
            counts = check.run(case)
            assert not any(counts.values()), (name, case.case_id, counts)
    unguarded = CapturedCheck(cases[0], builtin()["decode:unguarded"].described(), settings)
    counts = unguarded.run(cases[1])
    assert any(counts.values()), counts
    print("captured check agrees:", counts)
    clean = Layout("clean", "", 2048, decode_batch(contexts)).case("decode", "gpu", 9, 0)
    guarded = CapturedCheck(clean, builtin()["decode:guarded"].described(), settings, True)
    assert guarded.first_failing_mutant(clean, 300) is None
    rebuilt = mutant(clean, 300)
    for name, source in guarded.sources.items():
        assert torch.equal(source.cpu(), rebuilt.inputs[name]), name
    unguarded = CapturedCheck(clean, builtin()["decode:unguarded"].described(), settings, True)
    assert not any(unguarded.run(clean).values())
    try:
        found = unguarded.first_failing_mutant(clean, 64)
    except MutantFault as fault:  # a far position read unguarded may fault: named
        found = f"{fault.index} (faulted the device)"
    assert found is not None
    print("unguarded: first failing device mutant", found)


if __name__ == "__main__":
    main()
