"""The vectorized references agree with the loop-by-loop contract on many random batches."""

import numpy as np
import pytest
import torch
from conftest import suite_cases
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import decode_oracle, mtp_oracle

from diffcheck.fixtures.layouts import indptr
from diffcheck.refimpl.decode import decode_reference, decode_violations
from diffcheck.refimpl.mtp import causal_lengths, mtp_reference, mtp_violations


def assert_matches(expected, mask, oracle):
    assert int(mask.sum()) == len(oracle)
    hits = torch.nonzero(mask).flatten().tolist()
    assert sorted(hits) == sorted(oracle)
    got = {i: int(expected[i]) for i in hits}
    assert got == oracle


def i32(values):
    return torch.tensor(values, dtype=torch.int32)


@st.composite
def decode_batches(draw):
    k = draw(st.sampled_from([1, 2, 3, 8, 16]))
    ctx = draw(st.lists(st.sampled_from([0, 1, k - 1, k, k + 1, 3 * k, 50]) | st.integers(0, 40),
                        min_size=0, max_size=6))
    extra_rows, extra_cols = draw(st.integers(0, 2)), draw(st.integers(0, 3))
    fill = draw(st.sampled_from([0, -1]))
    kv_indptr = indptr(ctx)
    n = int(kv_indptr[-1])
    kv_indices = np.array(draw(st.permutations(range(1, n + 1))), dtype=np.int32) * 7
    lengths = [min(c, k) for c in ctx]
    rows = draw(st.lists(st.lists(st.integers(-3, 60), min_size=k + extra_cols,
                                  max_size=k + extra_cols),
                         min_size=len(ctx) + extra_rows, max_size=len(ctx) + extra_rows))
    buffer = i32(rows).reshape(len(ctx) + extra_rows, k + extra_cols)
    return dict(
        qo_indptr=torch.arange(len(ctx) + 1, dtype=torch.int32),
        kv_indptr=i32(kv_indptr), page_kv_indptr=i32(indptr(lengths)),
        kv_indices=torch.from_numpy(kv_indices), token_indices=buffer[:, :k],
    ), k, fill, draw(st.integers(0, 5))


@settings(max_examples=300, deadline=None)
@given(decode_batches())
def test_decode_reference_matches_contract(batch):
    tensors, k, fill, spare = batch
    assert decode_violations(tensors, k) == []
    rows = tensors["kv_indptr"].numel() - 1
    out = torch.empty(rows * k + spare, dtype=torch.int32)
    expected, mask = decode_reference(*tensors.values(), NUM_TOPK_TOKENS=k, out=out, fill=fill)
    assert expected.shape == mask.shape == (out.numel(),)
    oracle = decode_oracle(tensors["kv_indptr"], tensors["page_kv_indptr"],
                           tensors["kv_indices"], tensors["token_indices"], k, fill)
    assert_matches(expected, mask, oracle)


@st.composite
def mtp_batches(draw):
    k = draw(st.sampled_from([1, 2, 4, 16]))
    ctx = draw(st.lists(st.sampled_from([0, 1, 2, k, k + 1, 3 * k]) | st.integers(0, 40),
                        min_size=1, max_size=5))
    q = [draw(st.integers(1, 4)) for _ in ctx]
    seq = [r for r, qr in enumerate(q) for _ in range(qr)]
    if draw(st.booleans()):  # tokens need not be grouped by request
        seq = draw(st.permutations(seq))
    fill = draw(st.sampled_from([0, -1]))
    kv_indptr = indptr(ctx)
    n = int(kv_indptr[-1])
    kv_indices = i32(draw(st.permutations(range(1, n + 1)))) * 3
    lengths = causal_lengths(i32(kv_indptr), torch.tensor(seq, dtype=torch.int64), k)
    extra_cols = draw(st.integers(0, 3))
    rows = draw(st.lists(st.lists(st.integers(-3, 60), min_size=k + extra_cols,
                                  max_size=k + extra_cols), min_size=len(seq), max_size=len(seq)))
    buffer = i32(rows).reshape(len(seq), k + extra_cols)
    return dict(
        sparse_kv_indptr=i32(indptr(lengths.tolist())), token_to_seq_idxs=i32(seq),
        topk_indices=buffer[:, :k], kv_indices=kv_indices, kv_indptr=i32(kv_indptr),
    ), k, fill


@settings(max_examples=300, deadline=None)
@given(mtp_batches())
def test_mtp_reference_matches_contract(batch):
    tensors, k, fill = batch
    assert mtp_violations(tensors, k) == []
    expected, mask = mtp_reference(*tensors.values(), NUM_TOPK_TOKENS=k, fill=fill)
    assert_matches(expected, mask, mtp_oracle(*tensors.values(), k, fill))


@pytest.mark.parametrize("path", ["decode", "mtp"])
@pytest.mark.parametrize("fill", [0, -1])
def test_reference_matches_contract_on_every_suite_case(path, fill):
    for case in suite_cases(path, "smoke", "edge", fill=fill):
        tensors = case.kernel_inputs()
        ref = decode_reference if path == "decode" else mtp_reference
        oracle = decode_oracle if path == "decode" else mtp_oracle
        expected, mask = ref(*tensors.values(), NUM_TOPK_TOKENS=case.k, fill=fill)
        if path == "decode":
            want = oracle(tensors["kv_indptr"], tensors["page_kv_indptr"], tensors["kv_indices"],
                          tensors["token_indices"], case.k, fill)
        else:
            want = oracle(*tensors.values(), case.k, fill)
        assert_matches(expected, mask, want)


def test_reference_reads_strided_views_not_the_buffer_behind_them():
    case = next(c for c in suite_cases("decode", "smoke") if c.name == "decode-strided")
    tensors = case.kernel_inputs()
    assert not tensors["token_indices"].is_contiguous()
    expected, mask = decode_reference(*tensors.values(), NUM_TOPK_TOKENS=case.k)
    contiguous = {n: t.contiguous() for n, t in tensors.items()}
    expected2, mask2 = decode_reference(*contiguous.values(), NUM_TOPK_TOKENS=case.k)
    assert torch.equal(mask, mask2) and torch.equal(expected[mask], expected2[mask2])


def test_violations_name_the_problem():
    case = suite_cases("decode", "smoke")[0]
    tensors = dict(case.kernel_inputs())
    bad = tensors["kv_indptr"].clone()
    bad[2] = int(bad[3]) + 5
    tensors["kv_indptr"] = bad
    problems = decode_violations(tensors, case.k)
    assert problems and "kv_indptr decreases at entry" in problems[0]


def test_scatter_regions_bounds_every_malformed_row_like_a_guarded_kernel():
    # Rows whose slices and regions leave kv_indices or out, at int32's extremes: the folded
    # per-row bounds must agree with an element-by-element check, and nothing may raise.
    # (No two regions overlap: which row wins an overlap is up to the device.)
    from diffcheck.refimpl.regions import scatter_regions

    big, small = 2**31 - 1, -(2**31)
    kv_indices = torch.arange(100, 110, dtype=torch.int32)
    rows = [  # kv_start, kv_end, region_start, region_end
        (0, 10, 20, 24), (-3, 5, 4, 8), (6, 40, 8, 12), (small, big, 12, 16),
        (8, 2, 16, 20), (2, 6, -2, 2), (0, 10, 30, 40), (3, 9, big - 1, big),
        (big, big, small, big), (0, 10, 25, 20),
    ]
    width, num_out = 4, 32
    positions = torch.tensor([[0, 9, -1, 3], [0, 4, 7, 2], [0, 3, 4, 5], [big, small, 0, 1],
                              [0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3],
                              [0, 1, big, small], [1, 1, 1, 1]], dtype=torch.int32)
    ks, ke, rs, re = (torch.tensor(c, dtype=torch.int32) for c in zip(*rows, strict=True))
    expected, mask = scatter_regions(kv_indices, ks, ke, positions, rs, re, num_out, -7)
    want, covered = {}, set()
    for i, (k0, k1, r0, r1) in enumerate(rows):
        for j in range(min(max(r1 - r0, 0), width)):
            dst = r0 + j
            if not 0 <= dst < num_out:
                continue
            p = int(positions[i, j])
            ok = 0 <= p < k1 - k0 and 0 <= k0 + p < kv_indices.numel()
            want[dst] = int(kv_indices[k0 + p]) if ok else -7
            covered.add(dst)
    assert set(mask.nonzero().flatten().tolist()) == covered
    assert {i: int(expected[i]) for i in covered} == want
