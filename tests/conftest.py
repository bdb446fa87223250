"""Tests run on the CPU through the Triton interpreter; set it up before triton is imported."""

import dataclasses
import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from diffcheck import backend  # noqa: E402
from diffcheck.errors import DiffcheckError  # noqa: E402
from diffcheck.executors import run_all  # noqa: E402
from diffcheck.impls import Implementation  # noqa: E402
from diffcheck.job import Job  # noqa: E402
from diffcheck.modes import Eager  # noqa: E402
from diffcheck.selection import build_suites  # noqa: E402
from diffcheck.settings import RunSettings  # noqa: E402

CPU = torch.device("cpu")
try:
    backend.prepare(CPU)
    INTERPRETER_PROBLEM = ""
except DiffcheckError as e:  # e.g. a GPU image whose numpy is too new for the interpreter
    INTERPRETER_PROBLEM = str(e)


def pytest_collection_modifyitems(config, items):
    """The minutes-long `slow` runs first, so that under xdist (`-n 2`) the other worker runs
    everything else meanwhile instead of waiting for it at the end. Without a working
    interpreter only the `cuda` tests can run; skip the rest, saying why."""
    items.sort(key=lambda item: "slow" not in item.keywords)  # stable: otherwise as collected
    if INTERPRETER_PROBLEM:
        skip = pytest.mark.skip(reason=f"Triton interpreter unusable: {INTERPRETER_PROBLEM}")
        for item in items:
            if "cuda" not in item.keywords:
                item.add_marker(skip)


def slow_when(values, heavy, ids=None):
    """Parameters, those in ``heavy`` marked slow: minutes-long on the interpreter and
    independent of the triton version, so CI's engine environment skips them."""
    return [pytest.param(v, marks=pytest.mark.slow, id=ids(v) if ids else None)
            if (ids(v) if ids else v) in heavy else
            pytest.param(v, id=ids(v) if ids else None) for v in values]


def suite_cases(path: str, *suites: str, fill: int | None = None, seed: int = 0):
    return build_suites([path], list(suites), seed, fill)


def run_cases(impl: Implementation, cases, fill_override=None, interpreter_check=True,
              fillings=2, timeout=60.0, isolation="none"):
    """Run ``impl`` eagerly over ``cases`` on the CPU; one ReportRow per case."""
    settings = RunSettings(CPU, "test", 0, fill_override, interpreter_check, fillings, timeout,
                           isolation)
    return run_all([Job(c, impl, Eager()) for c in cases if c.path == impl.path], settings)


def make_impl(name: str, target: str, safe: bool = False, accepts_fill: bool = True):
    """A test kernel as an outside implementation, described from its signature (without
    ``fill`` among its keywords when ``accepts_fill`` is False)."""
    impl = Implementation(name, target, safe, "test kernel", outside=True).described()
    if not accepts_fill:
        impl = dataclasses.replace(impl, keywords=(impl.keywords or frozenset()) - {"fill"})
    return impl


@pytest.fixture
def tmp_case_dir(tmp_path):
    return tmp_path
