# cython: language_level=3
"""The per-step products over a hidden weight packed once per call (``src/_packed.h``), or, for
a few sequences, on the hidden weight as it is (``src/_few.h``).

Every step of a call multiplies by the same Wh: forward h_{t-1} @ Wh, backward dA_t @ Wh.T.
BLAS packs its operand again on every call (measured: OpenBLAS's copy routines took 28% of
the LSTM's backward at N = 32, H = 128, float32). In the AVX2+FMA build the kernels pack
op(Wh) once, at the start of the call, into a buffer the caller allocated, and run every
per-step product on it with the microkernels of ``_packed.h`` (6 rows at a time, or, for
N <= 4, a few rows against a group of panels). One to four sequences over fewer than
FEW_PACK_STEPS steps skip the packing (it would cost more than it saves) and run the loops of
``_few.h`` on Wh in place where it is small (FEW_IN_PLACE), else BLAS. The baseline build
keeps calling ``_blas.gemm`` (GEMV at N = 1).

    PACKED_NR_S, PACKED_NR_D              columns per panel (float32, float64): the panels of
                                          op(B)'s columns [c0, c1), c0 a multiple of it, are
                                          the buffer from bp + c0 * k
    packed_len(n_batch, k, n, itemsize)   elements the buffer needs for op(B) (k, n); 0 where
                                          the products stay on BLAS
    hidden_packed_len(n_batch, n_hidden, n_gates, itemsize, n_steps)
                                          elements for a cell's Wh and Wh.T, the larger (for
                                          one sequence, also for ``units_packed_len``); 0
                                          where nothing is packed
    units_packed_len(n_hidden, n_gates, itemsize)
                                          elements for Wh packed by parts of hidden units
                                          (one sequence split between threads,
                                          ``src/_units.pxd``): each part's G column blocks
                                          packed one after the other, then a row of G*H
                                          products beside them
    panel_columns(itemsize)               the columns of a panel: 16 float32, 8 float64
    units_pack(trans_b, k, n, b, ldb, bp) op(B) (k, n) packed at bp, 64-byte aligned (from
                                          ``packed_aligned(buf)``), without checking the build
                                          or the room
    pack(trans_b, n_batch, k, n, b, ldb, buf, buf_len)
                                          op(B) packed into buf (buf_len elements, or NULL),
                                          or NULL (then gemm_b reads b): not this build, or
                                          buf NULL or too small
    gemm_b(bp, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
                                          ``_blas.gemm(NO_TRANS, trans_b, ...)`` on bp if not
                                          NULL, else on b: ``_few.h`` (m <= 4, small b) or
                                          BLAS
"""
from cython cimport floating

from _blas cimport NO_TRANS, gemm

cdef extern from "_few.h" nogil:
    int FEW_GEMM
    int FEW_ROWS
    void few_gemm_s(int trans_b, int m, int n, int k, float alpha, const float* a,
                    Py_ssize_t lda, const float* b, Py_ssize_t ldb, float beta, float* c,
                    Py_ssize_t ldc)
    void few_gemm_d(int trans_b, int m, int n, int k, double alpha, const double* a,
                    Py_ssize_t lda, const double* b, Py_ssize_t ldb, double beta, double* c,
                    Py_ssize_t ldc)

cdef enum:
    # N <= FEW_ROWS packs Wh only for this many steps or more: packing costs about one pass
    # over Wh, and the packed few-rows products save 10-40% of a pass per step over those on
    # Wh as it is (measured at H = 64, 100)
    FEW_PACK_STEPS = 32
    # ... and reads Wh in place only up to this many bytes: past it the forward's rows of Wh,
    # each read in pieces of 8 vectors, stream worse than GEMV's (1.1-2.8x its time at 256 KiB
    # to 4 MiB), and BLAS takes the product
    FEW_IN_PLACE = 192 * 1024

cdef extern from "_packed.h" nogil:
    int PACKED_GEMM
    int PACKED_NR_S         # columns per packed panel, float32
    int PACKED_NR_D         # float64
    void* packed_aligned(void* buf)
    size_t packed_size_s(int k, int n)
    size_t packed_size_d(int k, int n)
    float* pack_s(int trans, int k, int n, const float* b, Py_ssize_t ldb, void* buf)
    double* pack_d(int trans, int k, int n, const double* b, Py_ssize_t ldb, void* buf)
    void packed_gemm_s(int m, int n, int k, float alpha, const float* a, Py_ssize_t lda,
                       const float* bp, float beta, float* c, Py_ssize_t ldc)
    void packed_gemm_d(int m, int n, int k, double alpha, const double* a, Py_ssize_t lda,
                       const double* bp, double beta, double* c, Py_ssize_t ldc)


cdef inline Py_ssize_t packed_len(int n_batch, int k, int n, int itemsize) noexcept nogil:
    """Elements of ``itemsize`` bytes that ``pack`` needs for op(B) (k, n) with N = n_batch
    rows in the products; 0 in the baseline build (BLAS)."""
    if not PACKED_GEMM or k <= 0 or n <= 0:
        return 0
    return <Py_ssize_t> (packed_size_s(k, n) if itemsize == 4 else packed_size_d(k, n))


cdef inline Py_ssize_t hidden_packed_len(int n_batch, int n_hidden, int n_gates,
                                         int itemsize, int n_steps) noexcept nogil:
    """Elements of the buffer a cell's kernels pack their hidden weight into, once per call:
    Wh (H, G*H) in forward, Wh.T (G*H, H) in backward; 0 where the products stay on BLAS, or,
    for N <= FEW_ROWS over fewer than FEW_PACK_STEPS steps, on Wh as it is (``few_gemm``)."""
    if n_batch <= FEW_ROWS and n_steps < FEW_PACK_STEPS:
        return 0
    cdef Py_ssize_t forward = packed_len(n_batch, n_hidden, n_gates * n_hidden, itemsize)
    cdef Py_ssize_t backward = packed_len(n_batch, n_gates * n_hidden, n_hidden, itemsize)
    cdef Py_ssize_t units = units_packed_len(n_hidden, n_gates, itemsize)
    if n_batch == 1 and units > forward:
        forward = units     # one sequence may be split between threads by hidden units
    return forward if forward > backward else backward


cdef inline int panel_columns(Py_ssize_t itemsize) noexcept nogil:
    """The columns of one packed panel: 16 float32 or 8 float64."""
    return PACKED_NR_S if itemsize == 4 else PACKED_NR_D


cdef inline Py_ssize_t units_packed_len(int n_hidden, int n_gates, int itemsize) noexcept nogil:
    """Elements of the buffer for Wh (H, G*H) packed by parts of hidden units (the forward of
    one sequence split between threads, ``src/_columns.pxd``), 0 in the baseline build. Parts
    are cut at panel boundaries (``part_first(H, panel_columns(.), ...)``); part s of units
    u0 .. u1 packs its G column blocks Wh[:, g*H + u0 : g*H + u1], each padded to whole panels
    (n_pad = u1 - u0 rounded up), at G * u0 * H from the start, then its row of G * n_pad
    products at G * H_pad * H + G * u0 (H_pad: H rounded up to whole panels), every piece
    starting on a cache line."""
    if not PACKED_GEMM or n_hidden <= 0:
        return 0
    cdef Py_ssize_t nr = panel_columns(itemsize)
    cdef Py_ssize_t padded = (n_hidden + nr - 1) // nr * nr
    return n_gates * padded * (n_hidden + 1) + 64 // itemsize


cdef inline floating* units_pack(bint trans_b, int k, int n, const floating* b, int ldb,
                                 floating* bp) noexcept nogil:
    """op(B) (k, n) packed at bp, 64-byte aligned (so that it is packed there): B stored (k, n)
    with row stride ldb, or (n, k) if trans_b. The caller checked the build and the room
    (``units_packed_len``)."""
    if floating is float:
        return pack_s(trans_b, k, n, b, ldb, bp)
    else:
        return pack_d(trans_b, k, n, b, ldb, bp)


cdef inline floating* pack(bint trans_b, int n_batch, int k, int n, const floating* b, int ldb,
                           floating* buf, Py_ssize_t buf_len) noexcept nogil:
    """op(B) (k, n) packed into buf, of buf_len elements (B stored (k, n) with row stride ldb,
    or (n, k) if trans_b), returning where the panels start; NULL where the products stay on
    b as it is (this build, or buf NULL or too short)."""
    cdef Py_ssize_t need = packed_len(n_batch, k, n, sizeof(floating))
    if need == 0 or buf == NULL or buf_len < need:
        return NULL
    if floating is float:
        return pack_s(trans_b, k, n, b, ldb, buf)
    else:
        return pack_d(trans_b, k, n, b, ldb, buf)


cdef inline floating* pack_held(bint trans_b, int n_batch, int k, int n, const floating* b,
                                int ldb, const Py_buffer* workspace) noexcept nogil:
    """``pack`` into a kernel's workspace ``packed`` held in a Py_buffer (``src/_held.pxd``),
    which holds nothing (its buf NULL) where this build packs nothing."""
    return pack(trans_b, n_batch, k, n, b, ldb, <floating*> workspace.buf,
                workspace.len // <Py_ssize_t> sizeof(floating))


cdef inline void gemm_b(const floating* bp, bint trans_b, int m, int n, int k, floating alpha,
                        const floating* a, int lda, const floating* b, int ldb, floating beta,
                        floating* c, int ldc) noexcept nogil:
    """C = alpha * A @ op(B) + beta * C, row-major, as ``_blas.gemm(NO_TRANS, trans_b, ...)``:
    on the panels bp that ``pack`` made of op(B) if bp is not NULL (then b is not read), else
    on b by the few-rows loops of ``_few.h`` (AVX2 build, m <= FEW_ROWS, op(B) of at most
    FEW_IN_PLACE bytes) or by BLAS."""
    if bp == NULL:
        if FEW_GEMM and m <= FEW_ROWS and <size_t> k * n * sizeof(floating) <= FEW_IN_PLACE:
            if floating is float:
                few_gemm_s(trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
            else:
                few_gemm_d(trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        else:
            gemm(NO_TRANS, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    elif floating is float:
        packed_gemm_s(m, n, k, alpha, a, lda, bp, beta, c, ldc)
    else:
        packed_gemm_d(m, n, k, alpha, a, lda, bp, beta, c, ldc)
