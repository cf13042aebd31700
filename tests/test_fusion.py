"""The fusion room alone, in one process: bucket assignment and the compression
kernels (for every instruction set this CPU has). The reducer itself runs under
mpirun in test_training.py."""

import ml_dtypes
import numpy as np
import pytest
from collex import _core
from collex._dtypes import CODES
from conftest import kernel_isas

ISAS = kernel_isas()
F32, F64, F16, BF16 = (CODES[np.dtype(t)] for t in (np.float32, np.float64, np.float16, ml_dtypes.bfloat16))
KIB = 1024


@pytest.fixture(autouse=True)
def restore_isa():
    before = _core.kernel_isa()
    yield
    _core._use_kernel_isa(before)


def assign(grads, cap, first_cap):
    return [
        (code, members, offsets) for code, members, offsets in _core._assign_buckets(grads, cap, first_cap)
    ]


def test_buckets_fill_in_reverse_order_up_to_the_cap():
    # Ten float32 gradients of 1 KiB: a first bucket of 2 KiB, then 4 KiB buckets.
    buckets = assign([(256, F32)] * 10, 4 * KIB, 2 * KIB)
    assert [m for _, m, _ in buckets] == [[9, 8], [7, 6, 5, 4], [3, 2, 1, 0]]
    assert all(offsets == [256 * k for k in range(len(offsets))] for _, _, offsets in buckets)


def test_a_gradient_is_never_split():
    # 3 KiB, 10 KiB (over the cap), 1 KiB, 1 KiB, registration order.
    buckets = assign([(768, F32), (2560, F32), (256, F32), (256, F32)], 4 * KIB, 4 * KIB)
    assert [m for _, m, _ in buckets] == [[3, 2], [1], [0]]


def test_one_dtype_per_bucket():
    grads = [(100, F32), (100, F64), (100, F32), (100, F16), (100, F64)]
    buckets = assign(grads, 1 << 20, 1 << 20)
    assert [(code, m) for code, m, _ in buckets] == [(F64, [4, 1]), (F16, [3]), (F32, [2, 0])]


def test_zero_size_and_no_gradients():
    assert assign([], 4 * KIB, KIB) == []
    buckets = assign([(0, F32), (10, F32), (0, F32)], 4 * KIB, KIB)
    assert [m for _, m, _ in buckets] == [[2, 1, 0]]
    assert buckets[0][2] == [0, 0, 10]


def addr(a):
    return 0 if a is None else a.__array_interface__["data"][0]


def compress(values, residual, wire, scale):
    out = np.empty(values.size, np.float16 if wire == F16 else ml_dtypes.bfloat16)
    _core._kernel_compress(addr(out), wire, addr(values), addr(residual), values.size, scale)
    return out


LENGTHS = [0, 1, 7, 8, 9, 255, 256, 257, 1000, 4099]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("wire", [F16, BF16])
def test_compress_rounds_to_nearest_and_keeps_the_residual(isa, n, wire):
    _core._use_kernel_isa(isa)
    rng = np.random.default_rng(n)
    g = (rng.standard_normal(n) * 3).astype(np.float32)
    residual = (rng.standard_normal(n) * 1e-3).astype(np.float32)
    scale = np.float32(8.0 if wire == F16 else 1.0)
    wire_type = np.float16 if wire == F16 else ml_dtypes.bfloat16
    v = g + residual
    expected = (v * scale).astype(wire_type)
    res = residual.copy()
    got = compress(g, res, wire, scale)
    np.testing.assert_array_equal(got.view(np.uint16), expected.view(np.uint16))
    np.testing.assert_array_equal(res, v - expected.astype(np.float32) / scale)
    # Without error feedback the residual is neither read nor written.
    np.testing.assert_array_equal(
        compress(g, None, wire, scale).view(np.uint16), (g * scale).astype(wire_type).view(np.uint16)
    )


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("wire", [F16, BF16])
def test_decompress_scales(isa, wire):
    _core._use_kernel_isa(isa)
    wire_type = np.float16 if wire == F16 else ml_dtypes.bfloat16
    w = np.arange(-500, 500, dtype=np.float32).astype(wire_type)
    out = np.empty(w.size, np.float32)
    _core._kernel_decompress(addr(out), addr(w), wire, w.size, 0.125)
    np.testing.assert_array_equal(out, w.astype(np.float32) * np.float32(0.125))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", LENGTHS)
def test_max_abs(isa, n):
    _core._use_kernel_isa(isa)
    rng = np.random.default_rng(n)
    g = rng.standard_normal(n).astype(np.float32)
    r = rng.standard_normal(n).astype(np.float32)
    expected = float(np.max(np.abs(g + r))) if n else 0.0
    assert _core._kernel_max_abs(addr(g), addr(r), n) == expected
    assert _core._kernel_max_abs(addr(g), 0, n) == (float(np.max(np.abs(g))) if n else 0.0)
    if n:
        g[n // 2] = np.nan
        assert np.isnan(_core._kernel_max_abs(addr(g), addr(r), n))
