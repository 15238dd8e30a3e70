/* Matrix products over a right operand packed once: C = alpha * A @ op(B) + beta * C, row-major.
 *
 * The per-step products of the cell kernels multiply by the same Wh (or Wh.T) T times. BLAS
 * re-packs it on every call; here it is packed once per kernel call into column panels of NR
 * columns (16 floats or 8 doubles: two AVX registers), each panel k x NR contiguous, the last
 * one zero-padded, and every product then runs a 6 x NR register-blocked AVX2+FMA microkernel
 * that broadcasts the elements of A straight from the caller's row-major rows (A is not
 * packed: it has only N rows).
 *
 *   packed_size_{s,d}(k, n)          elements of the packed buffer, + PACKED_ALIGN bytes of slack
 *   pack_{s,d}(trans, k, n, b, ldb, bp)   op(B) (k, n) -> bp: B is (k, n) with row stride ldb,
 *                                    or (n, k) if trans (op(B) = B.T); bp is made 64-byte aligned
 *   packed_gemm_{s,d}(m, n, k, alpha, a, lda, bp, beta, c, ldc)
 *                                    C (m, n) = alpha * A (m, k) @ op(B) + beta * C; beta == 0
 *                                    overwrites C without reading it
 *
 * The microkernel needs AVX2 and FMA (-mavx2 -mfma): PACKED_GEMM is 1 where it was compiled
 * with them, else 0, and packed_gemm_{s,d} are then plain loops that callers never use (they
 * keep calling BLAS). Each element of C is one sum over k in order, as in a dot product: the
 * result equals BLAS's to rounding, not bit for bit.
 */
#ifndef FASTBPTT_PACKED_H
#define FASTBPTT_PACKED_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__)
#define PACKED_GEMM 1
#include <immintrin.h>
#else
#define PACKED_GEMM 0
#endif

#define PACKED_MR 6          /* rows of C per microkernel call */
#define PACKED_NR_S 16       /* columns per panel, float32 */
#define PACKED_NR_D 8        /* columns per panel, float64 */
#define PACKED_ALIGN 64      /* bytes; the packed buffer starts on a cache line */
#define PACKED_UNROLL _Pragma("GCC unroll 8")   /* the loops over rows and vectors */
#define PACKED_SMALL_M 4     /* at most this many rows of C: the few-rows kernel */
#ifndef PACKED_KC
#define PACKED_KC 256        /* k is walked in blocks of KC: a panel's block is 16 KiB (L1) */
#endif

static inline size_t packed_size_s(int k, int n)
{
    return (size_t)((n + PACKED_NR_S - 1) / PACKED_NR_S) * PACKED_NR_S * (size_t)k
           + PACKED_ALIGN / sizeof(float);
}

static inline size_t packed_size_d(int k, int n)
{
    return (size_t)((n + PACKED_NR_D - 1) / PACKED_NR_D) * PACKED_NR_D * (size_t)k
           + PACKED_ALIGN / sizeof(double);
}

static inline void* packed_aligned(void* buf)
{
    return (void*)(((uintptr_t)buf + PACKED_ALIGN - 1) & ~(uintptr_t)(PACKED_ALIGN - 1));
}

/* Panel j holds op(B)[:, j*NR : j*NR+NR] as k rows of NR, op(B)[p, q] = trans ? b[q*ldb + p]
 * : b[p*ldb + q]; columns past n are zeros. Returns the aligned start of the packed panels. */
#define PACKED_DEFINE_PACK(NAME, T, NR)                                                        \
static inline T* NAME(int trans, int k, int n, const T* b, ptrdiff_t ldb, void* buf)          \
{                                                                                              \
    T* bp = (T*)packed_aligned(buf);                                                           \
    T* dst = bp;                                                                               \
    int j0, p, q, nr;                                                                          \
    for (j0 = 0; j0 < n; j0 += NR) {                                                           \
        nr = n - j0 < NR ? n - j0 : NR;                                                        \
        for (p = 0; p < k; p++, dst += NR) {                                                   \
            if (trans) {                                                                       \
                for (q = 0; q < nr; q++) dst[q] = b[(ptrdiff_t)(j0 + q) * ldb + p];            \
            } else {                                                                           \
                memcpy(dst, b + (ptrdiff_t)p * ldb + j0, (size_t)nr * sizeof(T));              \
            }                                                                                  \
            for (q = nr; q < NR; q++) dst[q] = 0;                                              \
        }                                                                                      \
    }                                                                                          \
    return bp;                                                                                 \
}

PACKED_DEFINE_PACK(pack_s, float, PACKED_NR_S)
PACKED_DEFINE_PACK(pack_d, double, PACKED_NR_D)

/* C (m, n) *= beta, or = 0 if beta == 0 (without reading it). */
#define PACKED_DEFINE_SCALE(NAME, T)                                                           \
static inline void NAME(int m, int n, T beta, T* c, ptrdiff_t ldc)                             \
{                                                                                              \
    int i, j;                                                                                  \
    for (i = 0; i < m; i++)                                                                    \
        for (j = 0; j < n; j++)                                                                \
            c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j];                            \
}

PACKED_DEFINE_SCALE(packed_scale_s, float)
PACKED_DEFINE_SCALE(packed_scale_d, double)

#if PACKED_GEMM

/* One 6 x NR block of C: C[0:mr, 0:nr] (+)= alpha * A[0:mr, 0:kc] @ panel[0:kc, :], where the
 * block is added into C if load_c, else stored over it. Rows of A past mr repeat row mr - 1
 * (computed and thrown away), so one loop serves every edge. V is the vector type, W its width
 * in elements, NR = 2 W. */
#define PACKED_DEFINE_KERNEL(NAME, T, V, W, LOAD, STORE, BCAST, FMA, MUL, ADD, SET1)           \
static inline void NAME(int mr, int nr, int kc, T alpha, const T* a, ptrdiff_t lda,            \
                        const T* panel, T* c, ptrdiff_t ldc, int load_c)                       \
{                                                                                              \
    const T* a0 = a;                                                                           \
    const T* a1 = a + (mr > 1 ? 1 : 0) * lda;                                                  \
    const T* a2 = a + (mr > 2 ? 2 : mr - 1) * lda;                                             \
    const T* a3 = a + (mr > 3 ? 3 : mr - 1) * lda;                                             \
    const T* a4 = a + (mr > 4 ? 4 : mr - 1) * lda;                                             \
    const T* a5 = a + (mr > 5 ? 5 : mr - 1) * lda;                                             \
    V c00 = SET1(0), c01 = SET1(0), c10 = SET1(0), c11 = SET1(0), c20 = SET1(0), c21 = SET1(0);\
    V c30 = SET1(0), c31 = SET1(0), c40 = SET1(0), c41 = SET1(0), c50 = SET1(0), c51 = SET1(0);\
    V b0, b1, av, al;                                                                          \
    V acc[2 * PACKED_MR];                                                                      \
    T tmp[2 * W];                                                                              \
    int p, i, q;                                                                               \
    if (load_c)   /* C may be far (a step of a large buffer): fetch it while the sum runs */    \
        for (i = 0; i < mr; i++) {                                                             \
            _mm_prefetch((const char*)(c + i * ldc), _MM_HINT_T0);                             \
            _mm_prefetch((const char*)(c + i * ldc + 2 * W - 1), _MM_HINT_T0);                 \
        }                                                                                      \
    for (p = 0; p < kc; p++, panel += 2 * W) {                                                 \
        b0 = LOAD(panel);                                                                      \
        b1 = LOAD(panel + W);                                                                  \
        av = BCAST(a0 + p); c00 = FMA(av, b0, c00); c01 = FMA(av, b1, c01);                    \
        av = BCAST(a1 + p); c10 = FMA(av, b0, c10); c11 = FMA(av, b1, c11);                    \
        av = BCAST(a2 + p); c20 = FMA(av, b0, c20); c21 = FMA(av, b1, c21);                    \
        av = BCAST(a3 + p); c30 = FMA(av, b0, c30); c31 = FMA(av, b1, c31);                    \
        av = BCAST(a4 + p); c40 = FMA(av, b0, c40); c41 = FMA(av, b1, c41);                    \
        av = BCAST(a5 + p); c50 = FMA(av, b0, c50); c51 = FMA(av, b1, c51);                    \
    }                                                                                          \
    al = SET1(alpha);                                                                          \
    acc[0] = c00; acc[1] = c01; acc[2] = c10; acc[3] = c11; acc[4] = c20; acc[5] = c21;        \
    acc[6] = c30; acc[7] = c31; acc[8] = c40; acc[9] = c41; acc[10] = c50; acc[11] = c51;      \
    for (i = 0; i < mr; i++) {                                                                 \
        T* ci = c + i * ldc;                                                                   \
        V r0 = MUL(al, acc[2 * i]), r1 = MUL(al, acc[2 * i + 1]);                              \
        if (nr == 2 * W) {                                                                     \
            if (load_c) {                                                                      \
                r0 = ADD(r0, LOAD(ci));                                                        \
                r1 = ADD(r1, LOAD(ci + W));                                                    \
            }                                                                                  \
            STORE(ci, r0);                                                                     \
            STORE(ci + W, r1);                                                                 \
        } else {                                                                               \
            STORE(tmp, r0);                                                                    \
            STORE(tmp + W, r1);                                                                \
            for (q = 0; q < nr; q++) ci[q] = load_c ? ci[q] + tmp[q] : tmp[q];                 \
        }                                                                                      \
    }                                                                                          \
}

PACKED_DEFINE_KERNEL(packed_kernel_s, float, __m256, 8, _mm256_loadu_ps, _mm256_storeu_ps,
                     _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_mul_ps, _mm256_add_ps,
                     _mm256_set1_ps)
PACKED_DEFINE_KERNEL(packed_kernel_d, double, __m256d, 4, _mm256_loadu_pd, _mm256_storeu_pd,
                     _mm256_broadcast_sd, _mm256_fmadd_pd, _mm256_mul_pd, _mm256_add_pd,
                     _mm256_set1_pd)

/* k in blocks of KC (outer), then the panels, then the row blocks: a panel's block stays in L1
 * while every row block of A passes over it, and A's KC columns stay in L2 across panels. The
 * rows past the last whole block of PACKED_MR, if 1 to PACKED_SMALL_M of them, go to the
 * few-rows kernel (TAIL, below) for each block of KC, which computes only those rows where the
 * 6-row kernel would compute 6 (at 32 rows, 36: 11% of the product for nothing); each row is
 * the same sums in the same order either way. A tail of 5 rows stays on the 6-row kernel. */
#define PACKED_DEFINE_GEMM(NAME, T, NR, KERNEL, SCALE, TAIL)                                   \
static inline void NAME(int m, int n, int k, T alpha, const T* a, ptrdiff_t lda, const T* bp,  \
                        T beta, T* c, ptrdiff_t ldc)                                           \
{                                                                                              \
    int k0, kc, j0, i0, load_c;                                                                \
    int tail = m % PACKED_MR > PACKED_SMALL_M ? 0 : m % PACKED_MR, full = m - tail;            \
    if (m <= 0 || n <= 0) return;                                                              \
    if (k <= 0 || (beta != 0 && beta != 1)) SCALE(m, n, beta, c, ldc);                         \
    for (k0 = 0; k0 < k; k0 += PACKED_KC) {                                                    \
        kc = k - k0 < PACKED_KC ? k - k0 : PACKED_KC;                                          \
        load_c = k0 > 0 || beta != 0;                                                          \
        for (j0 = 0; j0 < n; j0 += NR)                                                         \
            for (i0 = 0; i0 < full; i0 += PACKED_MR)                                           \
                KERNEL(full - i0 < PACKED_MR ? full - i0 : PACKED_MR, n - j0 < NR ? n - j0 : NR,\
                       kc, alpha, a + i0 * lda + k0, lda, bp + (size_t)j0 * k + (size_t)k0 * NR,\
                       c + i0 * ldc + j0, ldc, load_c);                                        \
        if (tail)                                                                              \
            TAIL(tail, n, kc, alpha, a + (ptrdiff_t)full * lda + k0, lda,                      \
                 bp + (size_t)k0 * NR, (size_t)k * NR, c + (ptrdiff_t)full * ldc, ldc, load_c);\
    }                                                                                          \
}

/* Few rows (m <= PACKED_SMALL_M: one to four sequences, where Wh is reused by each step and
 * the 6-row microkernel would compute 6 rows for one): a group of P panels at a time, all k at
 * once, R rows x 2P vectors of C in registers. Each accumulator is one FMA chain; R * 2P of
 * them (8 to 12) cover the FMA latency (4 cycles, 2 per cycle), and each loaded vector of the
 * panel serves the R rows. R and P are constants at every call, so GCC unrolls the loops over
 * them and keeps acc in registers. cols (<= P * NR) columns of C are written, added into C if
 * load_c. */
#define PACKED_DEFINE_GROUP(NAME, T, V, W, LOAD, STORE, BCAST, FMA, MUL, ADD, SET1)            \
static inline __attribute__((always_inline)) void NAME(                                        \
    const int R, const int P, int cols, int k, T alpha, const T* a, ptrdiff_t lda,             \
    const T* panels, size_t pstride, T* c, ptrdiff_t ldc, int load_c)                          \
{                                                                                              \
    V acc[PACKED_SMALL_M][8], out[PACKED_SMALL_M][8], av[PACKED_SMALL_M], bv, al;              \
    T tmp[W];                                                                                  \
    int r, v, p, q, j;                                                                         \
    PACKED_UNROLL for (r = 0; r < R; r++)                                                      \
        PACKED_UNROLL for (v = 0; v < 2 * P; v++) acc[r][v] = SET1(0);                         \
    for (p = 0; p < k; p++) {                                                                  \
        PACKED_UNROLL for (r = 0; r < R; r++) av[r] = BCAST(a + r * lda + p);                  \
        PACKED_UNROLL for (v = 0; v < 2 * P; v++) {                                            \
            bv = LOAD(panels + (size_t)(v >> 1) * pstride + (size_t)p * 2 * W + (v & 1) * W);  \
            PACKED_UNROLL for (r = 0; r < R; r++) acc[r][v] = FMA(av[r], bv, acc[r][v]);       \
        }                                                                                      \
    }                                                                                          \
    al = SET1(alpha);                                                                          \
    PACKED_UNROLL for (r = 0; r < R; r++)                                                      \
        PACKED_UNROLL for (v = 0; v < 2 * P; v++) out[r][v] = MUL(al, acc[r][v]);              \
    PACKED_UNROLL for (r = 0; r < R; r++)                                                      \
        PACKED_UNROLL for (v = 0; v < 2 * P; v++) {                                            \
            T* cj = c + r * ldc + v * W;                                                       \
            V res = out[r][v];                                                                 \
            j = v * W;                                                                         \
            if (j + W <= cols) {                                                               \
                if (load_c) res = ADD(res, LOAD(cj));                                          \
                STORE(cj, res);                                                                \
            } else if (j < cols) {                                                             \
                STORE(tmp, res);                                                               \
                for (q = 0; q < cols - j; q++) cj[q] = load_c ? cj[q] + tmp[q] : tmp[q];       \
            }                                                                                  \
        }                                                                                      \
}

/* C (m, n) = alpha * A @ op(B) + beta * C for m <= PACKED_SMALL_M: rows R = m, panels in
 * groups of PW (the widest group whose accumulators fit in the 16 registers), the last group
 * narrower. */
#define PACKED_DEFINE_SMALL(NAME, T, NR, GROUP, SCALE)                                         \
static inline __attribute__((always_inline)) void NAME##_rows(                                 \
    const int R, const int PW, int n, int k, T alpha, const T* a, ptrdiff_t lda, const T* bp,  \
    size_t pstride, T* c, ptrdiff_t ldc, int load_c)                                           \
{                                                                                              \
    int j0 = 0, left;                                                                          \
    for (; j0 + PW * NR <= n; j0 += PW * NR, bp += (size_t)PW * pstride)                       \
        GROUP(R, PW, PW * NR, k, alpha, a, lda, bp, pstride, c + j0, ldc, load_c);             \
    left = (n - j0 + NR - 1) / NR;      /* bp: the last group's first panel */                 \
    if (left == 1)                                                                             \
        GROUP(R, 1, n - j0, k, alpha, a, lda, bp, pstride, c + j0, ldc, load_c);              \
    else if (left == 2)                                                                        \
        GROUP(R, 2, n - j0, k, alpha, a, lda, bp, pstride, c + j0, ldc, load_c);              \
    else if (left == 3)                                                                        \
        GROUP(R, 3, n - j0, k, alpha, a, lda, bp, pstride, c + j0, ldc, load_c);              \
    else if (left == 4)                                                                        \
        GROUP(R, 4, n - j0, k, alpha, a, lda, bp, pstride, c + j0, ldc, load_c);              \
}                                                                                              \
/* m (1 to PACKED_SMALL_M) rows of C over k rows of the panels, pstride elements apart: the */  \
/* rows R a constant in each branch, so that each is unrolled */                               \
static inline void NAME##_tail(int m, int n, int k, T alpha, const T* a, ptrdiff_t lda,        \
                               const T* bp, size_t pstride, T* c, ptrdiff_t ldc, int load_c)   \
{                                                                                              \
    switch (m) {                                                                               \
    case 1: NAME##_rows(1, 4, n, k, alpha, a, lda, bp, pstride, c, ldc, load_c); break;        \
    case 2: NAME##_rows(2, 2, n, k, alpha, a, lda, bp, pstride, c, ldc, load_c); break;        \
    case 3: NAME##_rows(3, 2, n, k, alpha, a, lda, bp, pstride, c, ldc, load_c); break;        \
    default: NAME##_rows(4, 1, n, k, alpha, a, lda, bp, pstride, c, ldc, load_c); break;       \
    }                                                                                          \
}                                                                                              \
static inline void NAME(int m, int n, int k, T alpha, const T* a, ptrdiff_t lda, const T* bp,  \
                        T beta, T* c, ptrdiff_t ldc)                                           \
{                                                                                              \
    int load_c = beta != 0;                                                                    \
    if (m <= 0 || n <= 0) return;                                                              \
    if (k <= 0 || (beta != 0 && beta != 1)) SCALE(m, n, beta, c, ldc);                         \
    if (k <= 0) return;                                                                        \
    NAME##_tail(m, n, k, alpha, a, lda, bp, (size_t)k * NR, c, ldc, load_c);                   \
}

PACKED_DEFINE_GROUP(packed_group_s, float, __m256, 8, _mm256_loadu_ps, _mm256_storeu_ps,
                    _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_mul_ps, _mm256_add_ps,
                    _mm256_set1_ps)
PACKED_DEFINE_GROUP(packed_group_d, double, __m256d, 4, _mm256_loadu_pd, _mm256_storeu_pd,
                    _mm256_broadcast_sd, _mm256_fmadd_pd, _mm256_mul_pd, _mm256_add_pd,
                    _mm256_set1_pd)
PACKED_DEFINE_SMALL(packed_small_s, float, PACKED_NR_S, packed_group_s, packed_scale_s)
PACKED_DEFINE_SMALL(packed_small_d, double, PACKED_NR_D, packed_group_d, packed_scale_d)

PACKED_DEFINE_GEMM(packed_big_s, float, PACKED_NR_S, packed_kernel_s, packed_scale_s,
                   packed_small_s_tail)
PACKED_DEFINE_GEMM(packed_big_d, double, PACKED_NR_D, packed_kernel_d, packed_scale_d,
                   packed_small_d_tail)

static inline void packed_gemm_s(int m, int n, int k, float alpha, const float* a,
                                 ptrdiff_t lda, const float* bp, float beta, float* c,
                                 ptrdiff_t ldc)
{
    if (m <= PACKED_SMALL_M) packed_small_s(m, n, k, alpha, a, lda, bp, beta, c, ldc);
    else packed_big_s(m, n, k, alpha, a, lda, bp, beta, c, ldc);
}

static inline void packed_gemm_d(int m, int n, int k, double alpha, const double* a,
                                 ptrdiff_t lda, const double* bp, double beta, double* c,
                                 ptrdiff_t ldc)
{
    if (m <= PACKED_SMALL_M) packed_small_d(m, n, k, alpha, a, lda, bp, beta, c, ldc);
    else packed_big_d(m, n, k, alpha, a, lda, bp, beta, c, ldc);
}

#else  /* no AVX2: plain loops over the same packed layout (callers use BLAS instead) */

#define PACKED_DEFINE_GEMM(NAME, T, NR, SCALE)                                                 \
static inline void NAME(int m, int n, int k, T alpha, const T* a, ptrdiff_t lda, const T* bp,  \
                        T beta, T* c, ptrdiff_t ldc)                                           \
{                                                                                              \
    int i, j, p;                                                                               \
    T s;                                                                                       \
    for (i = 0; i < m; i++)                                                                    \
        for (j = 0; j < n; j++) {                                                              \
            s = 0;                                                                             \
            for (p = 0; p < k; p++)                                                            \
                s += a[i * lda + p] * bp[(size_t)(j / NR) * NR * k + (size_t)p * NR + j % NR]; \
            c[i * ldc + j] = alpha * s + (beta == 0 ? 0 : beta * c[i * ldc + j]);              \
        }                                                                                      \
}

PACKED_DEFINE_GEMM(packed_gemm_s, float, PACKED_NR_S, packed_scale_s)
PACKED_DEFINE_GEMM(packed_gemm_d, double, PACKED_NR_D, packed_scale_d)

#endif
#endif
