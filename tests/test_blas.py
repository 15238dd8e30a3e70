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
