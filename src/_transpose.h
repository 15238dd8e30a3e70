/* B = A.T for a row-major A (rows, cols) with row stride lda: B (cols, rows), C-contiguous.
 *
 *   transpose_s(rows, cols, a, lda, b)     float32
 *   transpose_d(rows, cols, a, lda, b)     float64
 *
 * With AVX (TRANSPOSE_AVX 1): 8 x 8 blocks of floats (4 x 4 of doubles) are loaded as rows,
 * transposed in registers by unpacks, shuffles and lane permutes, and stored as rows of B; the
 * rows and columns past the last whole block are moved one element at a time. Without AVX
 * every element is moved one at a time, in blocks of 8 x 8 so that the lines of A a block reads
 * stay in L1 while it is written. Either way each element is copied, never computed with: B
 * equals A.T bit for bit.
 */
#ifndef FASTBPTT_TRANSPOSE_H
#define FASTBPTT_TRANSPOSE_H

#include <stddef.h>

#if defined(__AVX__)
#define TRANSPOSE_AVX 1
#include <immintrin.h>
#else
#define TRANSPOSE_AVX 0
#endif

#define TRANSPOSE_BLOCK 8

/* b[j * ldb + i] = a[i * lda + j] for i < m, j < n: the edges, and the blocks without AVX. */
#define TRANSPOSE_DEFINE_SCALAR(NAME, T)                                                       \
static inline void NAME(ptrdiff_t m, ptrdiff_t n, const T* a, ptrdiff_t lda, T* b,            \
                        ptrdiff_t ldb)                                                         \
{                                                                                              \
    ptrdiff_t i, j;                                                                            \
    for (j = 0; j < n; j++)                                                                    \
        for (i = 0; i < m; i++)                                                                \
            b[j * ldb + i] = a[i * lda + j];                                                   \
}

TRANSPOSE_DEFINE_SCALAR(transpose_tile_s, float)
TRANSPOSE_DEFINE_SCALAR(transpose_tile_d, double)

#if TRANSPOSE_AVX

/* One 8 x 8 block of floats: rows r0..r7 of A -> rows of B. After the unpacks each 128-bit lane
 * holds pairs of two rows, after the shuffles columns of four rows, and the lane permutes join
 * the four upper rows' half of a column to the four lower rows'. */
static inline void transpose_block_s(const float* a, ptrdiff_t lda, float* b, ptrdiff_t ldb)
{
    __m256 r0 = _mm256_loadu_ps(a), r1 = _mm256_loadu_ps(a + lda);
    __m256 r2 = _mm256_loadu_ps(a + 2 * lda), r3 = _mm256_loadu_ps(a + 3 * lda);
    __m256 r4 = _mm256_loadu_ps(a + 4 * lda), r5 = _mm256_loadu_ps(a + 5 * lda);
    __m256 r6 = _mm256_loadu_ps(a + 6 * lda), r7 = _mm256_loadu_ps(a + 7 * lda);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    _mm256_storeu_ps(b, _mm256_permute2f128_ps(s0, s4, 0x20));
    _mm256_storeu_ps(b + ldb, _mm256_permute2f128_ps(s1, s5, 0x20));
    _mm256_storeu_ps(b + 2 * ldb, _mm256_permute2f128_ps(s2, s6, 0x20));
    _mm256_storeu_ps(b + 3 * ldb, _mm256_permute2f128_ps(s3, s7, 0x20));
    _mm256_storeu_ps(b + 4 * ldb, _mm256_permute2f128_ps(s0, s4, 0x31));
    _mm256_storeu_ps(b + 5 * ldb, _mm256_permute2f128_ps(s1, s5, 0x31));
    _mm256_storeu_ps(b + 6 * ldb, _mm256_permute2f128_ps(s2, s6, 0x31));
    _mm256_storeu_ps(b + 7 * ldb, _mm256_permute2f128_ps(s3, s7, 0x31));
}

/* One 4 x 4 block of doubles, two of them side by side: an 4 x 8 block of A -> 8 x 4 of B. */
static inline void transpose_quad_d(const double* a, ptrdiff_t lda, double* b, ptrdiff_t ldb)
{
    __m256d r0 = _mm256_loadu_pd(a), r1 = _mm256_loadu_pd(a + lda);
    __m256d r2 = _mm256_loadu_pd(a + 2 * lda), r3 = _mm256_loadu_pd(a + 3 * lda);
    __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
    __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
    _mm256_storeu_pd(b, _mm256_permute2f128_pd(t0, t2, 0x20));
    _mm256_storeu_pd(b + ldb, _mm256_permute2f128_pd(t1, t3, 0x20));
    _mm256_storeu_pd(b + 2 * ldb, _mm256_permute2f128_pd(t0, t2, 0x31));
    _mm256_storeu_pd(b + 3 * ldb, _mm256_permute2f128_pd(t1, t3, 0x31));
}

static inline void transpose_block_d(const double* a, ptrdiff_t lda, double* b, ptrdiff_t ldb)
{
    transpose_quad_d(a, lda, b, ldb);
    transpose_quad_d(a + 4, lda, b + 4 * ldb, ldb);
    transpose_quad_d(a + 4 * lda, lda, b + 4, ldb);
    transpose_quad_d(a + 4 * lda + 4, lda, b + 4 * ldb + 4, ldb);
}

#else

static inline void transpose_block_s(const float* a, ptrdiff_t lda, float* b, ptrdiff_t ldb)
{
    transpose_tile_s(TRANSPOSE_BLOCK, TRANSPOSE_BLOCK, a, lda, b, ldb);
}

static inline void transpose_block_d(const double* a, ptrdiff_t lda, double* b, ptrdiff_t ldb)
{
    transpose_tile_d(TRANSPOSE_BLOCK, TRANSPOSE_BLOCK, a, lda, b, ldb);
}

#endif

/* Whole 8 x 8 blocks a band of 8 rows of A at a time (its 8 lines of each block in L1), then
 * the columns past the last whole block of each band, then the rows past the last band. */
#define TRANSPOSE_DEFINE(NAME, T, BLOCK, TILE)                                                 \
static inline void NAME(ptrdiff_t rows, ptrdiff_t cols, const T* a, ptrdiff_t lda, T* b)      \
{                                                                                              \
    ptrdiff_t i, j, full_rows = rows / TRANSPOSE_BLOCK * TRANSPOSE_BLOCK;                      \
    ptrdiff_t full_cols = cols / TRANSPOSE_BLOCK * TRANSPOSE_BLOCK;                            \
    for (i = 0; i < full_rows; i += TRANSPOSE_BLOCK) {                                         \
        for (j = 0; j < full_cols; j += TRANSPOSE_BLOCK)                                       \
            BLOCK(a + i * lda + j, lda, b + j * rows + i, rows);                               \
        TILE(TRANSPOSE_BLOCK, cols - full_cols, a + i * lda + full_cols, lda,                  \
             b + full_cols * rows + i, rows);                                                  \
    }                                                                                          \
    TILE(rows - full_rows, cols, a + full_rows * lda, lda, b + full_rows, rows);               \
}

TRANSPOSE_DEFINE(transpose_s, float, transpose_block_s, transpose_tile_s)
TRANSPOSE_DEFINE(transpose_d, double, transpose_block_d, transpose_tile_d)

#endif
