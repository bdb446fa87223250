"""The pytest plugin, as an engine uses it: a repository with its own `kernels` package and
its own Triton kernel (imported by its test module before diffcheck sets anything up) gets
one pytest item per report row; failures name status, finding and reproduce command; -k, -x,
--lf and xdist behave as usual."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ENGINE_OPS = '''
import torch
import triton
import triton.language as tl


@triton.jit
def _convert(kv_indptr, page_kv_indptr, kv_indices, token_indices, out, stride0, stride1,
             fill, K: tl.constexpr, BLOCK: tl.constexpr, CHECK_CTX: tl.constexpr):
    r = tl.program_id(0)
    kv_start = tl.load(kv_indptr + r)
    ctx = tl.load(kv_indptr + r + 1) - kv_start
    start = tl.load(page_kv_indptr + r)
    length = tl.load(page_kv_indptr + r + 1) - start
    for c0 in range(0, K, BLOCK):
        cols = c0 + tl.arange(0, BLOCK)
        inside = cols < length
        p = tl.load(token_indices + r * stride0 + cols * stride1, mask=inside, other=-1)
        valid = inside & (p >= 0)
        if CHECK_CTX:
            valid = valid & (p < ctx)
        slot = tl.load(kv_indices + kv_start + p, mask=valid, other=0)
        tl.store(out + start + cols, tl.where(valid, slot, fill), mask=inside)


def _launch(check_ctx, kv_indptr, page_kv_indptr, kv_indices, token_indices, k, out, fill):
    rows = kv_indptr.shape[0] - 1
    if out is None:
        out = torch.empty(rows * k, dtype=torch.int32, device=kv_indptr.device)
    _convert[(rows,)](kv_indptr, page_kv_indptr, kv_indices, token_indices, out,
                      token_indices.stride(0), token_indices.stride(1), fill, K=k, BLOCK=256,
                      CHECK_CTX=check_ctx)
    return out


def convert(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices, BLOCK_SIZE=1,
            NUM_TOPK_TOKENS=2048, out=None, fill=0):
    return _launch(True, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                   NUM_TOPK_TOKENS, out, fill)


def convert_without_ctx_mask(qo_indptr, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                             BLOCK_SIZE=1, NUM_TOPK_TOKENS=2048, out=None, fill=0):
    return _launch(False, kv_indptr, page_kv_indptr, kv_indices, token_indices,
                   NUM_TOPK_TOKENS, out, fill)
'''

ENGINE_TEST = '''
import pytest

import kernels.ops  # the engine imports its kernels first, as engines' tests do
from diffcheck.pytest_plugin import kernel_test

test_convert = kernel_test("kernels.ops:convert", path="decode", suites=["edge"],
                           modes="eager")


@pytest.mark.diffcheck(impl="kernels.ops:convert_without_ctx_mask", path="decode",
                       suites=["edge"], modes="eager")
def test_convert_without_ctx_mask(diffcheck_row):
    diffcheck_row.assert_passes()
'''


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("engine")
    (root / "kernels").mkdir()
    (root / "kernels" / "__init__.py").write_text("")
    (root / "kernels" / "ops.py").write_text(textwrap.dedent(ENGINE_OPS))
    (root / "tests").mkdir()
    (root / "tests" / "test_ops.py").write_text(textwrap.dedent(ENGINE_TEST))
    return root


def pytest_in(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rf", *args, "tests"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=900)


def counts(output: str) -> dict[str, int]:
    last = output.strip().splitlines()[-1]
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|deselected|error)",
                                                   last)}


def test_one_item_per_row_and_failures_name_status_finding_and_reproduce(engine):
    done = pytest_in(engine, "-p", "no:cacheprovider")
    out = done.stdout
    assert done.returncode == 1, out[-3000:] + done.stderr[-2000:]
    got = counts(out)
    assert got["passed"] >= 13 and got["failed"] >= 1, out[-2000:]
    assert "test_convert[edge/decode-odd-at-ctx-eager] PASSED" not in out  # -q: no per-item
    failed = re.findall(r"FAILED tests/test_ops.py::(\S+)", out)
    assert failed and all(f.startswith("test_convert_without_ctx_mask[edge/") for f in failed)
    assert "test_convert_without_ctx_mask[edge/decode-odd-beyond-eager]" in failed
    assert "diffcheck oob_read" in out or "diffcheck mismatch" in out
    assert "reproduce: diffcheck compare" in out


@pytest.mark.slow  # pytest mechanics, not triton's: once, in the pinned environment
def test_k_x_and_last_failed_select_rows_as_usual(engine):
    picked = pytest_in(engine, "-p", "no:cacheprovider", "-k", "odd-beyond")
    assert counts(picked.stdout) == {"passed": 1, "failed": 1, "deselected": counts(
        picked.stdout)["deselected"]}, picked.stdout[-2000:]
    stopped = pytest_in(engine, "-p", "no:cacheprovider", "-x", "-k", "without_ctx_mask")
    assert counts(stopped.stdout).get("failed") == 1, stopped.stdout[-2000:]
    first = pytest_in(engine)  # records the failures for --lf
    again = pytest_in(engine, "--lf")
    assert counts(again.stdout)["failed"] == counts(first.stdout)["failed"]
    assert "passed" not in counts(again.stdout), again.stdout[-2000:]


@pytest.mark.slow  # pytest mechanics, not triton's: once, in the pinned environment
def test_xdist_spreads_the_rows_over_workers(engine):
    pytest.importorskip("xdist")
    done = pytest_in(engine, "-p", "no:cacheprovider", "-n", "2")
    serial = pytest_in(engine, "-p", "no:cacheprovider")
    assert counts(done.stdout) == counts(serial.stdout), done.stdout[-2000:]


def test_a_marker_without_impl_is_a_usage_error(engine, tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_bad.py").write_text(
        "import pytest\n\n\n@pytest.mark.diffcheck(path='decode')\n"
        "def test_bad(diffcheck_row):\n    diffcheck_row.assert_passes()\n")
    done = pytest_in(tmp_path, "-p", "no:cacheprovider")
    assert done.returncode != 0 and "needs impl= and path=" in done.stdout + done.stderr


def test_the_api_says_why_a_kernel_imported_before_the_interpreter_cannot_run_here(tmp_path):
    """Called in-process after the kernel's module was imported without TRITON_INTERPRET,
    the API used to fail every row with "0 active drivers"; it now says what to do, and the
    default isolation runs the kernel in fresh workers instead."""
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "__init__.py").write_text("")
    (tmp_path / "kernels" / "ops.py").write_text(textwrap.dedent(ENGINE_OPS))
    script = textwrap.dedent('''
        import kernels.ops
        from diffcheck.api import check
        from diffcheck.errors import UsageError

        if __name__ == "__main__":
            try:
                check("kernels.ops:convert", path="decode", suites=["edge"], modes="eager",
                      isolation="none")
            except UsageError as e:
                print("REFUSED:", e)
            report = check("kernels.ops:convert", path="decode", suites=["edge"],
                           modes="eager")
            print("STATUSES:", sorted(set(report["status"])))
    ''')
    (tmp_path / "run.py").write_text(script)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "run.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "REFUSED: decode:kernels.ops:convert: its module was imported before " \
           "TRITON_INTERPRET=1" in done.stdout
    assert "STATUSES: ['pass']" in done.stdout


def test_an_implementation_that_ends_its_process_at_import_fails_the_session(tmp_path):
    """os._exit(0) while importing the implementation: a collection error naming it (pytest
    then stops the session, as for any collection error), never a green exit 0."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "exits_at_import.py").write_text("import os\nos._exit(0)\n")
    (tmp_path / "tests" / "test_gate.py").write_text(textwrap.dedent('''
        import pytest

        @pytest.mark.diffcheck(impl="exits_at_import.py:convert", path="decode",
                               suites=["edge"], modes="eager")
        def test_kernel(diffcheck_row):
            diffcheck_row.assert_passes()
        '''))
    (tmp_path / "tests" / "test_plain.py").write_text("def test_fails():\n    assert 1 == 2\n")
    done = pytest_in(tmp_path, "-p", "no:cacheprovider")
    out = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.INTERRUPTED, out[-3000:]
    assert "does not import (it ended its process with exit status 0" in out, out[-3000:]
    assert "1 error during collection" in out
