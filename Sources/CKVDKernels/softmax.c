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
KVD_SOFTMAX_IMPL(softmax_avx2, __attribute__((target("avx2,fma"))))
KVD_SUMSQ_IMPL(sumsq_avx2, __attribute__((target("avx2,fma"))))
static int have_avx2(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
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
