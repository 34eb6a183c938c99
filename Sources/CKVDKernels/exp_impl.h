// The vectorisable exp shared by the softmax and BalanceKV kernels (private to CKVDKernels).
#ifndef KVD_EXP_IMPL_H
#define KVD_EXP_IMPL_H
#include <stdint.h>
#include <string.h>

// exp(x) for x <= 88 (softmax subtracts the row maximum first, so x <= 0 there): x = k·ln2 + r with |r| <= ln2/2,
// exp(r) by a degree-6 polynomial, 2^k through the exponent bits. Branch-free so the loops below
// vectorise; results below e^-87 flush to 0, as they would round to 0 in the sums anyway, and
// above 88 clamp to e^88 (finite, where expf gives inf). NaN (a logit from an inf or NaN key)
// gives 0, as in exp8: the comparisons are written so NaN takes the -87 branch, because letting it
// through made (int32_t)k convert NaN to int and shift a negative value, both undefined behaviour
// (UBSan, Tests/sanitizers/kernels_asan.c), and made the scalar tails disagree with the vector lanes.
#define KVD_EXP_BODY(x, out)                                                                 \
    do {                                                                                     \
        float xc = (x) >= -87.0f ? ((x) > 88.0f ? 88.0f : (x)) : -87.0f;                     \
        float k = __builtin_roundf(xc * 1.44269504088896341f);                               \
        float r = xc - k * 0.693359375f;                                                     \
        r = r + k * 2.12194440e-4f;                                                          \
        float p = 1.9875691500e-4f;                                                          \
        p = p * r + 1.3981999507e-3f;                                                        \
        p = p * r + 8.3334519073e-3f;                                                        \
        p = p * r + 4.1665795894e-2f;                                                        \
        p = p * r + 1.6666665459e-1f;                                                        \
        p = p * r + 5.0000001201e-1f;                                                        \
        p = p * r * r + r + 1.0f;                                                            \
        int32_t bits = ((int32_t)k + 127) << 23;                                             \
        float scale;                                                                         \
        memcpy(&scale, &bits, 4);                                                            \
        (out) = (x) >= -87.0f ? p * scale : 0.0f;                                            \
    } while (0)

#if defined(__x86_64__)
#include <immintrin.h>
static inline int kvd_have_avx2(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

// The same exp as KVD_EXP_BODY, eight lanes at a time (compilers do not vectorise the scalar
// loops above: the float sum is a reduction they may not reorder).
__attribute__((target("avx2,fma"))) static inline __m256 exp8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.0f);
    __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.0f));
    __m256 k = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), xc);
    r = _mm256_fmadd_ps(k, _mm256_set1_ps(2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    __m256 e = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
    // Below e^-87 the result is 0, as in the scalar version.
    return _mm256_and_ps(e, _mm256_cmp_ps(x, lo, _CMP_GE_OQ));
}

#endif
#endif
