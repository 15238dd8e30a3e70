# cython: language_level=3
"""What the CPU can run: picks between the baseline and the AVX2+FMA builds of the kernels; and
how many threads OpenMP gives the calling thread (the kernels' threads, ``src/_shards.pxd``)."""

cdef extern from *:
    """
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    static int fastbptt_avx2_fma(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    #else
    static int fastbptt_avx2_fma(void) { return 0; }
    #endif
    """
    int fastbptt_avx2_fma()

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int fastbptt_openmp_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int fastbptt_openmp_max_threads(void) { return 1; }
    #endif
    """
    int fastbptt_openmp_max_threads() noexcept nogil


def has_avx2_fma():
    """True where the CPU runs AVX2 and FMA instructions."""
    return bool(fastbptt_avx2_fma())


def openmp_max_threads():
    """omp_get_max_threads() in the calling thread (OMP_NUM_THREADS, threadpoolctl's limits);
    1 where the kernels are built without OpenMP."""
    return fastbptt_openmp_max_threads()
