"""The BLAS wrappers against NumPy: both dtypes, both transposes, GEMM and the one-row GEMV path."""
import numpy as np
import pytest
from conftest import RTOL

from fastbptt._blas_hooks import gemm_hook


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m,n,k", [(5, 7, 3), (1, 7, 3), (1, 1, 1), (4, 1, 6), (3, 4, 0)])
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (0.5, 1.0), (-2.0, 0.25)])
def test_gemm_matches_numpy(dtype, trans_a, trans_b, m, n, k, alpha, beta):
    rng = np.random.default_rng(m * 100 + n * 10 + k)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    c = rng.standard_normal((m, n)).astype(dtype)
    if beta == 0:
        c[...] = np.nan  # beta == 0 must overwrite, never read
    expected = alpha * ((a.T if trans_a else a) @ (b.T if trans_b else b))
    if beta != 0:
        expected = expected + beta * c
    gemm_hook(trans_a, trans_b, alpha, a, b, beta, c)
    np.testing.assert_allclose(c, expected, rtol=RTOL[dtype] * 10, atol=RTOL[dtype] * 10)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("rows", [1, 2, 3, 7, 100])
def test_products_over_all_steps_in_blocks_of_rows(dtype, rows):
    """The products hoisted out of the loops run in blocks of rows when they are very large
    (src/_hoisted.pxd; Ctrl-C is looked for between blocks): every block size, remainders
    included, gives NumPy's product, in both builds."""
    from fastbptt._kernels import variants
    rng = np.random.default_rng(rows)
    m, n, k = 7, 5, 4
    for hooks in variants("_blas_hooks"):
        for trans_b in (False, True):
            a = rng.standard_normal((m, k)).astype(dtype)
            b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
            c = rng.standard_normal((m, n)).astype(dtype)
            expected = 0.5 * a @ (b.T if trans_b else b) + 2.0 * c
            hooks.rows_hook(trans_b, rows, 0.5, a, b, 2.0, c)
            np.testing.assert_allclose(c, expected, rtol=RTOL[dtype] * 10, atol=RTOL[dtype] * 10)
        a = rng.standard_normal((m, k)).astype(dtype)        # the rows: m of (m, k), (m, n)
        b = rng.standard_normal((m, n)).astype(dtype)
        c = rng.standard_normal((k, n)).astype(dtype)
        expected = c + 0.5 * a.T @ b
        hooks.sum_hook(rows, 0.5, a, b, c)
        np.testing.assert_allclose(c, expected, rtol=RTOL[dtype] * 10, atol=RTOL[dtype] * 10)


def test_blocks_of_rows_are_large():
    """One block below 2**30 multiply-adds (every product of the benchmark cases is one BLAS
    call), and blocks of at most that above it."""
    from fastbptt._blas_hooks import BLOCK, block_rows_hook
    assert BLOCK == 2**30
    assert block_rows_hook(6400, 256 * 512) == 6400                  # case L, the RNN
    assert block_rows_hook(10**6, 65 * 100) == 2**30 // (65 * 100)
    assert block_rows_hook(10, 2.0**40) == 1
