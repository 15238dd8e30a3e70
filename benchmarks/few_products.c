/* One step's product for N = 1..4 rows, three ways, timed interleaved in one process:
 * on Wh as it is (src/_few.h), on Wh packed (src/_packed.h) and by OpenBLAS's GEMV (SciPy's
 * bundled library, one call per row). Forward h @ Wh (H, G*H), or backward dA @ Wh.T.
 *
 *   lib=$(python -c "import glob, os, scipy; print(glob.glob(os.path.join(
 *         os.path.dirname(scipy.__file__), '..', 'scipy.libs', 'libscipy_openblas-*.so'))[0])")
 *   gcc -O3 -mavx2 -mfma -fno-trapping-math -Isrc benchmarks/few_products.c -o few_products \
 *       "$lib" -Wl,-rpath,"$(dirname "$lib")" -lm
 *   OPENBLAS_NUM_THREADS=1 ./few_products H G BACKWARD ROWS      (e.g. 64 4 0 1)
 *
 * Prints the minimum over 60 rounds of the time per product of each, and the largest
 * difference from a double-precision sum (the loops are checked, not only timed). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "_few.h"
#include "_packed.h"

void scipy_sgemv_(const char*, const int*, const int*, const float*, const float*, const int*,
                  const float*, const int*, const float*, float*, const int*);
void scipy_dgemv_(const char*, const int*, const int*, const double*, const double*,
                  const int*, const double*, const int*, const double*, double*, const int*);

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

#define BENCH(T, NAME, FEW, PACK, SIZE, PACKED, GEMV)                                          \
{                                                                                              \
    int n = trans ? H : G * H, k = trans ? G * H : H, ld = G * H, one = 1, i, r, j, p, round;  \
    int reps = 200000 / (H * G) + 1;                                                           \
    T alpha = 1, beta = 1, *w = malloc(sizeof(T) * G * H * H);                                 \
    T *a = calloc(4 * k + 8, sizeof(T)), *c = calloc(4 * n + 8, sizeof(T)), *bp;              \
    void* buf = malloc(sizeof(T) * SIZE(k, n));                                                \
    double best[3] = {1e9, 1e9, 1e9}, err = 0, s, t0, t;                                       \
    for (i = 0; i < G * H * H; i++) w[i] = (T)(((i * 7919) % 13 - 6) * 0.01);                 \
    for (i = 0; i < rows * k; i++) a[i] = (T)(((i * 31) % 11 - 5) * 0.1);                     \
    bp = PACK(trans, k, n, w, ld, buf);                                                        \
    FEW(trans, rows, n, k, 1, a, k, w, ld, 0, c, n);                                           \
    for (r = 0; r < rows; r++)                                                                 \
        for (j = 0; j < n; j++) {                                                              \
            for (s = 0, p = 0; p < k; p++) s += a[r * k + p] * (trans ? w[j * ld + p] : w[p * ld + j]); \
            err = fmax(err, fabs(s - c[r * n + j]));                                           \
        }                                                                                      \
    for (round = 0; round < 60; round++) {                                                     \
        t0 = now();                                                                            \
        for (i = 0; i < reps; i++) { FEW(trans, rows, n, k, alpha, a, k, w, ld, beta, c, n); a[0] = c[0] * (T)1e-9; } \
        t = (now() - t0) / reps; best[0] = t < best[0] ? t : best[0];                          \
        t0 = now();                                                                            \
        for (i = 0; i < reps; i++) { PACKED(rows, n, k, alpha, a, k, bp, beta, c, n); a[0] = c[0] * (T)1e-9; } \
        t = (now() - t0) / reps; best[1] = t < best[1] ? t : best[1];                          \
        t0 = now();                                                                            \
        for (i = 0; i < reps; i++) {                                                           \
            for (r = 0; r < rows; r++)   /* row-major Wh is column-major Wh.T (G*H, H) */       \
                GEMV(trans ? "T" : "N", &ld, &H, &alpha, w, &ld, a + r * k, &one, &beta, c + r * n, &one); \
            a[0] = c[0] * (T)1e-9;                                                             \
        }                                                                                      \
        t = (now() - t0) / reps; best[2] = t < best[2] ? t : best[2];                          \
    }                                                                                          \
    printf("%s H=%d G=%d N=%d %s: in place %.0f ns, packed %.0f ns, GEMV %.0f ns "            \
           "(in place / GEMV %.2f, packed / GEMV %.2f; max error %.2g)\n", NAME, H, G, rows,  \
           trans ? "backward" : "forward", best[0] * 1e9, best[1] * 1e9, best[2] * 1e9,       \
           best[0] / best[2], best[1] / best[2], err);                                         \
    free(w); free(a); free(c); free(buf);                                                      \
}

int main(int argc, char** argv)
{
    int H, G, trans, rows;
    if (argc != 5) {
        fprintf(stderr, "usage: %s H G BACKWARD(0/1) ROWS(1..4)\n", argv[0]);
        return 2;
    }
    H = atoi(argv[1]); G = atoi(argv[2]); trans = atoi(argv[3]); rows = atoi(argv[4]);
    BENCH(float, "float32", few_gemm_s, pack_s, packed_size_s, packed_gemm_s, scipy_sgemv_)
    BENCH(double, "float64", few_gemm_d, pack_d, packed_size_d, packed_gemm_d, scipy_dgemv_)
    return 0;
}
