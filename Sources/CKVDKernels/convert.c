#include "kvd_kernels.h"

#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define KVD_X86 1
#endif

// Portable binary16 → binary32 (handles subnormals, infinities and NaN).
static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {  // subnormal: normalise
            exp = 127 - 15 + 1;
            while ((mant & 0x400) == 0) { mant <<= 1; exp--; }
            mant &= 0x3ff;
            bits = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static uint16_t float_to_half(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    uint32_t mant = x & 0x7fffff;
    if (((x >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        mant |= 0x800000;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = sign | ((uint32_t)exp << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
    return (uint16_t)half;
}

#ifdef KVD_X86
__attribute__((target("f16c,avx")))
static void f16_to_f32_f16c(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(src + i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
    for (; i < n; i++) dst[i] = half_to_float(src[i]);
}

__attribute__((target("f16c,avx")))
static void f32_to_f16_f16c(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 f = _mm256_loadu_ps(src + i);
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT));
    }
    for (; i < n; i++) dst[i] = float_to_half(src[i]);
}
#endif

int kvd_have_f16c(void) {
#ifdef KVD_X86
    return __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
#else
    return 0;
#endif
}

void kvd_f16_to_f32(const uint16_t *src, float *dst, size_t n) {
#ifdef KVD_X86
    if (kvd_have_f16c()) { f16_to_f32_f16c(src, dst, n); return; }
#endif
    for (size_t i = 0; i < n; i++) dst[i] = half_to_float(src[i]);
}

void kvd_f32_to_f16(const float *src, uint16_t *dst, size_t n) {
#ifdef KVD_X86
    if (kvd_have_f16c()) { f32_to_f16_f16c(src, dst, n); return; }
#endif
    for (size_t i = 0; i < n; i++) dst[i] = float_to_half(src[i]);
}

void kvd_bf16_to_f32(const uint16_t *src, float *dst, size_t n) {
    uint32_t *out = (uint32_t *)dst;
    for (size_t i = 0; i < n; i++) out[i] = (uint32_t)src[i] << 16;
}

// Σx² of each of `rows` rows of `d` elements, read straight from f16 / bf16 / f32 storage: the
// key-norm scorer reads each key once, without a converted copy.
#define KVD_ROWSQ_IMPL(NAME, ATTR, LOAD)                                                        \
    ATTR static void NAME(const void *src, size_t rows, size_t d, float *out) {                \
        for (size_t r = 0; r < rows; r++) {                                                    \
            float s = 0.0f;                                                                    \
            for (size_t i = 0; i < d; i++) {                                                   \
                float x = LOAD(src, r * d + i);                                                \
                s += x * x;                                                                    \
            }                                                                                  \
            out[r] = s;                                                                        \
        }                                                                                      \
    }
#define LOAD_F16(p, i) half_to_float(((const uint16_t *)(p))[i])
static inline float bf16_load(const void *p, size_t i) {
    uint32_t bits = (uint32_t)((const uint16_t *)p)[i] << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
#define LOAD_BF16(p, i) bf16_load(p, i)
KVD_ROWSQ_IMPL(rowsq_f16_generic, , LOAD_F16)
KVD_ROWSQ_IMPL(rowsq_bf16_generic, , LOAD_BF16)

#ifdef KVD_X86
__attribute__((target("f16c,avx2,fma")))
static void rowsq_f16_avx2(const void *src, size_t rows, size_t d, float *out) {
    const uint16_t *h = (const uint16_t *)src;
    for (size_t r = 0; r < rows; r++, h += d) {
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        size_t i = 0;
        for (; i + 16 <= d; i += 16) {
            __m256 x0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i)));
            __m256 x1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i + 8)));
            a0 = _mm256_fmadd_ps(x0, x0, a0);
            a1 = _mm256_fmadd_ps(x1, x1, a1);
        }
        float lanes[8];
        _mm256_storeu_ps(lanes, _mm256_add_ps(a0, a1));
        float s = 0.0f;
        for (int k = 0; k < 8; k++) s += lanes[k];
        for (; i < d; i++) s += half_to_float(h[i]) * half_to_float(h[i]);
        out[r] = s;
    }
}
#endif

void kvd_row_sum_squares(const void *src, int dtype, size_t rows, size_t d, float *out) {
    switch (dtype) {
    case 1:
#ifdef KVD_X86
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && kvd_have_f16c()) {
            rowsq_f16_avx2(src, rows, d, out);
            return;
        }
#endif
        rowsq_f16_generic(src, rows, d, out);
        return;
    case 2: rowsq_bf16_generic(src, rows, d, out); return;
    default:
        for (size_t r = 0; r < rows; r++) out[r] = kvd_sum_squares((const float *)src + r * d, d);
        return;
    }
}
