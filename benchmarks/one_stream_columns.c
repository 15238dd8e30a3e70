/* One stream (N = 1) on two cores: each step's product and gate work split by columns between
 * two threads with a spin barrier per step, and two stacked layers run as a wavefront, each
 * timed against one thread, in C with OpenMP, float32 and float64.
 *
 *   gcc -O3 -mavx2 -mfma -fno-trapping-math -fopenmp -Isrc \
 *       benchmarks/one_stream_columns.c -o one_stream_columns -lm
 *   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_WAIT_POLICY=passive OMP_PROC_BIND=close \
 *       OMP_PLACES=cores ./one_stream_columns [ROUNDS [H ...]]      (default 7; 64 .. 1024)
 *
 * At N = 1 a step is a vector-matrix product h_{t-1} @ Wh (src/_packed.h's few-rows kernel over
 * Wh packed once, as the AVX2 build's kernels run it from 32 steps on) and elementwise work on
 * one row. Steps depend on each other, so the only parallelism inside a step is across the
 * columns of its result: thread s of two computes columns [c_s, c_{s+1}) of every step from its
 * own packed column panels of Wh (it reads only its half), then all threads wait at a barrier
 * before the next step reads the whole row. What is timed, for H in 64 .. 1024 (D = H):
 *
 *   elman fwd   h_t = tanh(xw_t + h_{t-1} @ Wh), xw precomputed (T, H)
 *   elman bwd   dA_t = (dh_t + dA_{t+1} @ Wh.T) * (1 - h_t**2), columns of dA_t split
 *   lstm fwd    gates = xw_t + h_{t-1} @ Wh (H, 4H), then c_t, h_t; thread s owns hidden units
 *               [u_s, u_{s+1}) and with them the matching i, f, g, o columns (its Wh columns
 *               gathered and packed as one (H, 4 * units) block), so its gate math needs only
 *               its own product
 *   wavefront   two stacked Elman layers: layer 1's input xw1 = h0 @ Wx1 (D = H); one thread
 *               runs layer 0, then xw1 over all steps (products of XW_ROWS rows), then layer 1
 *               (the way the layers run one after the other today), or both layers step by
 *               step; on two
 *               threads thread 0 runs layer 0 while thread 1 runs layer 1 behind it, with xw1
 *               made per step by thread 1 ("per step") or by thread 0 over blocks of WF_CHUNK
 *               steps just after it made them ("blocks")
 *
 * For each, variants are timed in turn within a round, ROUNDS rounds, and the minimum over
 * rounds printed as ms per 1000 steps: "one" (one thread, the whole Wh), "barrier" and "flags"
 * (two threads; a sense-reversing counter barrier, or each thread publishing its step count
 * on its own cache line and waiting for the other's: both C11 atomics, spinning with pause,
 * and yielding the core only after SPIN_LIMIT pauses in one wait), and "half" (one thread
 * computing only its half of the columns with no barrier: what two threads would take if
 * synchronising were free), then one / barrier and one / flags (the speed-ups). The
 * wavefront's columns are "layers" and "steps-1t" (one thread: layer by layer, or step by
 * step), "per-step" and "blocks" (two threads), and layers / per-step, layers / blocks. The
 * barriers' own cost per step is timed in an empty step loop (first lines). Every two-thread
 * variant's result is compared with the one-thread result (max abs diff printed; the split
 * computes every element by the same sum in the same order, so 0 is expected; the wavefront's
 * xw1 differs in summation blocks, so to rounding), and the program aborts on a mismatch.
 *
 * Each test prints a second line, "windows=K": the fastest window of K steps (~25 us on one
 * thread; thread 0 notes the wall clock every K steps) in us per step, and its ratios. On a
 * busy machine most such windows run with both threads on a core (a time slice is
 * milliseconds), so the fastest shows what two free cores would do, where the totals show the
 * load; on a quiet machine the two lines agree. (The wavefront has no window figures: its
 * threads run apart, so no one thread's windows time the pair.) The synchronisation alone is
 * printed both ways too.
 *
 * TESTS=elman,lstm,wavefront (any of them) runs only those. CPU_CLOCK=1 times with the
 * calling thread's CPU time instead of the wall clock: on a busy machine that leaves out the
 * time the thread waited for a core, so the one-thread columns
 * ("one", "half", "layers", "steps-1t") stay meaningful; the two-thread ones do not (a waiter's
 * spinning counts, its partner's time away does not).
 *
 * T is chosen so that a run takes ~100 ms on one thread: the states are stored for T_max steps
 * at most (T_max * width <= 2M elements) and the step loop repeats over them if it needs more.
 * Spinning on a machine with fewer free cores than threads is catastrophic (a waiter burns the
 * time slice its partner needs): only a quiet machine gives meaningful two-thread totals.
 */
#ifndef REAL
#define _GNU_SOURCE
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "_packed.h"

#define MAX_ELEMS (1 << 21)   /* states stored: T_max * width elements at most */
#define TARGET_S 0.1          /* one run on one thread */
#define WINDOW_S 25e-6        /* a window of steps, on one thread */
#define WF_CHUNK 32           /* the wavefront's blocks of layer-1 input projections */
#define XW_ROWS 128           /* one thread's layer-1 input projection: rows per product (the
                                 packed GEMM re-reads its rows once per column panel) */

static clockid_t clock_used = CLOCK_MONOTONIC;

static double now(void)
{
    struct timespec t;
    clock_gettime(clock_used, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* A waiter's pause: spin, and past SPIN_LIMIT pauses in one wait also give the core away
 * (sched_yield), so that on a machine with fewer free cores than threads the partner can
 * run. A quiet machine's waits end long before (-DSPIN_LIMIT=0: spin only, never yield). */
#ifndef SPIN_LIMIT
#define SPIN_LIMIT 4096
#endif

static inline void wait_pause(int* spins)
{
    if (SPIN_LIMIT > 0 && ++*spins > SPIN_LIMIT) sched_yield();
    else _mm_pause();
}

/* Sense-reversing counter barrier: the last to arrive resets the count and flips the sense;
 * the others spin on the sense. Count and sense on their own cache lines. */
typedef struct {
    alignas(64) atomic_int count;
    alignas(64) atomic_int sense;
    int n_threads;
} spin_barrier;

static inline void barrier_wait(spin_barrier* b, int* my_sense)
{
    int s = !*my_sense, spins = 0;
    *my_sense = s;
    if (atomic_fetch_add_explicit(&b->count, 1, memory_order_acq_rel) == b->n_threads - 1) {
        atomic_store_explicit(&b->count, 0, memory_order_relaxed);
        atomic_store_explicit(&b->sense, s, memory_order_release);
    } else {
        while (atomic_load_explicit(&b->sense, memory_order_acquire) != s) wait_pause(&spins);
    }
}

/* Two threads: each stores how many steps it finished on its own line and waits until the
 * other has finished as many (no read-modify-write, one line each way per step). */
typedef struct {
    alignas(64) atomic_long done[2][8];   /* done[s][0]; the rest pads to a cache line */
} pair_flags;

static inline void pair_wait(pair_flags* f, int s, long step)
{
    int spins = 0;
    atomic_store_explicit(&f->done[s][0], step, memory_order_release);
    while (atomic_load_explicit(&f->done[1 - s][0], memory_order_acquire) < step)
        wait_pause(&spins);
}

enum { SYNC_NONE, SYNC_BARRIER, SYNC_FLAGS };

typedef struct {
    int kind;
    spin_barrier bar;
    pair_flags flags;
} sync_state;

static void sync_reset(sync_state* y, int kind)
{
    y->kind = kind;
    atomic_store(&y->bar.count, 0);
    atomic_store(&y->bar.sense, 0);
    y->bar.n_threads = 2;
    atomic_store(&y->flags.done[0][0], 0);
    atomic_store(&y->flags.done[1][0], 0);
}

/* Thread s's wait after its step number `step` (counting from 1 over the whole run). */
static inline void step_sync(sync_state* y, int s, long step, int* sense)
{
    if (y->kind == SYNC_BARRIER) barrier_wait(&y->bar, sense);
    else if (y->kind == SYNC_FLAGS) pair_wait(&y->flags, s, step);
}


static void* xalloc(size_t bytes)
{
    void* p = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(1); }
    memset(p, 0, (bytes + 63) / 64 * 64);
    return p;
}

/* Short windows: the recording thread notes the wall clock every `mark_every` steps, and the
 * fastest window (us per step) is kept. On a busy machine a window of ~25 us mostly runs
 * with both threads on a core (a time slice is milliseconds), so the fastest windows show
 * what the whole run would take on two free cores; the run's total shows the load. */
static double* mark_buf;
static long mark_n, mark_cap, mark_every;

static inline void mark(long step)
{
    if (mark_every && step % mark_every == 0 && mark_n < mark_cap) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        mark_buf[mark_n++] = t.tv_sec + 1e-9 * t.tv_nsec;
    }
}

static void marks_begin(long every, long steps)
{
    mark_cap = steps / every + 2;
    mark_buf = realloc(mark_buf, sizeof(double) * mark_cap);
    mark_n = 0;
    mark_every = every;
}

/* the fastest window's seconds per step (1e9 if fewer than two marks), and stop recording */
static double marks_min(void)
{
    double best = 1e9;
    long i;
    for (i = 1; i < mark_n; i++)
        if ((mark_buf[i] - mark_buf[i - 1]) / mark_every < best)
            best = (mark_buf[i] - mark_buf[i - 1]) / mark_every;
    mark_every = 0;
    return best;
}

/* The barriers alone: ns per step of an empty step loop on two threads, over the whole run
 * (*total) and in the fastest window of 256 steps (returned). */
static double sync_cost(int kind, long steps, double* total)
{
    static sync_state y;
    double best = 1e9, wbest = 1e9, w;
    int round;
    for (round = 0; round < 5; round++) {
        double t0;
        sync_reset(&y, kind);
        marks_begin(256, steps);
        t0 = now();
#pragma omp parallel num_threads(2)
        {
            int s = omp_get_thread_num(), sense = 0;
            long i;
            for (i = 1; i <= steps; i++) {
                step_sync(&y, s, i, &sense);
                if (s == 0) mark(i);
            }
        }
        t0 = (now() - t0) / steps;
        w = marks_min();
        best = t0 < best ? t0 : best;
        wbest = w < wbest ? w : wbest;
    }
    *total = best * 1e9;
    return wbest * 1e9;
}

/* One row of results per test and dtype. */
static void report(const char* test, const char* dtype, int H, long steps, const double* best,
                   const double* wbest, long every, const char** names, int n, double diff)
{
    int i;
    printf("%-10s %-7s H=%5d steps=%7ld", test, dtype, H, steps);
    for (i = 0; i < n; i++) printf("  %s %8.3f", names[i], best[i] * 1e3 / steps * 1e3);
    printf("  %s/%s %.2f", names[0], names[1], best[0] / best[1]);
    if (n > 2) printf("  %s/%s %.2f", names[0], names[2], best[0] / best[2]);
    printf("  maxdiff %.2g\n", diff);
    printf("%-10s %-7s H=%5d windows=%5ld", test, dtype, H, every);
    for (i = 0; i < n; i++)
        if (wbest[i] < 1e9) printf("  %s %8.3f", names[i], wbest[i] * 1e6);
        else printf("  %s %8s", names[i], "-");
    if (wbest[0] < 1e9 && wbest[1] < 1e9)
        printf("  %s/%s %.2f", names[0], names[1], wbest[0] / wbest[1]);
    if (n > 2 && wbest[0] < 1e9 && wbest[2] < 1e9)
        printf("  %s/%s %.2f", names[0], names[2], wbest[0] / wbest[2]);
    printf("\n");
    fflush(stdout);
}

#define REAL float
#define SFX(name) name##_s
#define PACK pack_s
#define PACKED_SIZE packed_size_s
#define GEMM packed_gemm_s
#define DTYPE "float32"
#define TOL 1e-4
#include "one_stream_columns.c"   /* this file again: the body below */
#undef REAL
#undef SFX
#undef PACK
#undef PACKED_SIZE
#undef GEMM
#undef DTYPE
#undef TOL
#define REAL double
#define SFX(name) name##_d
#define PACK pack_d
#define PACKED_SIZE packed_size_d
#define GEMM packed_gemm_d
#define DTYPE "float64"
#define TOL 1e-10
#include "one_stream_columns.c"   /* this file again: the body below */

int main(int argc, char** argv)
{
    int sizes[16] = {64, 128, 256, 512, 1024}, n_sizes = 5, rounds = 7, i;
    if (!PACKED_GEMM) { fprintf(stderr, "build with -mavx2 -mfma\n"); return 2; }
    if (getenv("CPU_CLOCK") && atoi(getenv("CPU_CLOCK"))) clock_used = CLOCK_THREAD_CPUTIME_ID;
    if (argc > 1) rounds = atoi(argv[1]);
    if (argc > 2) {
        n_sizes = argc - 2 > 16 ? 16 : argc - 2;
        for (i = 0; i < n_sizes; i++) sizes[i] = atoi(argv[2 + i]);
    }
    for (i = 0; i < n_sizes; i++)
        if (sizes[i] < 32 || sizes[i] % 32) {
            fprintf(stderr, "H must be a multiple of 32 (two halves of whole panels)\n");
            return 2;
        }
    printf("threads available %d; ms per 1000 steps, min over %d rounds\n",
           omp_get_max_threads(), rounds);
    {
        double tb, tf, wb = sync_cost(SYNC_BARRIER, 2000000, &tb),
               wf = sync_cost(SYNC_FLAGS, 2000000, &tf);
        printf("sync alone (ns/step): barrier %.1f, flags %.1f\n", tb, tf);
        printf("sync alone (ns/step, fastest window of 256 steps): barrier %.1f, flags %.1f\n",
               wb, wf);
    }
    for (i = 0; i < n_sizes; i++) {
        run_all_s(sizes[i], rounds, getenv("TESTS"));
        run_all_d(sizes[i], rounds, getenv("TESTS"));
    }
    return 0;
}

#else  /* the body, once per dtype: REAL, SFX(name), PACK, PACKED_SIZE, GEMM, DTYPE, TOL */

/* exp(y) for |y| <= 80 (float) or 700 (double): y = k ln2 + r, |r| <= ln2 / 2, exp(r) by its
 * Taylor polynomial (degree 7 or 13), 2**k built in the exponent bits. Branch-free, so that a
 * loop over it vectorises (libm's calls would cost more than the product at small H). */
static inline REAL SFX(exp_v)(REAL y)
{
    if (sizeof(REAL) == 4) {
        float kd = (float)y * 1.44269504f + 12582912.0f, k = kd - 12582912.0f;
        float r = ((float)y - k * 0.693359375f) + k * 2.12194440e-4f;
        float p = 1.0f / 5040;
        uint32_t bits;
        float scale;
        p = p * r + 1.0f / 720; p = p * r + 1.0f / 120; p = p * r + 1.0f / 24;
        p = p * r + 1.0f / 6; p = p * r + 0.5f; p = p * r + 1.0f; p = p * r + 1.0f;
        memcpy(&bits, &kd, 4);
        bits = (bits + 127u) << 23;
        memcpy(&scale, &bits, 4);
        return (REAL)(p * scale);
    } else {
        double kd = (double)y * 1.4426950408889634 + 6755399441055744.0,
               k = kd - 6755399441055744.0;
        double r = ((double)y - k * 6.93145751953125e-1) - k * 1.42860682030941723212e-6;
        double p = 1.0 / 6227020800.0;
        uint64_t bits;
        double scale;
        p = p * r + 1.0 / 479001600; p = p * r + 1.0 / 39916800; p = p * r + 1.0 / 3628800;
        p = p * r + 1.0 / 362880; p = p * r + 1.0 / 40320; p = p * r + 1.0 / 5040;
        p = p * r + 1.0 / 720; p = p * r + 1.0 / 120; p = p * r + 1.0 / 24;
        p = p * r + 1.0 / 6; p = p * r + 0.5; p = p * r + 1.0; p = p * r + 1.0;
        memcpy(&bits, &kd, 8);
        bits = (bits + 1023u) << 52;
        memcpy(&scale, &bits, 8);
        return (REAL)(p * scale);
    }
}

static inline REAL SFX(tanh_v)(REAL x)
{
    REAL a = x < 0 ? -x : x;
    REAL e = SFX(exp_v)(a > 20 ? 40 : 2 * a);
    REAL t = 1 - 2 / (e + 1);
    return x < 0 ? -t : t;
}

static inline REAL SFX(sigmoid_v)(REAL x)
{
    REAL a = x < 0 ? -x : x;
    REAL e = SFX(exp_v)(a > 80 ? -80 : -a);
    return x < 0 ? e / (1 + e) : 1 / (1 + e);
}

static void SFX(fill)(REAL* a, size_t n, unsigned seed, REAL scale)
{
    size_t i;
    for (i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        a[i] = scale * (REAL)((int)(seed >> 9) % 2001 - 1000) / 1000;
    }
}

static REAL SFX(max_diff)(const REAL* a, const REAL* b, size_t n)
{
    REAL d = 0;
    size_t i;
    for (i = 0; i < n; i++) d = fabs(a[i] - b[i]) > d ? fabs(a[i] - b[i]) : d;
    return d;
}

/* Columns [c0, c1) of op(W) (k, n_all) packed for one thread: the columns are gathered first
 * when the caller asks for several blocks (the LSTM's four gates), so one packed block of
 * width sum(c1 - c0) serves them. W is row-major (k, n_all), or (n_all, k) if trans. */
typedef struct {
    REAL* bp;       /* aligned start of the panels */
    void* buf;
    int n;          /* columns packed */
} SFX(panel_set);

static SFX(panel_set) SFX(pack_cols)(int trans, int k, int n_all, const REAL* w, int n_blocks,
                                     int block, int c0, int c1)
{
    SFX(panel_set) p;
    int n = n_blocks * (c1 - c0), b, q, r;
    REAL* gathered = xalloc(sizeof(REAL) * (size_t)k * n);
    for (b = 0; b < n_blocks; b++)
        for (q = 0; q < c1 - c0; q++)
            for (r = 0; r < k; r++)     /* gathered is op(W)'s selected columns, (k, n) */
                gathered[(size_t)r * n + b * (c1 - c0) + q] =
                    trans ? w[(size_t)(b * block + c0 + q) * k + r]
                          : w[(size_t)r * n_all + b * block + c0 + q];
    p.buf = xalloc(sizeof(REAL) * PACKED_SIZE(k, n));
    p.bp = PACK(0, k, n, gathered, n, p.buf);
    p.n = n;
    free(gathered);
    return p;
}

/* Prefetch a row that the other thread has just written (FETCH_ROW=1, the default): the
 * product reads it element by element in order, and the out-of-order window covers less than
 * a cache line of it, so without this each of its lines held by the other core is one miss
 * after another, a core-to-core transfer each. */
#ifndef FETCH_ROW
#define FETCH_ROW 1
#endif

static inline void SFX(fetch_row)(const REAL* row, int n)
{
    int i;
    if (FETCH_ROW)
        for (i = 0; i < n; i += 64 / (int)sizeof(REAL)) _mm_prefetch((const char*)(row + i),
                                                                     _MM_HINT_T0);
}

/* ---- Elman forward: thread s's columns [c0, c1) of steps 0..T-1, `reps` times ---------- */
typedef struct {
    int H, T;
    REAL *xw, *hs, *h0, *dh, *dA, *zero;
    SFX(panel_set) full, fwd[2], bwd_full, bwd[2];
} SFX(elman);

static void SFX(elman_fwd_cols)(SFX(elman)* e, const REAL* bp, int c0, int c1, int reps, int s,
                                sync_state* y)
{
    int H = e->H, T = e->T, t, j, rep, sense = 0;
    long step = 0;
    for (rep = 0; rep < reps; rep++)
        for (t = 0; t < T; t++) {
            const REAL* hprev = t ? e->hs + (size_t)(t - 1) * H : e->h0;
            REAL* h = e->hs + (size_t)t * H;
            memcpy(h + c0, e->xw + (size_t)t * H + c0, sizeof(REAL) * (c1 - c0));
            SFX(fetch_row)(hprev, H);
            GEMM(1, c1 - c0, H, 1, hprev, H, bp, 1, h + c0, H);   /* h[c] += hprev @ Wh[:, c] */
            for (j = c0; j < c1; j++) h[j] = SFX(tanh_v)(h[j]);
            ++step;
            if (y) step_sync(y, s, step, &sense);
            if (s == 0) mark(step);
        }
}

/* dA_t = (dh_t + dA_{t+1} @ Wh.T) * (1 - h_t**2), t = T-1 .. 0, dA_T = 0 */
static void SFX(elman_bwd_cols)(SFX(elman)* e, const REAL* bp, int c0, int c1, int reps, int s,
                                sync_state* y)
{
    int H = e->H, T = e->T, t, j, rep, sense = 0;
    long step = 0;
    for (rep = 0; rep < reps; rep++)
        for (t = T - 1; t >= 0; t--) {
            const REAL* next = t < T - 1 ? e->dA + (size_t)(t + 1) * H : e->zero;
            const REAL* h = e->hs + (size_t)t * H;
            REAL* dA = e->dA + (size_t)t * H;
            memcpy(dA + c0, e->dh + (size_t)t * H + c0, sizeof(REAL) * (c1 - c0));
            SFX(fetch_row)(next, H);
            GEMM(1, c1 - c0, H, 1, next, H, bp, 1, dA + c0, H);  /* dA[c] += next @ Wh.T[:, c] */
            for (j = c0; j < c1; j++) dA[j] *= 1 - h[j] * h[j];
            ++step;
            if (y) step_sync(y, s, step, &sense);
            if (s == 0) mark(step);
        }
}

/* both halves at once: one parallel region for the whole run, a barrier after each step */
static void SFX(elman_two)(SFX(elman)* e, int dir, int reps, sync_state* y)
{
#pragma omp parallel num_threads(2)
    {
        int s = omp_get_thread_num(), half = e->H / 2;
        if (dir) SFX(elman_bwd_cols)(e, e->bwd[s].bp, s * half, (s + 1) * half, reps, s, y);
        else SFX(elman_fwd_cols)(e, e->fwd[s].bp, s * half, (s + 1) * half, reps, s, y);
    }
}

/* ---- LSTM forward: thread s's hidden units [u0, u1), gates i, f, g, o ------------------- */
typedef struct {
    int H, T;
    REAL *xw, *hs, *cs, *h0, *c0, *gates[2];
    SFX(panel_set) full, half[2];
} SFX(lstm);

/* n hidden units: gate holds the product's i, f, g, o columns (n each), xw the step's input
 * part with the gates H apart */
static inline void SFX(lstm_cells)(int n, int H, const REAL* restrict gate,
                                   const REAL* restrict xw, const REAL* restrict cprev,
                                   REAL* restrict c, REAL* restrict h)
{
    int j;
    for (j = 0; j < n; j++) {
        REAL ig = SFX(sigmoid_v)(gate[j] + xw[j]);
        REAL fg = SFX(sigmoid_v)(gate[n + j] + xw[H + j]);
        REAL gg = SFX(tanh_v)(gate[2 * n + j] + xw[2 * H + j]);
        REAL og = SFX(sigmoid_v)(gate[3 * n + j] + xw[3 * H + j]);
        REAL cj = fg * cprev[j] + ig * gg;
        c[j] = cj;
        h[j] = og * SFX(tanh_v)(cj);
    }
}

static void SFX(lstm_fwd_units)(SFX(lstm)* m, const SFX(panel_set)* ps, REAL* gate, int u0,
                                int u1, int reps, int s, sync_state* y)
{
    int H = m->H, T = m->T, n = u1 - u0, t, rep, sense = 0;
    long step = 0;
    for (rep = 0; rep < reps; rep++)
        for (t = 0; t < T; t++) {
            const REAL* hprev = t ? m->hs + (size_t)(t - 1) * H : m->h0;
            const REAL* cprev = t ? m->cs + (size_t)(t - 1) * H : m->c0;
            const REAL* xw = m->xw + (size_t)t * 4 * H + u0;
            REAL* h = m->hs + (size_t)t * H + u0;
            REAL* c = m->cs + (size_t)t * H + u0;
            SFX(fetch_row)(hprev, H);
            GEMM(1, 4 * n, H, 1, hprev, H, ps->bp, 0, gate, 4 * n);  /* its i, f, g, o cols */
            SFX(lstm_cells)(n, H, gate, xw, cprev + u0, c, h);
            ++step;
            if (y) step_sync(y, s, step, &sense);
            if (s == 0) mark(step);
        }
}

static void SFX(lstm_two)(SFX(lstm)* m, int reps, sync_state* y)
{
#pragma omp parallel num_threads(2)
    {
        int s = omp_get_thread_num(), half = m->H / 2;
        SFX(lstm_fwd_units)(m, &m->half[s], m->gates[s], s * half, (s + 1) * half, reps, s, y);
    }
}

/* ---- Two stacked Elman layers ------------------------------------------------------------ */
typedef struct {
    int H, T;
    REAL *xw0, *h0s, *xw1, *h1s, *zero;
    SFX(panel_set) wh0, wx1, wh1;
    alignas(64) atomic_long made;     /* steps of layer 0 (and their xw1, if blocks) done */
} SFX(stack);

static inline void SFX(layer_step)(int H, const REAL* bp, const REAL* hprev, const REAL* xw,
                                   REAL* h)
{
    int j;
    memcpy(h, xw, sizeof(REAL) * H);
    GEMM(1, H, H, 1, hprev, H, bp, 1, h, H);
    for (j = 0; j < H; j++) h[j] = SFX(tanh_v)(h[j]);
}

#define LAYER_PREV(hs, t) ((t) ? (hs) + (size_t)((t) - 1) * H : m->zero)

/* one thread: layer 0, xw1 = h0s @ Wx1 over all steps (in blocks of rows), layer 1 */
static void SFX(stack_layers)(SFX(stack)* m, int reps)
{
    int H = m->H, T = m->T, t, rep;
    for (rep = 0; rep < reps; rep++) {
        for (t = 0; t < T; t++)
            SFX(layer_step)(H, m->wh0.bp, LAYER_PREV(m->h0s, t), m->xw0 + (size_t)t * H,
                            m->h0s + (size_t)t * H);
        for (t = 0; t < T; t += XW_ROWS)      /* xw1 = h0s @ Wx1, rows in blocks that L2 holds */
            GEMM(T - t < XW_ROWS ? T - t : XW_ROWS, H, H, 1, m->h0s + (size_t)t * H, H,
                 m->wx1.bp, 0, m->xw1 + (size_t)t * H, H);
        for (t = 0; t < T; t++)
            SFX(layer_step)(H, m->wh1.bp, LAYER_PREV(m->h1s, t), m->xw1 + (size_t)t * H,
                            m->h1s + (size_t)t * H);
    }
}

/* one thread, step by step: layer 0's step t, its xw1_t, layer 1's step t */
static void SFX(stack_steps)(SFX(stack)* m, int reps)
{
    int H = m->H, T = m->T, t, rep;
    for (rep = 0; rep < reps; rep++)
        for (t = 0; t < T; t++) {
            SFX(layer_step)(H, m->wh0.bp, LAYER_PREV(m->h0s, t), m->xw0 + (size_t)t * H,
                            m->h0s + (size_t)t * H);
            GEMM(1, H, H, 1, m->h0s + (size_t)t * H, H, m->wx1.bp, 0, m->xw1 + (size_t)t * H,
                 H);
            SFX(layer_step)(H, m->wh1.bp, LAYER_PREV(m->h1s, t), m->xw1 + (size_t)t * H,
                            m->h1s + (size_t)t * H);
        }
}

/* two threads: thread 0 layer 0 (and, if chunk > 0, xw1 in blocks of chunk steps), thread 1
 * layer 1 (and, if chunk == 0, xw1_t per step) as soon as its input is made */
static void SFX(stack_wavefront)(SFX(stack)* m, int reps, int chunk)
{
    atomic_store(&m->made, 0);
#pragma omp parallel num_threads(2)
    {
        int H = m->H, T = m->T, t, t0, rep, s = omp_get_thread_num(), spins;
        long base;
        for (rep = 0; rep < reps; rep++) {
            base = (long)rep * T;
            if (s == 0) {
                t0 = 0;
                for (t = 0; t < T; t++) {
                    SFX(layer_step)(H, m->wh0.bp, LAYER_PREV(m->h0s, t),
                                    m->xw0 + (size_t)t * H, m->h0s + (size_t)t * H);
                    if (chunk == 0) {
                        atomic_store_explicit(&m->made, base + t + 1, memory_order_release);
                    } else if (t + 1 - t0 == chunk || t == T - 1) {
                        GEMM(t + 1 - t0, H, H, 1, m->h0s + (size_t)t0 * H, H, m->wx1.bp, 0,
                             m->xw1 + (size_t)t0 * H, H);    /* xw1[t0:t+1] = h0s[..] @ Wx1 */
                        atomic_store_explicit(&m->made, base + t + 1, memory_order_release);
                        t0 = t + 1;
                    }
                }
                /* the next rep rewrites h0s: wait until layer 1 has read all of it */
                spins = 0;
                while (atomic_load_explicit(&m->made, memory_order_acquire) != -(base + T))
                    wait_pause(&spins);
            } else {
                for (t = 0; t < T; t++) {
                    spins = 0;
                    while (atomic_load_explicit(&m->made, memory_order_acquire) <= base + t)
                        wait_pause(&spins);
                    if (chunk == 0)
                        GEMM(1, H, H, 1, m->h0s + (size_t)t * H, H, m->wx1.bp, 0,
                             m->xw1 + (size_t)t * H, H);
                    SFX(layer_step)(H, m->wh1.bp, LAYER_PREV(m->h1s, t),
                                    m->xw1 + (size_t)t * H, m->h1s + (size_t)t * H);
                }
                atomic_store_explicit(&m->made, -(base + T), memory_order_release);
            }
        }
    }
}

/* steps per stored sequence and repetitions, for ~TARGET_S a run at `step_s` per step */
static void SFX(plan)(double step_s, int width, int* T, int* reps)
{
    long want = (long)(TARGET_S / step_s) + 1, t_max = MAX_ELEMS / width;
    *T = (int)(want < t_max ? want : t_max);
    if (*T < 64) *T = 64;
    *reps = (int)((want + *T - 1) / *T);
}

#define TIME_INTO(slot, code) do { double t0_, w_;                                           \
                                   marks_begin(every, (long)T * reps);                         \
                                   t0_ = now(); code; t0_ = now() - t0_;                       \
                                   w_ = marks_min();                                           \
                                   if (t0_ < best[slot]) best[slot] = t0_;                     \
                                   if (w_ < wbest[slot]) wbest[slot] = w_; } while (0)

static void SFX(run_elman)(int H, int rounds)
{
    static sync_state y;
    SFX(elman) e;
    REAL *wh = xalloc(sizeof(REAL) * H * H), *ref, *ref_dA;
    double best[4] = {1e9, 1e9, 1e9, 1e9}, wbest[4] = {1e9, 1e9, 1e9, 1e9}, diff = 0, t0;
    long every;
    const char* names[4] = {"one", "barrier", "flags", "half"};
    int T, reps, round, v, half = H / 2, dir;
    e.H = H;
    SFX(fill)(wh, (size_t)H * H, 1, (REAL)(1.5 / sqrt(H)));
    e.full = SFX(pack_cols)(0, H, H, wh, 1, H, 0, H);
    e.fwd[0] = SFX(pack_cols)(0, H, H, wh, 1, H, 0, half);
    e.fwd[1] = SFX(pack_cols)(0, H, H, wh, 1, H, half, H);
    e.bwd_full = SFX(pack_cols)(1, H, H, wh, 1, H, 0, H);
    e.bwd[0] = SFX(pack_cols)(1, H, H, wh, 1, H, 0, half);
    e.bwd[1] = SFX(pack_cols)(1, H, H, wh, 1, H, half, H);
    /* plan from a short one-thread run */
    e.T = 256;
    e.xw = xalloc(sizeof(REAL) * 256 * H);
    e.hs = xalloc(sizeof(REAL) * 256 * H);
    e.h0 = xalloc(sizeof(REAL) * H);
    SFX(elman_fwd_cols)(&e, e.full.bp, 0, H, 1, 0, NULL);
    t0 = now();
    SFX(elman_fwd_cols)(&e, e.full.bp, 0, H, 4, 0, NULL);
    t0 = (now() - t0) / 1024;                          /* one step, one thread */
    SFX(plan)(t0, H, &T, &reps);
    every = (long)(WINDOW_S / t0) + 1;
    free(e.xw); free(e.hs);
    e.T = T;
    e.xw = xalloc(sizeof(REAL) * T * H); e.hs = xalloc(sizeof(REAL) * T * H);
    e.dh = xalloc(sizeof(REAL) * T * H); e.dA = xalloc(sizeof(REAL) * T * H);
    e.zero = xalloc(sizeof(REAL) * H);
    ref = xalloc(sizeof(REAL) * T * H); ref_dA = xalloc(sizeof(REAL) * T * H);
    SFX(fill)(e.xw, (size_t)T * H, 2, 1);
    SFX(fill)(e.dh, (size_t)T * H, 3, 1);
    SFX(fill)(e.h0, H, 4, (REAL)0.5);
    for (dir = 0; dir < 2; dir++) {
        const REAL* full = dir ? e.bwd_full.bp : e.full.bp;
        void (*cols)(SFX(elman)*, const REAL*, int, int, int, int, sync_state*) =
            dir ? SFX(elman_bwd_cols) : SFX(elman_fwd_cols);
        REAL* out = dir ? e.dA : e.hs;
        REAL* want = dir ? ref_dA : ref;
        SFX(elman_fwd_cols)(&e, e.full.bp, 0, H, 1, 0, NULL);   /* hs, for the backward */
        cols(&e, full, 0, H, 1, 0, NULL);
        memcpy(want, out, sizeof(REAL) * T * H);
        for (v = 0; v < 4; v++) best[v] = wbest[v] = 1e9;
        diff = 0;
        for (round = 0; round < rounds; round++) {
            TIME_INTO(0, cols(&e, full, 0, H, reps, 0, NULL));
            for (v = 1; v <= 2; v++) {
                sync_reset(&y, v == 1 ? SYNC_BARRIER : SYNC_FLAGS);
                memset(out, 0, sizeof(REAL) * T * H);
                TIME_INTO(v, SFX(elman_two)(&e, dir, reps, &y));
                if (round == 0) {
                    REAL d = SFX(max_diff)(out, want, (size_t)T * H);
                    diff = d > diff ? d : diff;
                }
            }
            TIME_INTO(3, cols(&e, (dir ? e.bwd[0] : e.fwd[0]).bp, 0, half, reps, 0, NULL));
        }
        if (diff != 0) { fprintf(stderr, "elman %s: two threads differ\n", DTYPE); abort(); }
        report(dir ? "elman bwd" : "elman fwd", DTYPE, H, (long)T * reps, best, wbest, every,
               names, 4, diff);
    }
    free(wh); free(e.xw); free(e.hs); free(e.dh); free(e.dA); free(e.h0); free(e.zero);
    free(ref); free(ref_dA);
    free(e.full.buf); free(e.fwd[0].buf); free(e.fwd[1].buf);
    free(e.bwd_full.buf); free(e.bwd[0].buf); free(e.bwd[1].buf);
}

static void SFX(run_lstm)(int H, int rounds)
{
    static sync_state y;
    SFX(lstm) m;
    REAL *wh = xalloc(sizeof(REAL) * H * 4 * H), *ref, *gate_full = xalloc(sizeof(REAL) * 4 * H);
    double best[4] = {1e9, 1e9, 1e9, 1e9}, wbest[4] = {1e9, 1e9, 1e9, 1e9}, diff = 0, t0;
    long every;
    const char* names[4] = {"one", "barrier", "flags", "half"};
    int T, reps, round, v, half = H / 2;
    m.H = H;
    SFX(fill)(wh, (size_t)H * 4 * H, 5, (REAL)(1.5 / sqrt(H)));
    m.full = SFX(pack_cols)(0, H, 4 * H, wh, 4, H, 0, H);
    m.half[0] = SFX(pack_cols)(0, H, 4 * H, wh, 4, H, 0, half);
    m.half[1] = SFX(pack_cols)(0, H, 4 * H, wh, 4, H, half, H);
    m.gates[0] = xalloc(sizeof(REAL) * 4 * H);
    m.gates[1] = xalloc(sizeof(REAL) * 4 * H);
    m.h0 = xalloc(sizeof(REAL) * H); m.c0 = xalloc(sizeof(REAL) * H);
    m.T = 256;
    m.xw = xalloc(sizeof(REAL) * 256 * 4 * H);
    m.hs = xalloc(sizeof(REAL) * 256 * H); m.cs = xalloc(sizeof(REAL) * 256 * H);
    SFX(lstm_fwd_units)(&m, &m.full, gate_full, 0, H, 1, 0, NULL);
    t0 = now();
    SFX(lstm_fwd_units)(&m, &m.full, gate_full, 0, H, 4, 0, NULL);
    t0 = (now() - t0) / 1024;                          /* one step, one thread */
    SFX(plan)(t0, 4 * H, &T, &reps);
    every = (long)(WINDOW_S / t0) + 1;
    free(m.xw); free(m.hs); free(m.cs);
    m.T = T;
    m.xw = xalloc(sizeof(REAL) * T * 4 * H);
    m.hs = xalloc(sizeof(REAL) * T * H); m.cs = xalloc(sizeof(REAL) * T * H);
    ref = xalloc(sizeof(REAL) * T * H);
    SFX(fill)(m.xw, (size_t)T * 4 * H, 6, 1);
    SFX(fill)(m.h0, H, 7, (REAL)0.5);
    SFX(fill)(m.c0, H, 8, (REAL)0.5);
    SFX(lstm_fwd_units)(&m, &m.full, gate_full, 0, H, 1, 0, NULL);
    memcpy(ref, m.hs, sizeof(REAL) * T * H);
    for (round = 0; round < rounds; round++) {
        TIME_INTO(0, SFX(lstm_fwd_units)(&m, &m.full, gate_full, 0, H, reps, 0, NULL));
        for (v = 1; v <= 2; v++) {
            sync_reset(&y, v == 1 ? SYNC_BARRIER : SYNC_FLAGS);
            memset(m.hs, 0, sizeof(REAL) * T * H);
            TIME_INTO(v, SFX(lstm_two)(&m, reps, &y));
            if (round == 0) {
                REAL d = SFX(max_diff)(m.hs, ref, (size_t)T * H);
                diff = d > diff ? d : diff;
            }
        }
        TIME_INTO(3, SFX(lstm_fwd_units)(&m, &m.half[0], m.gates[0], 0, half, reps, 0, NULL));
    }
    if (diff != 0) { fprintf(stderr, "lstm %s: two threads differ\n", DTYPE); abort(); }
    report("lstm fwd", DTYPE, H, (long)T * reps, best, wbest, every, names, 4,
               diff);
    free(wh); free(ref); free(gate_full); free(m.gates[0]); free(m.gates[1]);
    free(m.h0); free(m.c0); free(m.xw); free(m.hs); free(m.cs);
    free(m.full.buf); free(m.half[0].buf); free(m.half[1].buf);
}

static void SFX(run_stack)(int H, int rounds)
{
    SFX(stack)* m = xalloc(sizeof(SFX(stack)));
    REAL *wh0 = xalloc(sizeof(REAL) * H * H), *wx1 = xalloc(sizeof(REAL) * H * H),
         *wh1 = xalloc(sizeof(REAL) * H * H), *ref;
    double best[4] = {1e9, 1e9, 1e9, 1e9}, wbest[4] = {1e9, 1e9, 1e9, 1e9}, diff = 0, t0;
    long every;
    const char* names[4] = {"layers", "per-step", "blocks", "steps-1t"};
    int T, reps, round;
    m->H = H;
    SFX(fill)(wh0, (size_t)H * H, 9, (REAL)(1.5 / sqrt(H)));
    SFX(fill)(wx1, (size_t)H * H, 10, (REAL)(1.5 / sqrt(H)));
    SFX(fill)(wh1, (size_t)H * H, 11, (REAL)(1.5 / sqrt(H)));
    m->wh0 = SFX(pack_cols)(0, H, H, wh0, 1, H, 0, H);
    m->wx1 = SFX(pack_cols)(0, H, H, wx1, 1, H, 0, H);
    m->wh1 = SFX(pack_cols)(0, H, H, wh1, 1, H, 0, H);
    m->zero = xalloc(sizeof(REAL) * H);
    m->T = 256;
    m->xw0 = xalloc(sizeof(REAL) * 256 * H); m->h0s = xalloc(sizeof(REAL) * 256 * H);
    m->xw1 = xalloc(sizeof(REAL) * 256 * H); m->h1s = xalloc(sizeof(REAL) * 256 * H);
    SFX(stack_layers)(m, 1);
    t0 = now();
    SFX(stack_layers)(m, 4);
    t0 = (now() - t0) / 1024;                          /* one step, one thread */
    SFX(plan)(t0, H, &T, &reps);
    every = (long)(WINDOW_S / t0) + 1;
    free(m->xw0); free(m->h0s); free(m->xw1); free(m->h1s);
    m->T = T;
    m->xw0 = xalloc(sizeof(REAL) * T * H); m->h0s = xalloc(sizeof(REAL) * T * H);
    m->xw1 = xalloc(sizeof(REAL) * T * H); m->h1s = xalloc(sizeof(REAL) * T * H);
    ref = xalloc(sizeof(REAL) * T * H);
    SFX(fill)(m->xw0, (size_t)T * H, 12, 1);
    SFX(stack_layers)(m, 1);
    memcpy(ref, m->h1s, sizeof(REAL) * T * H);
    for (round = 0; round < rounds; round++) {
        REAL d;
        TIME_INTO(0, SFX(stack_layers)(m, reps));
        memset(m->h1s, 0, sizeof(REAL) * T * H);
        TIME_INTO(1, SFX(stack_wavefront)(m, reps, 0));
        d = SFX(max_diff)(m->h1s, ref, (size_t)T * H);
        diff = d > diff ? d : diff;
        memset(m->h1s, 0, sizeof(REAL) * T * H);
        TIME_INTO(2, SFX(stack_wavefront)(m, reps, WF_CHUNK));
        d = SFX(max_diff)(m->h1s, ref, (size_t)T * H);
        diff = d > diff ? d : diff;
        memset(m->h1s, 0, sizeof(REAL) * T * H);
        TIME_INTO(3, SFX(stack_steps)(m, reps));
        d = SFX(max_diff)(m->h1s, ref, (size_t)T * H);
        diff = d > diff ? d : diff;
    }
    if (!(diff <= TOL)) { fprintf(stderr, "wavefront %s: results differ\n", DTYPE); abort(); }
    report("wavefront", DTYPE, H, (long)T * reps, best, wbest, every, names, 4,
               diff);
    free(wh0); free(wx1); free(wh1); free(ref); free(m->zero);
    free(m->xw0); free(m->h0s); free(m->xw1); free(m->h1s);
    free(m->wh0.buf); free(m->wx1.buf); free(m->wh1.buf); free(m);
}

static void SFX(run_all)(int H, int rounds, const char* tests)
{
    if (!tests || strstr(tests, "elman")) SFX(run_elman)(H, rounds);
    if (!tests || strstr(tests, "lstm")) SFX(run_lstm)(H, rounds);
    if (!tests || strstr(tests, "wavefront")) SFX(run_stack)(H, rounds);
}

#endif
