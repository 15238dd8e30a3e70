"""``transposed(a)`` of each build (src/_transpose.pyx) is ``np.ascontiguousarray(a.T)``: the
same bits, C-contiguous, a new array where NumPy's would be one and ``a.T`` where NumPy returns
that view, over every edge of the 8 x 8 blocks, both dtypes and the layouts that take the fast
path or go to NumPy."""
import numpy as np
import pytest

from fastbptt._kernels import variants

BUILDS = variants("_transpose")
SHAPES = [(1, 1), (1, 9), (9, 1), (7, 9), (8, 8), (8, 16), (16, 8), (17, 33), (100, 65),
          (400, 100), (65, 400)]
BITS = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}


def _random_bits(shape, dtype, rng):
    """Any bit patterns of the dtype: NaNs with payloads, infinities, -0.0, subnormals."""
    bits = rng.integers(0, np.iinfo(BITS[np.dtype(dtype)]).max, size=shape, dtype=np.uint64,
                        endpoint=True).astype(BITS[np.dtype(dtype)])
    return bits.view(dtype)


def _same_bits(got, want):
    assert got.shape == want.shape and got.dtype == want.dtype
    assert np.array_equal(got.view(BITS[got.dtype]), want.view(BITS[want.dtype]))


@pytest.mark.parametrize("build", BUILDS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_transposed_copies_every_bit(build, dtype, shape):
    a = _random_bits(shape, dtype, np.random.default_rng(sum(shape)))
    got = build.transposed(a)
    _same_bits(got, np.ascontiguousarray(a.T))
    assert got.flags.c_contiguous
    assert not np.shares_memory(got, a) or a.T.flags.c_contiguous


@pytest.mark.parametrize("build", BUILDS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["rows of a wider array", "every other row", "reversed rows",
                                    "fortran", "every other column", "reversed columns",
                                    "byte-swapped", "unaligned"])
def test_transposed_of_every_layout(build, dtype, layout):
    rng = np.random.default_rng(3)
    base = _random_bits((34, 42), dtype, rng)
    a = {
        "rows of a wider array": lambda: base[:, 3:36],              # fast path, row stride 42
        "every other row": lambda: base[::2],                        # fast path, row stride 84
        "reversed rows": lambda: base[::-1],                         # NumPy
        "fortran": lambda: np.asfortranarray(base),                  # a.T, a view
        "every other column": lambda: base[:, ::2],                  # NumPy
        "reversed columns": lambda: base[:, ::-1],                   # NumPy
        "byte-swapped": lambda: base.astype(np.dtype(dtype).newbyteorder()),
        "unaligned": lambda: np.frombuffer(
            b"\0" + base.tobytes(), dtype, offset=1).reshape(base.shape),
    }[layout]()
    want = np.ascontiguousarray(a.T)
    got = build.transposed(a)
    assert got.flags.c_contiguous and got.dtype == want.dtype
    assert np.array_equal(got.view(np.uint8), want.view(np.uint8))
    assert np.shares_memory(got, a) == np.shares_memory(want, a)


@pytest.mark.parametrize("build", BUILDS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("a", [np.arange(12).reshape(3, 4), np.zeros((0, 5), np.float32),
                               np.zeros((5, 0)), np.arange(6.0), np.ones((2, 3, 4)),
                               [[1.0, 2.0], [3.0, 4.0]]],
                         ids=["int", "no rows", "no columns", "1-D", "3-D", "list"])
def test_transposed_of_anything_else_is_numpys(build, a):
    want = np.ascontiguousarray(np.asarray(a).T)
    got = build.transposed(a)
    assert got.dtype == want.dtype and got.shape == want.shape and got.flags.c_contiguous
    assert np.array_equal(got, want)
