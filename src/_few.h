/* The per-step products of one to four sequences, straight from Wh: C = alpha * A @ op(B) +
 * beta * C, row-major, A and C of m <= FEW_ROWS rows, AVX2+FMA.
 *
 * At N <= 4 a step's product is a few vector-matrix products on a Wh that each step reads
 * whole. A BLAS call per step costs more than its arithmetic (at H = 64 in float32 GEMV takes
 * ~2x the time of the loop below), and packing Wh once per call (src/_packed.h) costs one to
 * twenty steps' products, more than it saves over a short sequence (case C: T = 25). So these
 * loops read Wh in place, keeping 8 to 13 independent FMA chains in flight (FMA latency 4
 * cycles, 2 per cycle) with each loaded vector of Wh serving every row of A:
 *
 *   op(B) = B (forward, h_{t-1} @ Wh; B is (k, n), rows ldb apart): a group of up to 8
 *     vectors of columns of C in registers, C[:, cols] += sum_p A[:, p] * B[p, cols] over p
 *     in order; the last group's partial vector is read with a mask;
 *   op(B) = B.T (backward, dA_t @ Wh.T; B is (n, k)): C[i, j] is the dot product of row i of
 *     A with row j of B, both contiguous: J rows of B at a time, the sum in vector lanes over
 *     q (the tail masked), then across lanes.
 *
 * Each element of C is one sum over k (the forward in order, the backward in 8 or 4 lanes, as
 * BLAS's GEMV does it): equal to BLAS's result to rounding, not bit for bit.
 *
 *   few_gemm_{s,d}(trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
 *
 * FEW_GEMM is 1 where compiled with -mavx2 -mfma, else 0 and the callers call BLAS.
 */
#ifndef FASTBPTT_FEW_H
#define FASTBPTT_FEW_H

#include <stddef.h>

#define FEW_ROWS 4            /* the most rows of A and C these loops take */

#if defined(__AVX2__) && defined(__FMA__)
#define FEW_GEMM 1
#include <immintrin.h>

#define FEW_UNROLL _Pragma("GCC unroll 16")   /* loops over rows, vectors: constant trip counts */

/* lanes [0, count) set (count <= 0: none; >= width: all) */
static inline __m256i few_mask_s(int count)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static inline __m256i few_mask_d(int count)
{
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(count), _mm256_setr_epi64x(0, 1, 2, 3));
}

static inline float few_hsum_s(__m256 v)
{
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}

static inline double few_hsum_d(__m256d v)
{
    __m128d x = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    x = _mm_add_sd(x, _mm_unpackhi_pd(x, x));
    return _mm_cvtsd_f64(x);
}

/* Forward form. R rows, NV vectors of W columns: cols (<= NV * W) columns of C from column 0
 * of b and c; masked: read B's vectors with the masks of cols (the last group), else whole. */
#define FEW_DEFINE_AXPY(NAME, T, V, W, LOAD, STORE, BCAST, FMA, MUL, ADD, SET1, MLOAD, MASK)   \
static inline __attribute__((always_inline)) void NAME(                                       \
    const int R, const int NV, const int masked, int cols, int k, T alpha, const T* a,         \
    ptrdiff_t lda, const T* b, ptrdiff_t ldb, T* c, ptrdiff_t ldc, int load_c)                 \
{                                                                                              \
    V acc[FEW_ROWS][8], av[FEW_ROWS], bv, res;                                                 \
    __m256i mk[8];                                                                             \
    T tmp[W];                                                                                  \
    const T* bp;                                                                               \
    int r, v, p, q;                                                                            \
    FEW_UNROLL for (v = 0; v < NV; v++) mk[v] = MASK(cols - v * W);                            \
    FEW_UNROLL for (r = 0; r < R; r++)                                                         \
        FEW_UNROLL for (v = 0; v < NV; v++) acc[r][v] = SET1(0);                               \
    for (p = 0; p < k; p++) {                                                                  \
        bp = b + (ptrdiff_t)p * ldb;                                                           \
        FEW_UNROLL for (r = 0; r < R; r++) av[r] = BCAST(a + r * lda + p);                     \
        FEW_UNROLL for (v = 0; v < NV; v++) {                                                  \
            bv = masked ? MLOAD(bp + v * W, mk[v]) : LOAD(bp + v * W);                         \
            FEW_UNROLL for (r = 0; r < R; r++) acc[r][v] = FMA(av[r], bv, acc[r][v]);          \
        }                                                                                      \
    }                                                                                          \
    FEW_UNROLL for (r = 0; r < R; r++)                                                         \
        FEW_UNROLL for (v = 0; v < NV; v++) {                                                  \
            T* cv = c + r * ldc + v * W;                                                       \
            res = MUL(SET1(alpha), acc[r][v]);                                                 \
            if (v * W + W <= cols) {                                                           \
                if (load_c) res = ADD(res, LOAD(cv));                                          \
                STORE(cv, res);                                                                \
            } else if (v * W < cols) {                                                         \
                STORE(tmp, res);                                                               \
                for (q = 0; q < cols - v * W; q++) cv[q] = load_c ? cv[q] + tmp[q] : tmp[q];   \
            }                                                                                  \
        }                                                                                      \
}

/* Backward form. R rows of A against J rows of B (J outputs of each row of C), U vectors of
 * lanes per pair, summed in a fixed order. */
#define FEW_DEFINE_DOT(NAME, T, V, W, LOAD, FMA, ADD, SET1, MLOAD, MASK, HSUM)                 \
static inline __attribute__((always_inline)) void NAME(                                       \
    const int R, const int J, const int U, int k, T alpha, const T* a, ptrdiff_t lda,          \
    const T* b, ptrdiff_t ldb, T* c, ptrdiff_t ldc, int load_c)                                \
{                                                                                              \
    V acc[FEW_ROWS][4][2], av[FEW_ROWS], bv;                                                   \
    __m256i mk;                                                                                \
    int r, jj, u, q0 = 0;                                                                      \
    T s;                                                                                       \
    FEW_UNROLL for (r = 0; r < R; r++)                                                         \
        FEW_UNROLL for (jj = 0; jj < J; jj++)                                                  \
            FEW_UNROLL for (u = 0; u < U; u++) acc[r][jj][u] = SET1(0);                        \
    for (; q0 + U * W <= k; q0 += U * W)                                                       \
        FEW_UNROLL for (u = 0; u < U; u++) {                                                   \
            FEW_UNROLL for (r = 0; r < R; r++) av[r] = LOAD(a + r * lda + q0 + u * W);         \
            FEW_UNROLL for (jj = 0; jj < J; jj++) {                                            \
                bv = LOAD(b + jj * ldb + q0 + u * W);                                          \
                FEW_UNROLL for (r = 0; r < R; r++)                                             \
                    acc[r][jj][u] = FMA(av[r], bv, acc[r][jj][u]);                             \
            }                                                                                  \
        }                                                                                      \
    for (; q0 < k; q0 += W) {     /* the last k % (U * W) lanes, into the first vector */      \
        mk = MASK(k - q0);                                                                     \
        FEW_UNROLL for (r = 0; r < R; r++) av[r] = MLOAD(a + r * lda + q0, mk);                \
        FEW_UNROLL for (jj = 0; jj < J; jj++) {                                                \
            bv = MLOAD(b + jj * ldb + q0, mk);                                                 \
            FEW_UNROLL for (r = 0; r < R; r++) acc[r][jj][0] = FMA(av[r], bv, acc[r][jj][0]);  \
        }                                                                                      \
    }                                                                                          \
    FEW_UNROLL for (r = 0; r < R; r++)                                                         \
        FEW_UNROLL for (jj = 0; jj < J; jj++) {                                                \
            FEW_UNROLL for (u = 1; u < U; u++) acc[r][jj][0] = ADD(acc[r][jj][0], acc[r][jj][u]);\
            s = alpha * HSUM(acc[r][jj][0]);                                                   \
            c[r * ldc + jj] = load_c ? c[r * ldc + jj] + s : s;                                \
        }                                                                                      \
}

/* The whole product for R rows: groups of NV vectors (forward) or of J rows of B (backward),
 * narrower at the end. */
#define FEW_DEFINE_ROWS(NAME, T, W, AXPY, DOT)                                                 \
static inline __attribute__((always_inline)) void NAME(                                       \
    const int R, const int NV, const int J, const int U, int trans_b, int n, int k, T alpha,   \
    const T* a, ptrdiff_t lda, const T* b, ptrdiff_t ldb, T* c, ptrdiff_t ldc, int load_c)     \
{                                                                                              \
    int j0 = 0, left;                                                                          \
    if (!trans_b) {                                                                            \
        for (; j0 + NV * W <= n; j0 += NV * W)                                                 \
            AXPY(R, NV, 0, NV * W, k, alpha, a, lda, b + j0, ldb, c + j0, ldc, load_c);        \
        left = (n - j0 + W - 1) / W;                                                           \
        if (left == 1) AXPY(R, 1, 1, n - j0, k, alpha, a, lda, b + j0, ldb, c + j0, ldc, load_c);\
        else if (left == 2)                                                                    \
            AXPY(R, 2, 1, n - j0, k, alpha, a, lda, b + j0, ldb, c + j0, ldc, load_c);         \
        else if (left == 3)                                                                    \
            AXPY(R, 3, 1, n - j0, k, alpha, a, lda, b + j0, ldb, c + j0, ldc, load_c);         \
        else if (left > 3)   /* 4 <= left < NV (<= 8): two groups */                           \
            for (; j0 < n; j0 += 4 * W)                                                        \
                AXPY(R, 4, 1, n - j0, k, alpha, a, lda, b + j0, ldb, c + j0, ldc, load_c);     \
        return;                                                                                \
    }                                                                                          \
    for (; j0 + J <= n; j0 += J)                                                               \
        DOT(R, J, U, k, alpha, a, lda, b + (ptrdiff_t)j0 * ldb, ldb, c + j0, ldc, load_c);     \
    for (; j0 < n; j0++)                                                                       \
        DOT(R, 1, U, k, alpha, a, lda, b + (ptrdiff_t)j0 * ldb, ldb, c + j0, ldc, load_c);     \
}

#define FEW_DEFINE_GEMM(NAME, T, ROWS)                                                         \
static inline void NAME(int trans_b, int m, int n, int k, T alpha, const T* a, ptrdiff_t lda,  \
                        const T* b, ptrdiff_t ldb, T beta, T* c, ptrdiff_t ldc)                \
{                                                                                              \
    int i, j;                                                                                  \
    if (m <= 0 || n <= 0) return;                                                              \
    if (k <= 0 || (beta != 0 && beta != 1)) {                                                  \
        for (i = 0; i < m; i++)                                                                \
            for (j = 0; j < n; j++)                                                            \
                c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j];                        \
        if (k <= 0) return;                                                                    \
    }                                                                                          \
    switch (m) {                                                                               \
    case 1: ROWS(1, 8, 4, 2, trans_b, n, k, alpha, a, lda, b, ldb, c, ldc, beta != 0); break;  \
    case 2: ROWS(2, 4, 4, 1, trans_b, n, k, alpha, a, lda, b, ldb, c, ldc, beta != 0); break;  \
    case 3: ROWS(3, 4, 3, 1, trans_b, n, k, alpha, a, lda, b, ldb, c, ldc, beta != 0); break;  \
    default: ROWS(4, 2, 2, 1, trans_b, n, k, alpha, a, lda, b, ldb, c, ldc, beta != 0); break; \
    }                                                                                          \
}

FEW_DEFINE_AXPY(few_axpy_s, float, __m256, 8, _mm256_loadu_ps, _mm256_storeu_ps,
                _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_mul_ps, _mm256_add_ps,
                _mm256_set1_ps, _mm256_maskload_ps, few_mask_s)
FEW_DEFINE_AXPY(few_axpy_d, double, __m256d, 4, _mm256_loadu_pd, _mm256_storeu_pd,
                _mm256_broadcast_sd, _mm256_fmadd_pd, _mm256_mul_pd, _mm256_add_pd,
                _mm256_set1_pd, _mm256_maskload_pd, few_mask_d)
FEW_DEFINE_DOT(few_dot_s, float, __m256, 8, _mm256_loadu_ps, _mm256_fmadd_ps, _mm256_add_ps,
               _mm256_set1_ps, _mm256_maskload_ps, few_mask_s, few_hsum_s)
FEW_DEFINE_DOT(few_dot_d, double, __m256d, 4, _mm256_loadu_pd, _mm256_fmadd_pd, _mm256_add_pd,
               _mm256_set1_pd, _mm256_maskload_pd, few_mask_d, few_hsum_d)
FEW_DEFINE_ROWS(few_rows_s, float, 8, few_axpy_s, few_dot_s)
FEW_DEFINE_ROWS(few_rows_d, double, 4, few_axpy_d, few_dot_d)
FEW_DEFINE_GEMM(few_gemm_s, float, few_rows_s)
FEW_DEFINE_GEMM(few_gemm_d, double, few_rows_d)

#else   /* no AVX2: never called (the callers use BLAS); defined so that the module compiles */
#define FEW_GEMM 0

static inline void few_gemm_s(int trans_b, int m, int n, int k, float alpha, const float* a,
                              ptrdiff_t lda, const float* b, ptrdiff_t ldb, float beta, float* c,
                              ptrdiff_t ldc) {}
static inline void few_gemm_d(int trans_b, int m, int n, int k, double alpha, const double* a,
                              ptrdiff_t lda, const double* b, ptrdiff_t ldb, double beta,
                              double* c, ptrdiff_t ldc) {}
#endif
#endif
