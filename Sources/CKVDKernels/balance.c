#include "kvd_kernels.h"
#include "exp_impl.h"

// One step of BalanceKV's walk: Σ_{j<r} exp(scale·gk[j] − beta)·(1e-8 + gv[j] + 0.025)·signs[j].
// The walk is sequential over rows, but each row's sum is independent work: done here eight
// lanes at a time with the polynomial exp instead of one libm call per kernel entry.
#define KVD_BALANCE_IMPL(NAME, ATTR)                                                           \
    ATTR static float NAME(const float *gk, const float *gv, const float *signs, size_t r,    \
                           float scale, float beta) {                                         \
        float acc = 0.0f;                                                                     \
        for (size_t j = 0; j < r; j++) {                                                      \
            float e;                                                                          \
            KVD_EXP_BODY(scale * gk[j] - beta, e);                                            \
            acc += e * (1e-8f + gv[j] + 0.025f) * signs[j];                                   \
        }                                                                                     \
        return acc;                                                                           \
    }

KVD_BALANCE_IMPL(balance_generic, )

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static float balance_avx2(const float *gk, const float *gv,
                                                              const float *signs, size_t r,
                                                              float scale, float beta) {
    const __m256 vs = _mm256_set1_ps(scale), vb = _mm256_set1_ps(beta);
    const __m256 offset = _mm256_set1_ps(1e-8f + 0.025f);
    __m256 acc = _mm256_setzero_ps();
    size_t j = 0;
    for (; j + 8 <= r; j += 8) {
        __m256 e = exp8(_mm256_fmsub_ps(vs, _mm256_loadu_ps(gk + j), vb));
        __m256 w = _mm256_add_ps(_mm256_loadu_ps(gv + j), offset);
        acc = _mm256_fmadd_ps(_mm256_mul_ps(e, w), _mm256_loadu_ps(signs + j), acc);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, acc);
    float sum = 0.0f;
    for (int i = 0; i < 8; i++) sum += lanes[i];
    return sum + balance_generic(gk + j, gv + j, signs + j, r - j, scale, beta);
}
#endif

float kvd_balance_partial(const float *gk, const float *gv, const float *signs, size_t r, float scale,
                          float beta) {
#if defined(__x86_64__)
    if (kvd_have_avx2()) return balance_avx2(gk, gv, signs, r, scale, beta);
#endif
    return balance_generic(gk, gv, signs, r, scale, beta);
}
