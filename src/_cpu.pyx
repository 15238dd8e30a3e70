# cython: language_level=3
"""What the CPU can run: picks between the baseline and the AVX2+FMA builds of the kernels."""

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


def has_avx2_fma():
    """True where the CPU runs AVX2 and FMA instructions."""
    return bool(fastbptt_avx2_fma())
