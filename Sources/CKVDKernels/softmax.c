#include "kvd_kernels.h"
#include "exp_impl.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

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
    if (kvd_have_avx2()) { softmax_avx2(logits, rows, n, window, bias, prefix, scores); return; }
#endif
    softmax_generic(logits, rows, n, window, bias, prefix, scores);
}

float kvd_sum_squares(const float *x, size_t n) {
#if defined(__x86_64__)
    if (kvd_have_avx2()) return sumsq_avx2(x, n);
#endif
    return sumsq_generic(x, n);
}
