#include "kvd_kernels.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

// exp(x) for x <= 0 (softmax subtracts the row maximum first): x = k·ln2 + r with |r| <= ln2/2,
// exp(r) by a degree-6 polynomial, 2^k through the exponent bits. Branch-free so the loops below
// vectorise; results below e^-87 flush to 0, as they would round to 0 in the sums anyway.
#define KVD_EXP_BODY(x, out)                                                                 \
    do {                                                                                     \
        float xc = (x) < -87.0f ? -87.0f : (x);                                              \
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
        (out) = (x) < -87.0f ? 0.0f : p * scale;                                             \
    } while (0)

#define KVD_SOFTMAX_IMPL(NAME, ATTR)                                                          \
    ATTR static void NAME(float *logits, size_t rows, size_t n, size_t window,               \
                          const float *bias, size_t prefix, float *scores) {                  \
        const float per_row = 1.0f / (float)rows;                                            \
        for (size_t r = 0; r < rows; r++) {                                                  \
            float *row = logits + r * n;                                                     \
            size_t visible = n - window + (r % window) + 1;                                  \
            if (bias)                                                                        \
                for (size_t j = 0; j < visible; j++) row[j] += bias[j];                      \
            float top = -INFINITY;                                                           \
            for (size_t j = 0; j < visible; j++) top = row[j] > top ? row[j] : top;          \
            float sum = 0.0f;                                                                \
            for (size_t j = 0; j < visible; j++) {                                           \
                float e;                                                                     \
                KVD_EXP_BODY(row[j] - top, e);                                               \
                row[j] = e;                                                                  \
                sum += e;                                                                    \
            }                                                                                \
            const float scale = per_row / sum;                                               \
            for (size_t j = 0; j < prefix; j++) scores[j] += row[j] * scale;                 \
        }                                                                                    \
    }

#define KVD_SUMSQ_IMPL(NAME, ATTR)                                                            \
    ATTR static float NAME(const float *x, size_t n) {                                       \
        float acc[16] = {0};                                                                 \
        size_t i = 0;                                                                        \
        for (; i + 16 <= n; i += 16)                                                         \
            for (size_t k = 0; k < 16; k++) acc[k] += x[i + k] * x[i + k];                   \
        float s = 0.0f;                                                                      \
        for (size_t k = 0; k < 16; k++) s += acc[k];                                         \
        for (; i < n; i++) s += x[i] * x[i];                                                 \
        return s;                                                                            \
    }

KVD_SOFTMAX_IMPL(softmax_generic, )
KVD_SUMSQ_IMPL(sumsq_generic, )
#if defined(__x86_64__)
#include <immintrin.h>
KVD_SUMSQ_IMPL(sumsq_avx2, __attribute__((target("avx2,fma"))))
static int have_avx2(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

// The same exp as KVD_EXP_BODY, eight lanes at a time (compilers do not vectorise the scalar
// loops above: the float sum is a reduction they may not reorder).
__attribute__((target("avx2,fma"))) static inline __m256 exp8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.0f);
    __m256 xc = _mm256_max_ps(x, lo);
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

__attribute__((target("avx2,fma"))) static void softmax_avx2(float *logits, size_t rows, size_t n,
                                                             size_t window, const float *bias,
                                                             size_t prefix, float *scores) {
    const float per_row = 1.0f / (float)rows;
    for (size_t r = 0; r < rows; r++) {
        float *row = logits + r * n;
        const size_t visible = n - window + (r % window) + 1;
        size_t j;
        if (bias)
            for (j = 0; j < visible; j++) row[j] += bias[j];
        __m256 vmax = _mm256_set1_ps(-INFINITY);
        for (j = 0; j + 8 <= visible; j += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(row + j));
        float lanes[8];
        _mm256_storeu_ps(lanes, vmax);
        float top = -INFINITY;
        for (int i = 0; i < 8; i++) top = lanes[i] > top ? lanes[i] : top;
        for (; j < visible; j++) top = row[j] > top ? row[j] : top;

        const __m256 vtop = _mm256_set1_ps(top);
        __m256 vsum = _mm256_setzero_ps();
        for (j = 0; j + 8 <= visible; j += 8) {
            __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(row + j), vtop));
            _mm256_storeu_ps(row + j, e);
            vsum = _mm256_add_ps(vsum, e);
        }
        _mm256_storeu_ps(lanes, vsum);
        float sum = 0.0f;
        for (int i = 0; i < 8; i++) sum += lanes[i];
        for (; j < visible; j++) {
            float e;
            KVD_EXP_BODY(row[j] - top, e);
            row[j] = e;
            sum += e;
        }

        const __m256 vscale = _mm256_set1_ps(per_row / sum);
        for (j = 0; j + 8 <= prefix; j += 8)
            _mm256_storeu_ps(scores + j, _mm256_fmadd_ps(_mm256_loadu_ps(row + j), vscale,
                                                         _mm256_loadu_ps(scores + j)));
        const float scale = per_row / sum;
        for (; j < prefix; j++) scores[j] += row[j] * scale;
    }
}
#endif

void kvd_window_softmax_scores(float *logits, size_t rows, size_t n, size_t window, const float *bias,
                               size_t prefix, float *scores) {
#if defined(__x86_64__)
    if (have_avx2()) { softmax_avx2(logits, rows, n, window, bias, prefix, scores); return; }
#endif
    softmax_generic(logits, rows, n, window, bias, prefix, scores);
}

float kvd_sum_squares(const float *x, size_t n) {
#if defined(__x86_64__)
    if (have_avx2()) return sumsq_avx2(x, n);
#endif
    return sumsq_generic(x, n);
}
