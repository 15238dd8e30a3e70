# cython: language_level=3
"""Vectorisable exp, tanh and sigmoid for the fused elementwise passes.

A libm call per element is opaque to the compiler: tanh on a 64x512 block costs ~80x more as
scalar calls than as a SIMD loop, which at hidden sizes in the hundreds is as much as the GEMMs.
These functions use only +, *, /, comparisons, fabs/copysign and a 64-bit integer shift, so GCC
at -O3 turns a loop over them into SSE2 code (no -ffast-math, no -march needed).

exp(x): k = round(x / ln 2) by the 1.5 * 2**52 rounding trick, r = x - k ln 2 in two parts
(Cody and Waite), exp(r) by its Taylor polynomial of degree 13 (|r| <= ln(2)/2, truncation
error < 5e-18), times 2**k built in the exponent bits. Within 1 ulp of the correctly rounded
result for |x| <= 708 (callers clamp).
tanh(x): 1 - 2 / (exp(2|x|) + 1) for |x| > 0.625 (no cancellation there), and the rational
form x + x s P(s) / Q(s), s = x*x, below it (coefficients from Moshier's Cephes library), sign
restored with copysign. Measured within 1 ulp of NumPy's tanh on [-30, 30].
sigmoid(x): with e = exp(-|x|) <= 1, 1 / (1 + e) for x >= 0 and e / (1 + e) below: never
overflows, relative accuracy kept down to x = -708 (float32: -87); below that, where the true
value is subnormal, the result is 0 (the reference's subnormals differ from it by less than
3e-308, float32 1.2e-38), so that an absurd input (x = -1e30) gives 0 as in the reference,
not a floor that a huge gradient would multiply.
tanh is exactly +-1 wherever the rounded result is (|x| > 19.1; float32: 9.01): the argument of
exp is clamped only beyond that, at 2 * 20.
NaN in gives NaN out in all three (the clamps are written so that a NaN passes them), as in
NumPy: a non-finite value never turns into a number here.

Each comes in a float32 version computed in float32 (so a SIMD register holds twice as many):
degree-7 Taylor polynomial for exp, the 2**k trick with 1.5 * 2**23, and Cephes' tanhf
polynomial below 0.625; measured within 1.1 ulp of float64 NumPy on [-87, 87]. ``exp_``,
``tanh_`` and ``sigmoid_`` are fused over float/double and pick the version by argument type.
"""
from cython cimport floating
from libc.math cimport copysign, fabs, fabsf, copysignf
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy

cdef extern from *:
    """
    #define FASTBPTT_LN2_HI 6.93145751953125e-1
    #define FASTBPTT_LN2_LO 1.42860682030941723212e-6
    #define FASTBPTT_ROUND 6755399441055744.0
    #define FASTBPTT_LN2_HI_F 0.693359375f
    #define FASTBPTT_LN2_LO_F -2.12194440e-4f
    #define FASTBPTT_ROUND_F 12582912.0f
    """
    double LN2_HI "FASTBPTT_LN2_HI"
    double LN2_LO "FASTBPTT_LN2_LO"
    double ROUND_MAGIC "FASTBPTT_ROUND"
    float LN2_HI_F "FASTBPTT_LN2_HI_F"
    float LN2_LO_F "FASTBPTT_LN2_LO_F"
    float ROUND_MAGIC_F "FASTBPTT_ROUND_F"


cdef inline double exp_d(double x) noexcept nogil:
    """exp(x) for |x| <= 708."""
    cdef double kd = x * 1.4426950408889634 + ROUND_MAGIC   # round(x / ln2) in the low bits
    cdef double k = kd - ROUND_MAGIC
    cdef double r = (x - k * LN2_HI) - k * LN2_LO
    cdef double p = 1.6059043836821613e-10                      # 1/13!
    p = p * r + 2.08767569878681e-09                            # 1/12!
    p = p * r + 2.505210838544172e-08                           # 1/11!
    p = p * r + 2.755731922398589e-07                           # 1/10!
    p = p * r + 2.7557319223985893e-06                          # 1/9!
    p = p * r + 2.48015873015873e-05                            # 1/8!
    p = p * r + 0.0001984126984126984                           # 1/7!
    p = p * r + 0.001388888888888889                            # 1/6!
    p = p * r + 0.008333333333333333                            # 1/5!
    p = p * r + 0.041666666666666664                            # 1/4!
    p = p * r + 0.16666666666666666                             # 1/3!
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    cdef uint64_t bits
    cdef double scale
    memcpy(&bits, &kd, 8)
    bits = (bits + 1023) << 52                                  # 2**k: k + 1023 in the exponent
    memcpy(&scale, &bits, 8)
    return p * scale


cdef inline float exp_f(float x) noexcept nogil:
    """exp(x) for |x| <= 87, in float32."""
    cdef float kd = x * <float> 1.4426950408889634 + ROUND_MAGIC_F
    cdef float k = kd - ROUND_MAGIC_F
    cdef float r = (x - k * LN2_HI_F) - k * LN2_LO_F
    cdef float p = <float> 1.984126984126984e-04                # 1/7!
    p = p * r + <float> 0.001388888888888889                    # 1/6!
    p = p * r + <float> 0.008333333333333333                    # 1/5!
    p = p * r + <float> 0.041666666666666664                    # 1/4!
    p = p * r + <float> 0.16666666666666666                     # 1/3!
    p = p * r + <float> 0.5
    p = p * r + <float> 1.0
    p = p * r + <float> 1.0
    cdef uint32_t bits
    cdef float scale
    memcpy(&bits, &kd, 4)
    bits = (bits + 127) << 23                                   # 2**k: k + 127 in the exponent
    memcpy(&scale, &bits, 4)
    return p * scale


cdef inline double tanh_d(double x) noexcept nogil:
    cdef double ax = fabs(x)
    cdef double e = exp_d(2.0 * ax if ax < 20.0 else 40.0)      # tanh(20) rounds to 1
    cdef double big = 1.0 - 2.0 / (e + 1.0)
    cdef double s = x * x
    cdef double small = ax + ax * s * (
        ((-9.64399179425052238628e-1 * s - 9.92877231001918586564e1) * s
         - 1.61468768441708447952e3)
        / (((s + 1.12811678491632931402e2) * s + 2.23548839060100448583e3) * s
           + 4.84406305325125486048e3))
    return copysign(big if ax > 0.625 else small, x)


cdef inline float tanh_f(float x) noexcept nogil:
    cdef float ax = fabsf(x)
    cdef float e = exp_f(<float> 2 * ax if ax < 20 else <float> 40)  # tanhf(9.02) rounds to 1
    cdef float big = <float> 1 - <float> 2 / (e + <float> 1)
    cdef float z = x * x
    cdef float small = (((((<float> -5.70498872745e-3 * z + <float> 2.06390887954e-2) * z
                           - <float> 5.37397155531e-2) * z + <float> 1.33314422036e-1) * z
                         - <float> 3.33332819422e-1) * z * ax + ax)
    return copysignf(big if ax > <float> 0.625 else small, x)


cdef inline double sigmoid_d(double x) noexcept nogil:
    cdef double ax = fabs(x)
    cdef double e = exp_d(-708.0 if ax > 708.0 else -ax)        # a NaN passes
    e = 0.0 if ax > 708.0 else e                                # 0, not a floor, below -708
    cdef double s = 1.0 / (1.0 + e)
    return s if x >= 0 else e * s


cdef inline float sigmoid_f(float x) noexcept nogil:
    cdef float ax = fabsf(x)
    cdef float e = exp_f(<float> -87 if ax > 87 else -ax)       # a NaN passes
    e = <float> 0 if ax > 87 else e                             # 0, not a floor, below -87
    cdef float s = <float> 1 / (<float> 1 + e)
    return s if x >= 0 else e * s


cdef inline floating exp_(floating x) noexcept nogil:
    if floating is float:
        return exp_f(x)
    else:
        return exp_d(x)


cdef inline floating tanh_(floating x) noexcept nogil:
    if floating is float:
        return tanh_f(x)
    else:
        return tanh_d(x)


cdef inline floating sigmoid_(floating x) noexcept nogil:
    if floating is float:
        return sigmoid_f(x)
    else:
        return sigmoid_d(x)
