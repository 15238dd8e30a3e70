/* A spinning barrier for the threads of one kernel call that share each step's work.
 *
 * One sequence (N = 1) has no shards to give threads, so a call splits each step's columns
 * between them instead (src/_columns.pxd): every thread computes its part of step t, then all
 * wait here before any reads the whole row of step t for step t + 1. A step lasts 0.1 to tens
 * of microseconds, so the wait must cost tens of nanoseconds: the waiters spin on one cache line
 * rather than sleep on a condition variable (microseconds to wake). A waiter that has spun
 * SPIN_LIMIT pauses in one wait also yields its core (sched_yield) each time round, so that on a
 * machine with fewer free cores than threads the thread it waits for can run.
 *
 * Sense-reversing counter: each thread flips its own sense, the last to arrive resets the count
 * and publishes the new sense; the others spin until they see it. Count and sense sit on their
 * own cache lines. A thread may ask the others to stop (Ctrl-C, seen by the calling thread): its
 * request reaches every thread leaving the same wait, so all stop after the same step.
 *
 * On a machine whose cores are taken by other processes, a thread of the team may wait for a
 * core for a whole time slice (milliseconds) at every step, and a call split between threads
 * can take a hundred times as long as on one thread. So the barrier counts the waits that
 * outlast SPIN_LIMIT pauses (about 0.2 ms here: no step takes that long); once SLOW_WAITS of
 * them make at least one in SLOW_SHARE of all waits, the verdict of the wait is BARRIER_ALONE:
 * the other threads leave, and the calling thread finishes the call by itself.
 *
 *   fastbptt_barrier_init(b, n_threads)      before the threads start
 *   fastbptt_barrier_wait(b, &sense, stop)   sense: the thread's own, 0 before its first wait;
 *                                            returns BARRIER_STOP if any thread passed stop != 0,
 *                                            BARRIER_ALONE (on every thread alike) if too
 *                                            many waits were slow, else 0
 *   fastbptt_fetch_row(row, n_bytes)         prefetch a row another core has just written
 *
 * SPIN_BARRIER is 0 where the compiler has no C11 atomics; then the kernels never split a step
 * (src/_columns.pxd) and these functions are never called.
 */
#ifndef FASTBPTT_SPIN_H
#define FASTBPTT_SPIN_H

#include <stddef.h>

#define BARRIER_STOP 1      /* a thread asked to stop: every thread stops after this wait */
#define BARRIER_ALONE 2     /* the waits were slow: the calling thread goes on alone */

#if defined(__STDC_NO_ATOMICS__) || (defined(_MSC_VER) && !defined(__clang__))
#define SPIN_BARRIER 0
typedef struct { int n_threads; } fastbptt_spin_barrier;
static inline void fastbptt_barrier_init(fastbptt_spin_barrier* b, int n_threads)
{
    b->n_threads = n_threads;
}
static inline int fastbptt_barrier_wait(fastbptt_spin_barrier* b, int* sense, int stop)
{
    (void)b;
    (void)sense;
    return stop ? BARRIER_STOP : 0;
}
#else
#define SPIN_BARRIER 1
#include <stdalign.h>
#include <stdatomic.h>

#if defined(_WIN32)
#include <windows.h>
#define FASTBPTT_YIELD() SwitchToThread()
#else
#include <sched.h>
#define FASTBPTT_YIELD() sched_yield()
#endif

#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64)
#include <immintrin.h>
#define FASTBPTT_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define FASTBPTT_PAUSE() __asm__ __volatile__("yield")
#else
#define FASTBPTT_PAUSE() ((void)0)
#endif

#ifndef SPIN_LIMIT
#define SPIN_LIMIT 4096     /* pauses in one wait before a waiter starts yielding its core */
#endif
#define SLOW_WAITS 8        /* slow waits before the team may give up ... */
#define SLOW_SHARE 16       /* ... if at least one wait in this many was slow */

typedef struct {
    alignas(64) atomic_int count;   /* threads arrived in this wait */
    atomic_int asked;               /* one of them asked to stop */
    alignas(64) atomic_int sense;   /* flipped by the last to arrive */
    atomic_int stop;                /* the last one's verdict on this wait */
    atomic_int slow;                /* waits that outlasted SPIN_LIMIT pauses */
    atomic_int waits;               /* waits the team has finished */
    int n_threads;
} fastbptt_spin_barrier;

static inline void fastbptt_barrier_init(fastbptt_spin_barrier* b, int n_threads)
{
    atomic_init(&b->count, 0);
    atomic_init(&b->asked, 0);
    atomic_init(&b->sense, 0);
    atomic_init(&b->stop, 0);
    atomic_init(&b->slow, 0);
    atomic_init(&b->waits, 0);
    b->n_threads = n_threads;
}

static inline int fastbptt_barrier_wait(fastbptt_spin_barrier* b, int* sense, int stop)
{
    int s = !*sense, spins = 0, verdict;
    *sense = s;
    if (b->n_threads <= 1)
        return stop ? BARRIER_STOP : 0;
    if (stop)
        atomic_store_explicit(&b->asked, 1, memory_order_relaxed);
    /* the release half orders the request before the arrival; the last arrival's acquire
       half sees every earlier one's */
    if (atomic_fetch_add_explicit(&b->count, 1, memory_order_acq_rel) == b->n_threads - 1) {
        int waits = atomic_load_explicit(&b->waits, memory_order_relaxed) + 1;
        int slow = atomic_load_explicit(&b->slow, memory_order_relaxed);
        atomic_store_explicit(&b->waits, waits, memory_order_relaxed);
        verdict = atomic_load_explicit(&b->asked, memory_order_relaxed) ? BARRIER_STOP : 0;
        if (slow >= SLOW_WAITS && slow * SLOW_SHARE >= waits)
            verdict |= BARRIER_ALONE;
        atomic_store_explicit(&b->asked, 0, memory_order_relaxed);
        /* read by the waiters before any of them can arrive at the next wait, whose last
           arrival alone writes it again */
        atomic_store_explicit(&b->stop, verdict, memory_order_relaxed);
        atomic_store_explicit(&b->count, 0, memory_order_relaxed);
        atomic_store_explicit(&b->sense, s, memory_order_release);
        return verdict;
    }
    while (atomic_load_explicit(&b->sense, memory_order_acquire) != s) {
        if (++spins > SPIN_LIMIT) {
            if (spins == SPIN_LIMIT + 1)    /* counted once per wait */
                atomic_fetch_add_explicit(&b->slow, 1, memory_order_relaxed);
            FASTBPTT_YIELD();
        } else {
            FASTBPTT_PAUSE();
        }
    }
    return atomic_load_explicit(&b->stop, memory_order_relaxed);
}
#endif

/* A row that other cores have just written is read element by element in order by the next
 * step's product, and the out-of-order window covers less than a cache line of it: without
 * this, its lines would arrive one core-to-core transfer after another. */
static inline void fastbptt_fetch_row(const void* row, size_t n_bytes)
{
#if defined(__GNUC__) || defined(__clang__)
    const char* p = (const char*)row;
    size_t i;
    for (i = 0; i < n_bytes; i += 64)
        __builtin_prefetch(p + i, 0, 3);
#else
    (void)row;
    (void)n_bytes;
#endif
}

#endif
