"""The per-step products on a packed Wh (src/_packed.h, src/_packed.pxd) and, for up to 4 rows,
on Wh as it is (src/_few.h), against NumPy, in every build: the edges of the 6-row blocks, of
the 16-float / 8-double panels and of the groups of few rows, H = 1, k past one block of
KC = 256, rows of a and c strided as in a batch-major buffer, beta 0, 1 and other."""
import numpy as np
import pytest
from conftest import RTOL

from fastbptt._cpu import has_avx2_fma
from fastbptt._kernels import variants

HOOKS = variants("_blas_hooks")

# (m, n, k): m = N rows (not a multiple of 6, and 1, the fewest), n the
# product's columns (G*H forward, H backward: 1, 9, 17 are not multiples of 8 or 16), k its
# sum (H forward, G*H backward)
SHAPES = [(2, 1, 1), (7, 17, 3), (6, 16, 8), (13, 9, 300), (5, 33, 257), (12, 48, 64),
          (32, 512, 128), (3, 4, 12), (1, 7, 5)]
# rows past the last whole block of 6 (1 to 4: the few-rows kernel, for each block of KC = 256
# of k; 5: the 6-row kernel), with a last panel partly filled
SHAPES += [(8, 100, 64), (9, 17, 520), (10, 33, 300), (64, 40, 257), (11, 24, 9)]
# the few-rows kernel (m <= 4): groups of 4, 2 or 1 panels and the narrower last group, a last
# panel partly filled, n = G*H of H = 1, 3, 17, 100
SHAPES += [(m, n, k) for m in (1, 2, 3, 4) for n, k in
           ((1, 1), (3, 3), (68, 17), (60, 64), (100, 400), (200, 50), (256, 64), (129, 5))]


def test_the_avx2_build_packs():
    assert [hooks.PACKED for hooks in HOOKS] == [False, True][:len(HOOKS)]
    assert [hooks.FEW for hooks in HOOKS] == [False, True][:len(HOOKS)]
    assert len(HOOKS) == 2 or not has_avx2_fma()


@pytest.mark.parametrize("hooks", HOOKS, ids=[h.__name__.split(".")[-1] for h in HOOKS])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("trans_b", [False, True], ids=["Wh", "Wh.T"])
@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, 0.0), (-2.0, 0.25)])
@pytest.mark.parametrize("packed", [True, False], ids=["packed", "in-place"])
def test_packed_gemm_matches_numpy(hooks, dtype, trans_b, m, n, k, alpha, beta, packed):
    rng = np.random.default_rng(m * 10000 + n * 100 + k)
    a = rng.standard_normal((m, k + 5)).astype(dtype)[:, 2:2 + k]          # rows k + 5 apart
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    big = rng.standard_normal((m, n + 7)).astype(dtype)                     # rows n + 7 apart
    if beta == 0:
        big[:, 3:3 + n] = np.nan  # beta == 0 must overwrite, never read
    before = big.copy()
    c = big[:, 3:3 + n]
    expected = alpha * (a.astype(np.float64) @ (b.T if trans_b else b).astype(np.float64))
    if beta != 0:
        expected = expected + beta * before[:, 3:3 + n]
    assert hooks.packed_gemm_hook(trans_b, alpha, a, b, beta, c, packed) == (packed and
                                                                             hooks.PACKED)
    scale = abs(alpha) * (np.abs(a) @ np.abs(b.T if trans_b else b)).max() + abs(beta) * 3
    np.testing.assert_allclose(c, expected, rtol=0, atol=RTOL[dtype] * scale)
    # the columns around c's window are not touched
    np.testing.assert_array_equal(big[:, :3], before[:, :3])
    np.testing.assert_array_equal(big[:, 3 + n:], before[:, 3 + n:])


@pytest.mark.parametrize("hooks", HOOKS, ids=[h.__name__.split(".")[-1] for h in HOOKS])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("trans_b", [False, True], ids=["Wh", "Wh.T"])
@pytest.mark.parametrize("k", [64, 300])
def test_a_row_is_the_same_in_a_block_of_six_or_in_the_rows_past_it(hooks, dtype, trans_b, k):
    """The rows past the last whole block of 6 go to the few-rows kernel: each row's sums are
    the same, in the same order, as the 6-row kernel's, so that a sequence's result does not
    depend on how many others share its product (the batch, a thread's shard)."""
    rng = np.random.default_rng(k)
    n = 40
    a = rng.standard_normal((12, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    rows = {}
    for m in range(5, 13):
        c = np.full((m, n), 0.5, dtype)
        hooks.packed_gemm_hook(trans_b, 0.75, a[:m], b, 1.0, c, True)
        rows[m] = c
    for m in range(5, 12):
        np.testing.assert_array_equal(rows[m], rows[12][:m], err_msg=f"{m} rows")
