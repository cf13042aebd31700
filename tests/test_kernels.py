"""The reduction kernels against NumPy, for every instruction set this CPU has
(the build carries generic, AVX2 and AVX-512 copies and picks one at start-up):
every dtype and op, lengths around the vector and block widths, and NaN,
infinities, subnormals and rounding ties for the 16-bit floats."""

import ml_dtypes
import numpy as np
import pytest
from collex import _core
from collex._dtypes import CODES, OPS
from conftest import kernel_isas

ISAS = kernel_isas()
LENGTHS = [0, 1, 7, 8, 9, 15, 16, 17, 255, 256, 257, 1000, 4099]
FLOATS = [np.float16, ml_dtypes.bfloat16, np.float32, np.float64]
INTS = [np.int8, np.uint8, np.int32, np.int64]
UFUNC = {"sum": np.add, "prod": np.multiply, "min": np.minimum, "max": np.maximum}


@pytest.fixture(autouse=True)
def restore_isa():
    before, loop = _core.kernel_isa(), _core.kernel_copy_loop()
    yield
    _core._use_kernel_isa(before)
    _core._use_copy_loop(loop)


def addr(a):
    return a.__array_interface__["data"][0]


def operands(dt, n, rng):
    if np.dtype(dt).kind in "iu":
        info = np.iinfo(dt)
        return [rng.integers(info.min, info.max, n, endpoint=True).astype(dt) for _ in range(2)]
    a, b = (
        (rng.standard_normal(n) * 100).astype(np.float32),
        (rng.standard_normal(n) * 100).astype(np.float32),
    )
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-7, 65504.0, 70000.0, 3e38], np.float32)
    a[: min(n, special.size)] = special[: min(n, special.size)]
    b[n // 2 : n // 2 + min(n - n // 2, special.size)] = special[: min(n - n // 2, special.size)]
    with np.errstate(over="ignore"):  # 70000 and 3e38 become inf in float16, on purpose
        return [a.astype(dt), b.astype(dt)]


def reference(a, b, dt, op):
    if np.dtype(dt).kind in "iu":
        return UFUNC[op](a, b).astype(dt)  # wraps around, as the kernels do
    wide = np.float64 if np.dtype(dt) == np.float64 else np.float32
    with np.errstate(all="ignore"):  # overflow to inf is part of what is compared
        return UFUNC[op](a.astype(wide), b.astype(wide)).astype(dt)


def same_bits_or_both_nan(got, want):
    g, w = got.astype(np.float64), want.astype(np.float64)
    return np.array_equal(np.isnan(g), np.isnan(w)) and np.array_equal(g[~np.isnan(g)], w[~np.isnan(w)])


def test_an_instruction_set_is_chosen():
    assert _core.kernel_isa() in ("generic", "avx2", "avx512")
    assert _core.kernel_copy_loop() in ("one-stream", "two-pages")
    assert _core._use_kernel_isa("generic")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dt", FLOATS + INTS, ids=lambda d: np.dtype(d).name)
def test_reduce_matches_numpy(isa, dt):
    assert _core._use_kernel_isa(isa)
    rng = np.random.default_rng(7)
    for op in ("sum", "prod", "min", "max"):
        for n in LENGTHS:
            a, b = operands(dt, n, rng)
            want = reference(a, b, dt, op)
            out = np.empty_like(a)
            _core._kernel_reduce(addr(out), addr(a), addr(b), n, CODES[np.dtype(dt)], OPS[op])
            assert same_bits_or_both_nan(out, want), (isa, op, n, out[:10], want[:10])
            # In place (dst is the first operand), as the algorithms accumulate.
            acc = a.copy()
            _core._kernel_reduce(addr(acc), addr(acc), addr(b), n, CODES[np.dtype(dt)], OPS[op])
            assert same_bits_or_both_nan(acc, want), (isa, op, n, "in place")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dt", [np.float32, np.float64, ml_dtypes.bfloat16], ids=lambda d: np.dtype(d).name)
def test_streaming_reduce_matches_numpy(isa, dt):
    # float32 sums take the streaming-store loop (aligned body, ordinary head and
    # tail: so every misalignment of dst is tried); other dtypes and ops fall back.
    assert _core._use_kernel_isa(isa)
    rng = np.random.default_rng(11)
    for op in ("sum", "max"):
        for n in LENGTHS:
            a, b = operands(dt, n + 16, rng)
            for shift in (0, 1, 3, 7):
                x, y = a[shift : shift + n], b[:n]
                want = reference(x, y, dt, op)
                out = np.zeros(n + 16, dt)[shift : shift + n]
                _core._kernel_reduce_streaming(addr(out), addr(x), addr(y), n, CODES[np.dtype(dt)], OPS[op])
                assert same_bits_or_both_nan(out, want), (isa, op, n, shift)
                acc = x.copy()
                _core._kernel_reduce_streaming(addr(acc), addr(acc), addr(y), n, CODES[np.dtype(dt)], OPS[op])
                assert same_bits_or_both_nan(acc, want), (isa, op, n, shift, "in place")
                # An average's last step: the division fused into the same pass.
                wide = np.float64 if np.dtype(dt) == np.float64 else np.float32
                averaged = (want.astype(wide) / wide(3)).astype(dt)
                _core._kernel_reduce_streaming(
                    addr(out), addr(x), addr(y), n, CODES[np.dtype(dt)], OPS[op], 3.0
                )
                assert same_bits_or_both_nan(out, averaged), (isa, op, n, shift, "divided")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dt", FLOATS, ids=lambda d: np.dtype(d).name)
def test_divide_matches_numpy(isa, dt):
    assert _core._use_kernel_isa(isa)
    rng = np.random.default_rng(3)
    for n in LENGTHS:
        a, _ = operands(dt, n, rng)
        wide = np.float64 if np.dtype(dt) == np.float64 else np.float32
        want = (a.astype(wide) / wide(3)).astype(dt)
        got = a.copy()
        _core._kernel_divide(addr(got), n, CODES[np.dtype(dt)], 3.0)
        assert same_bits_or_both_nan(got, want), (isa, n)


@pytest.mark.parametrize("isa", ISAS)
def test_half_precision_rounding_ties_to_even(isa):
    assert _core._use_kernel_isa(isa)
    # 1 + 2^-11 lies halfway between two float16 values; 1 + 3*2^-11 too: ties go to even.
    for dt, ulp in ((np.float16, 2.0**-10), (ml_dtypes.bfloat16, 2.0**-7)):
        a = np.array([1.0, 1.0, 1.0, -1.0] * 5, np.float32)
        b = np.array([ulp / 2, 3 * ulp / 2, ulp / 4, -ulp / 2] * 5, np.float32)
        # a and b are exact in dt only for a; the sum is formed in float32 and rounded once.
        a16, b16 = a.astype(dt), b.astype(dt)
        out = np.empty_like(a16)
        _core._kernel_reduce(addr(out), addr(a16), addr(b16), a.size, CODES[np.dtype(dt)], OPS["sum"])
        want = (a16.astype(np.float32) + b16.astype(np.float32)).astype(dt)
        assert np.array_equal(out.astype(np.float32), want.astype(np.float32)), (isa, dt, out, want)


def assert_copies_exactly(isa: str, sizes: list[int], seed: int, streaming: bool) -> None:
    """Each size copied from an odd offset to another odd offset, with a guard on
    either side of the destination that must stay untouched."""
    rng = np.random.default_rng(seed)
    for nbytes in sizes:
        src = rng.integers(0, 256, nbytes + 8, dtype=np.uint8)
        dst = np.zeros(nbytes + 16, np.uint8)
        _core._kernel_copy_result(addr(dst) + 5, addr(src) + 3, nbytes, streaming=streaming)
        assert np.array_equal(dst[5 : 5 + nbytes], src[3 : 3 + nbytes]), (isa, nbytes)
        assert not dst[:5].any() and not dst[5 + nbytes :].any(), (isa, nbytes)


@pytest.mark.parametrize("loop", ["one-stream", "two-pages"])
@pytest.mark.parametrize("isa", ISAS)
def test_copy_of_results_is_exact_at_any_alignment(isa, loop):
    # From 8 MiB on the copy streams (aligned body, in one stream or two pages
    # at a time up to the last whole pair, then one stream; ordinary head and
    # tail); below it, unless streaming is asked for, it is memcpy.
    assert _core._use_kernel_isa(isa)
    assert _core._use_copy_loop(loop)
    assert_copies_exactly(
        isa, [(16 << 20) - 1, (16 << 20) + 97, (8 << 20) + 4096 + 33, 1000], 7, streaming=False
    )


@pytest.mark.parametrize("loop", ["one-stream", "two-pages"])
@pytest.mark.parametrize("isa", ISAS)
def test_streamed_copy_is_exact_on_either_side_of_the_two_page_loop(isa, loop):
    # Copies that stream by choice (staged writes, chosen result stores) may be
    # small: one stream below 16 KiB, two pages at a time from there where that
    # loop is in use.
    assert _core._use_kernel_isa(isa)
    assert _core._use_copy_loop(loop)
    sizes = [100, 4096 + 7, (16 << 10) - 1, (16 << 10) + 4096 + 33, (1 << 20) + 8192 + 5]
    assert_copies_exactly(isa, sizes, 8, streaming=True)
