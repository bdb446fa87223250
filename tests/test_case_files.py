"""Case files: round trip, and one clear line for every way a file can be wrong."""

import pickle

import numpy as np
import pytest
import torch
from conftest import suite_cases

from diffcheck.case import Case
from diffcheck.casefile import load_case, save_case
from diffcheck.errors import CaseFileError


@pytest.mark.parametrize("path", ["decode", "mtp"])
def test_every_suite_case_round_trips(path, tmp_path):
    for case in suite_cases(path, "smoke", "edge", fill=-1):
        loaded = load_case(save_case(case, tmp_path / f"{case.name}.npz"))
        assert (loaded.path, loaded.name, loaded.suite, loaded.k, loaded.fill, loaded.seed) == (
            case.path, case.name, case.suite, case.k, case.fill, case.seed)
        assert loaded.description == case.description and loaded.columns == case.columns
        for name, tensor in case.kernel_inputs().items():
            got = loaded.kernel_inputs()[name]
            assert torch.equal(got, tensor) and got.stride() == tensor.stride()
        assert loaded.well_formed


def stale_qo_case():
    """A malformed decode case: qo_indptr left prefill-shaped, as in the GLM-5.2 failure."""
    fresh = suite_cases("decode", "smoke")[0]
    inputs = dict(fresh.inputs)
    rows = inputs["qo_indptr"].numel() - 1
    inputs["qo_indptr"] = torch.tensor([0] + [rows + 3] * rows, dtype=torch.int32)
    return Case("decode", "stale-qo", fresh.k, 0, 1, "stale qo_indptr", inputs,
                dict(fresh.columns), intended=dict(fresh.inputs), suite="stale")


def test_malformed_case_keeps_its_intended_batch(tmp_path):
    case = stale_qo_case()
    loaded = load_case(save_case(case, tmp_path / "stale.npz"))
    assert not loaded.well_formed
    assert torch.equal(loaded.inputs["qo_indptr"], case.inputs["qo_indptr"])
    assert torch.equal(loaded.intended["qo_indptr"], case.intended["qo_indptr"])


def write(tmp_path, **arrays):
    target = tmp_path / "case.npz"
    np.savez(target, **arrays)
    return target


def valid_arrays():
    case = suite_cases("decode", "smoke")[0]
    arrays = {f"inputs/{n}": t.numpy() for n, t in case.inputs.items()}
    arrays["meta"] = np.array('{"path": "decode", "k": 256, "fill": 0, "name": "x"}')
    return arrays


def error_of(path) -> str:
    with pytest.raises(CaseFileError) as info:
        load_case(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"case file {path}: ")
    return message


def test_missing_file(tmp_path):
    assert "no such file" in error_of(tmp_path / "nope.npz")


def test_not_an_archive(tmp_path):
    target = tmp_path / "junk.npz"
    target.write_bytes(b"definitely not a zip archive")
    assert "not a readable .npz archive" in error_of(target)


def test_wrong_dtype_says_how_to_fix(tmp_path):
    arrays = valid_arrays()
    arrays["inputs/kv_indptr"] = arrays["inputs/kv_indptr"].astype(np.int64)
    assert "kv_indptr is int64, expected int32 (save with .to(torch.int32))" in error_of(
        write(tmp_path, **arrays))


def test_missing_tensor(tmp_path):
    arrays = valid_arrays()
    del arrays["inputs/kv_indices"]
    assert "inputs lack kv_indices" in error_of(write(tmp_path, **arrays))


def test_wrong_shape(tmp_path):
    arrays = valid_arrays()
    arrays["inputs/token_indices"] = arrays["inputs/token_indices"].reshape(-1)
    assert "token_indices has 1 dimensions, expected 2" in error_of(write(tmp_path, **arrays))


def test_indptr_that_decreases(tmp_path):
    arrays = valid_arrays()
    bad = arrays["inputs/kv_indptr"].copy()
    bad[3] = bad[2] - 1
    arrays["inputs/kv_indptr"] = bad
    assert "kv_indptr decreases at entry 3" in error_of(write(tmp_path, **arrays))


def test_missing_or_broken_meta(tmp_path):
    arrays = valid_arrays()
    del arrays["meta"]
    assert "no 'meta' entry" in error_of(write(tmp_path, **arrays))
    arrays["meta"] = np.array("{not json")
    assert "'meta' is not JSON" in error_of(write(tmp_path, **arrays))
    arrays["meta"] = np.array('{"path": "pefill", "k": 4, "fill": 0}')
    assert "unknown path 'pefill'; known: decode, mtp, prefill, blocktable" in error_of(
        write(tmp_path, **arrays))


def test_a_meta_nested_too_deep_is_refused_before_parsing(tmp_path):
    """100,000 '[' would exhaust the JSON parser's recursion (exit 3, a blocked fuzz folder):
    a case-file error like any other, and a fuzz regression folder skips it."""
    from diffcheck.casefile import load_any

    arrays = valid_arrays()
    arrays["meta"] = np.array("[" * 100_000)
    assert "'meta' nests deeper than 32 levels" in error_of(write(tmp_path, **arrays))
    with pytest.raises(CaseFileError, match="nests deeper"):
        load_any(tmp_path / "case.npz")
    # brackets inside strings are text, not nesting
    arrays["meta"] = np.array('{"path": "decode", "k": 4, "fill": 0, "description": "'
                              + "[\\\"" * 50 + '"}')
    assert "nests deeper" not in error_of(write(tmp_path, **arrays))


class Hostile:
    """Unpickling this would create a marker file: loading a case must never unpickle."""

    marker = None

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_loading_never_unpickles(tmp_path):
    Hostile.marker = tmp_path / "pwned"
    arrays = valid_arrays()
    hostile = np.empty(1, dtype=object)
    hostile[0] = Hostile()
    arrays["inputs/kv_indices"] = hostile
    target = tmp_path / "hostile.npz"
    np.savez(target, **arrays)  # np.save pickles object arrays by default
    assert pickle.dumps(Hostile())  # the payload is real
    message = error_of(target)
    assert "kv_indices holds object data, expected int32" in message
    assert not Hostile.marker.exists()


@pytest.mark.parametrize("meta, text", [
    ('{"path": "decode", "k": "256", "fill": 0}', "meta field 'k' is \"256\", expected an integer"),
    ('{"path": "decode", "k": 256, "fill": 0, "seed": 1.5}', "meta field 'seed' is 1.5"),
    ('{"path": "decode", "k": 256, "fill": 0, "columns": [1, 2]}',
     "meta field 'columns' is [1, 2], expected a dict"),
    ('{"path": "decode", "k": 256, "fill": 0, "columns": {"token_indices": "x"}}',
     "maps token_indices to \"x\", expected an integer"),
    ('{"path": "decode", "k": true, "fill": 0}', "meta field 'k' is true"),
    ('{"path": "decode", "k": 256, "fill": 7}', "meta field 'fill' is 7, expected 0"),
    ('{"path": "decode", "k": 256}', "'meta' has no 'fill' field"),
    ('[1, 2]', "'meta' is a JSON list, expected an object"),
    ('{"path": 3, "k": 256, "fill": 0}', "meta field 'path' is 3, expected a str"),
])
def test_meta_of_the_wrong_type_is_named(tmp_path, meta, text):
    arrays = valid_arrays()
    arrays["meta"] = np.array(meta)
    assert text in error_of(write(tmp_path, **arrays))


def test_a_case_too_large_is_refused_before_it_is_read(tmp_path, monkeypatch):
    arrays = valid_arrays()
    target = tmp_path / "big.npz"
    np.savez_compressed(target, **arrays)
    monkeypatch.setenv("DIFFCHECK_MAX_ELEMENTS", "1000")
    assert "declares more than 1000 elements" in error_of(target)
    assert "raise DIFFCHECK_MAX_ELEMENTS" in error_of(target)


def test_a_forged_header_cannot_make_a_small_file_huge(tmp_path):
    # A few bytes that declare 2^31 elements: refused from the header, nothing allocated.
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<i4", "fortran_order": False, "shape": (1 << 31,)})
    target = tmp_path / "bomb.npz"
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr("meta.npy", _npy(np.array('{"path": "decode", "k": 4, "fill": 0}')))
        archive.writestr("inputs/kv_indices.npy", b"\x93NUMPY\x01\x00" + header.getvalue()[8:])
    assert target.stat().st_size < 4096
    assert "declares more than" in error_of(target)


def test_a_member_twice_or_a_negative_shape_is_refused(tmp_path, monkeypatch):
    """The same member twice (a header declaring a negative size, then a real array): the
    size check must not be fooled into loading it."""
    import warnings
    import zipfile

    monkeypatch.setenv("DIFFCHECK_MAX_ELEMENTS", "1000")
    header = np.lib.format.header_data_from_array_1_0(np.zeros(4, dtype=np.int32))
    header["shape"] = (-(1 << 20),)
    import io

    forged = io.BytesIO()
    np.lib.format.write_array_header_1_0(forged, header)
    target = tmp_path / "twice.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate name
        with zipfile.ZipFile(target, "w") as archive:
            archive.writestr("meta.npy", _npy(np.array('{"path": "decode", "k": 4, "fill": 0}')))
            archive.writestr("inputs/kv_indices.npy", b"\x93NUMPY\x01\x00" +
                             forged.getvalue()[8:])
            archive.writestr("inputs/kv_indices.npy", _npy(np.zeros(5000, dtype=np.int32)))
    message = error_of(target)
    assert "declares the shape" in message or "twice" in message
    single = tmp_path / "negative.npz"
    with zipfile.ZipFile(single, "w") as archive:
        archive.writestr("meta.npy", _npy(np.array('{"path": "decode", "k": 4, "fill": 0}')))
        archive.writestr("inputs/kv_indices.npy", b"\x93NUMPY\x01\x00" + forged.getvalue()[8:])
    assert "declares the shape [-1048576]" in error_of(single)


def test_a_small_file_whose_width_would_stage_gigabytes_is_refused(tmp_path, monkeypatch):
    """No request, a top-k width of 2^22: a few KB compressed, but margins of one top-k row
    around every buffer would take gigabytes (margins stop at 2^20 elements; the check holds
    for any cap); refused from the sizes, before staging."""
    import diffcheck.buffers as buffers

    monkeypatch.setattr(buffers, "MAX_MARGIN", 1 << 30)
    import json
    import resource
    import time

    from diffcheck.casefile import load_case

    width = 1 << 22
    arrays = {"inputs/qo_indptr": np.zeros(1, np.int32), "inputs/kv_indptr": np.zeros(1, np.int32),
              "inputs/page_kv_indptr": np.zeros(1, np.int32),
              "inputs/kv_indices": np.zeros(0, np.int32),
              "inputs/token_indices": np.zeros((1, width), np.int32),
              "meta": np.array(json.dumps({"path": "decode", "k": width, "fill": 0}))}
    target = tmp_path / "wide.npz"
    np.savez_compressed(target, **arrays)
    assert target.stat().st_size < 64 * 1024
    started, before = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CaseFileError, match="would stage .* elements, .* of them margins"):
        load_case(target)
    assert time.monotonic() - started < 10
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 1 << 20  # under 1 GB


def test_margins_stop_at_2_20_elements_whatever_the_width():
    """A top-k buffer whose rows start past 2^31 elements (production-domain) is gigabytes
    wide: margins one row wide around every buffer once killed the GPU worker."""
    from diffcheck.buffers import MAX_MARGIN, MIN_MARGIN, margin_for

    assert margin_for({"t": torch.zeros((1, 1 << 22), dtype=torch.int32)}) == MAX_MARGIN
    assert margin_for({"t": torch.zeros((4, 2048), dtype=torch.int32)}) == 2048
    assert margin_for({"t": torch.zeros(5, dtype=torch.int32)}) == MIN_MARGIN


def _npy(array) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
