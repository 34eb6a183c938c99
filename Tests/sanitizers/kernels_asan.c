// The C kernels (Sources/CKVDKernels) under AddressSanitizer + UndefinedBehaviorSanitizer, against
// scalar references. Built and run by scripts/sanitizers.sh (step 1), in short:
//   clang -O3 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
//         -I Sources/CKVDKernels/include Tests/sanitizers/kernels_asan.c -ldl -lm
// (-O3 as Package.swift builds the kernels, so the same loops get vectorised).
// The kernel sources are #included so that their generic (non-SIMD) static functions are tested
// directly too, not only the path this CPU dispatches to. Every buffer is exactly as large as the
// call may touch and starts `off` elements past a malloc'd block (unaligned for SIMD), so ASan
// catches any read or write past an end; sizes cover 0, 1, odd lengths and lengths that are not a
// multiple of the vector width, so both SIMD bodies and their scalar tails run. Special values
// (NaN, ±inf) must not cause undefined behaviour; results are compared where they are defined.
// Prints one line per failed check and a summary; exits 1 on any failure.
#include "../../Sources/CKVDKernels/balance.c"
#include "../../Sources/CKVDKernels/blas.c"
#include "../../Sources/CKVDKernels/convert.c"
#include "../../Sources/CKVDKernels/prefetch.c"
#include "../../Sources/CKVDKernels/softmax.c"

#include <stdio.h>
#include <stdlib.h>

static const size_t SIZES[] = {0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 129};
#define NSIZES (sizeof SIZES / sizeof SIZES[0])
static const size_t OFFSETS[] = {0, 1, 3};
#define NOFFSETS (sizeof OFFSETS / sizeof OFFSETS[0])

static int failures, checks;

#define CHECK(cond, ...)                                  \
    do {                                                  \
        checks++;                                         \
        if (!(cond)) {                                    \
            failures++;                                   \
            if (failures <= 50) {                         \
                printf("FAIL %s:%d: ", __func__, __LINE__); \
                printf(__VA_ARGS__);                      \
                printf("\n");                             \
            }                                             \
        }                                                 \
    } while (0)

// ---- helpers ---------------------------------------------------------------------------------

static uint64_t rng = 0x243f6a8885a308d3ull;
static uint64_t next_u64(void) {  // xorshift64
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static float uniform(float lo, float hi) { return lo + (hi - lo) * (float)((next_u64() >> 40) / 16777216.0); }

// A block of off + n elements of `size` bytes; the returned pointer is `off` elements in, so the
// valid range ends exactly at the end of the allocation. free_at undoes it.
static void *alloc_at(size_t n, size_t size, size_t off) {
    char *p = malloc((off + n) * size + 1);  // +1: malloc(0) may return NULL
    if (!p) abort();
    return p + off * size;
}
static void free_at(void *p, size_t size, size_t off) { free((char *)p - off * size); }

static int close_to(double got, double want, double abs_tol, double rel_tol) {
    double d = got - want;
    if (d < 0) d = -d;
    return d <= abs_tol + rel_tol * (want < 0 ? -want : want);
}

// Reference conversions through the compiler's _Float16 (an implementation independent of
// convert.c: clang lowers it to compiler-rt or F16C, both exact and round-to-nearest-even).
static float ref_half_to_float(uint16_t h) {
    _Float16 x;
    memcpy(&x, &h, 2);
    return (float)x;
}
static uint16_t ref_float_to_half(float f) {
    _Float16 x = (_Float16)f;
    uint16_t h;
    memcpy(&h, &x, 2);
    return h;
}
static int is_nan_half(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff); }
static uint32_t bits32(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

// ---- conversions -----------------------------------------------------------------------------

typedef void (*h2f_fn)(const uint16_t *, float *, size_t);
typedef void (*f2h_fn)(const float *, uint16_t *, size_t);

static void check_h2f(const char *name, h2f_fn f, const uint16_t *src, size_t n, size_t off) {
    float *dst = alloc_at(n, 4, off);
    f(src, dst, n);
    for (size_t i = 0; i < n; i++) {
        float want = ref_half_to_float(src[i]);
        if (is_nan_half(src[i]))
            CHECK(dst[i] != dst[i], "%s n=%zu off=%zu: half %#x -> %g, want NaN", name, n, off, src[i], dst[i]);
        else
            CHECK(bits32(dst[i]) == bits32(want), "%s n=%zu off=%zu: half %#x -> %#x, want %#x", name, n, off,
                  src[i], bits32(dst[i]), bits32(want));
    }
    free_at(dst, 4, off);
}

static void f16_to_f32_generic(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = half_to_float(src[i]);
}
static void f32_to_f16_generic(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = float_to_half(src[i]);
}

static void test_f16_to_f32(void) {
    // Every half bit pattern (NaN payloads, subnormals, ±0, ±inf), in one call per path.
    size_t n = 65536;
    uint16_t *all = alloc_at(n, 2, 0);
    for (size_t i = 0; i < n; i++) all[i] = (uint16_t)i;
    check_h2f("kvd_f16_to_f32", kvd_f16_to_f32, all, n, 0);
    check_h2f("half_to_float", f16_to_f32_generic, all, n, 0);
#ifdef KVD_X86
    if (kvd_have_f16c()) check_h2f("f16_to_f32_f16c", f16_to_f32_f16c, all, n, 0);
#endif
    free_at(all, 2, 0);
    for (size_t s = 0; s < NSIZES; s++)
        for (size_t o = 0; o < NOFFSETS; o++) {
            size_t len = SIZES[s], off = OFFSETS[o];
            uint16_t *src = alloc_at(len, 2, off);
            for (size_t i = 0; i < len; i++) src[i] = (uint16_t)next_u64();
            check_h2f("kvd_f16_to_f32", kvd_f16_to_f32, src, len, off);
            check_h2f("half_to_float", f16_to_f32_generic, src, len, off);
            free_at(src, 2, off);
        }
}

static void check_f2h(const char *name, f2h_fn f, const float *src, size_t n, size_t off) {
    uint16_t *dst = alloc_at(n, 2, off);
    f(src, dst, n);
    for (size_t i = 0; i < n; i++) {
        if (src[i] != src[i])
            CHECK(is_nan_half(dst[i]), "%s: NaN -> %#x, want a NaN", name, dst[i]);
        else
            CHECK(dst[i] == ref_float_to_half(src[i]), "%s n=%zu off=%zu: %a -> %#x, want %#x", name, n, off,
                  (double)src[i], dst[i], ref_float_to_half(src[i]));
    }
    free_at(dst, 2, off);
}

static float interesting_float(void) {
    // Across the half range and beyond: subnormal halves, rounding ties, overflow to inf.
    switch (next_u64() % 8) {
    case 0: return ref_half_to_float((uint16_t)next_u64());  // exactly representable (or NaN/inf)
    case 1: {  // a tie between two adjacent halves
        uint16_t h = (uint16_t)(next_u64() & 0x7bfe);
        return (ref_half_to_float(h) + ref_half_to_float((uint16_t)(h + 1))) / 2;
    }
    case 2: return uniform(-1e-7f, 1e-7f);     // half subnormals and underflow
    case 3: return uniform(-70000.f, 70000.f);  // around the largest half (65504)
    case 4: return (float)((next_u64() & 1) ? INFINITY : -INFINITY);
    default: return uniform(-8.f, 8.f);
    }
}

static void test_f32_to_f16(void) {
    for (size_t s = 0; s < NSIZES; s++)
        for (size_t o = 0; o < NOFFSETS; o++) {
            size_t len = SIZES[s], off = OFFSETS[o];
            float *src = alloc_at(len, 4, off);
            for (size_t i = 0; i < len; i++) src[i] = interesting_float();
            if (len > 2) src[len / 2] = NAN;
            check_f2h("kvd_f32_to_f16", kvd_f32_to_f16, src, len, off);
            check_f2h("float_to_half", f32_to_f16_generic, src, len, off);
            free_at(src, 4, off);
        }
}

static void test_bf16_to_f32(void) {
    for (size_t s = 0; s < NSIZES; s++)
        for (size_t o = 0; o < NOFFSETS; o++) {
            size_t len = SIZES[s], off = OFFSETS[o];
            uint16_t *src = alloc_at(len, 2, off);
            float *dst = alloc_at(len, 4, off);
            for (size_t i = 0; i < len; i++) src[i] = (uint16_t)next_u64();
            kvd_bf16_to_f32(src, dst, len);
            for (size_t i = 0; i < len; i++)
                CHECK(bits32(dst[i]) == (uint32_t)src[i] << 16, "bf16 %#x -> %#x", src[i], bits32(dst[i]));
            free_at(src, 2, off);
            free_at(dst, 4, off);
        }
}

// ---- sums of squares -------------------------------------------------------------------------

static double ref_sumsq(const float *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

static void test_sum_squares(void) {
    for (size_t s = 0; s < NSIZES; s++)
        for (size_t o = 0; o < NOFFSETS; o++) {
            size_t len = SIZES[s], off = OFFSETS[o];
            float *x = alloc_at(len, 4, off);
            for (size_t i = 0; i < len; i++) x[i] = uniform(-4, 4);
            double want = ref_sumsq(x, len);
            CHECK(close_to(kvd_sum_squares(x, len), want, 1e-6, 2e-5), "kvd_sum_squares n=%zu: %g want %g", len,
                  kvd_sum_squares(x, len), want);
            CHECK(close_to(sumsq_generic(x, len), want, 1e-6, 2e-5), "sumsq_generic n=%zu", len);
            if (len) {  // special values: no UB, and inf/NaN propagate
                x[len - 1] = INFINITY;
                CHECK(isinf(kvd_sum_squares(x, len)), "sum_squares with inf n=%zu", len);
                x[len - 1] = NAN;
                CHECK(isnan(kvd_sum_squares(x, len)), "sum_squares with NaN n=%zu", len);
            }
            free_at(x, 4, off);
        }
}

typedef void (*rowsq_fn)(const void *, size_t, size_t, float *);

static void check_rowsq(const char *name, int dtype, rowsq_fn generic) {
    static const size_t ROWS[] = {0, 1, 3};
    const size_t es = dtype == 3 ? 4 : 2;
    for (size_t r = 0; r < 3; r++)
        for (size_t s = 0; s < NSIZES; s++)
            for (size_t o = 0; o < NOFFSETS; o++) {
                size_t rows = ROWS[r], d = SIZES[s], off = OFFSETS[o], n = rows * d;
                void *src = alloc_at(n, es, off);
                float *want = malloc((rows + 1) * sizeof(float));
                for (size_t i = 0; i < n; i++) {
                    float v = uniform(-4, 4);
                    if (dtype == 3) ((float *)src)[i] = v;
                    else if (dtype == 1) ((uint16_t *)src)[i] = ref_float_to_half(v);
                    else ((uint16_t *)src)[i] = (uint16_t)(bits32(v) >> 16);
                }
                for (size_t row = 0; row < rows; row++) {
                    double acc = 0;
                    for (size_t i = 0; i < d; i++) {
                        size_t k = row * d + i;
                        double v = dtype == 3 ? ((float *)src)[k]
                                   : dtype == 1 ? ref_half_to_float(((uint16_t *)src)[k])
                                                : bf16_load(src, k);
                        acc += v * v;
                    }
                    want[row] = (float)acc;
                }
                float *out = alloc_at(rows, 4, off);
                kvd_row_sum_squares(src, dtype, rows, d, out);
                for (size_t row = 0; row < rows; row++)
                    CHECK(close_to(out[row], want[row], 1e-6, 2e-5), "%s rows=%zu d=%zu off=%zu row %zu: %g want %g",
                          name, rows, d, off, row, out[row], want[row]);
                if (generic) {
                    generic(src, rows, d, out);
                    for (size_t row = 0; row < rows; row++)
                        CHECK(close_to(out[row], want[row], 1e-6, 2e-5), "%s generic d=%zu row %zu", name, d, row);
                }
                free_at(out, 4, off);
                free(want);
                free_at(src, es, off);
            }
}

static void test_row_sum_squares(void) {
    check_rowsq("row_sum_squares f16", 1, rowsq_f16_generic);
    check_rowsq("row_sum_squares bf16", 2, rowsq_bf16_generic);
    check_rowsq("row_sum_squares f32", 3, NULL);
}

// ---- window softmax --------------------------------------------------------------------------

typedef void (*softmax_fn)(float *, size_t, size_t, size_t, const float *, size_t, float *);

// Double-precision reference of kvd_window_softmax_scores (see kvd_kernels.h).
static void ref_softmax(const float *logits, size_t rows, size_t n, size_t window, const float *bias,
                        size_t prefix, double *scores) {
    for (size_t r = 0; r < rows; r++) {
        size_t visible = n - window + (r % window) + 1;
        double top = -INFINITY, sum = 0;
        for (size_t j = 0; j < visible; j++) {
            double x = logits[r * n + j] + (bias ? bias[j] : 0);
            top = x > top ? x : top;
        }
        for (size_t j = 0; j < visible; j++) sum += exp(logits[r * n + j] + (bias ? bias[j] : 0) - top);
        for (size_t j = 0; j < prefix; j++)
            scores[j] += exp(logits[r * n + j] + (bias ? bias[j] : 0) - top) / sum / (double)rows;
    }
}

static void run_softmax(const char *name, softmax_fn f, size_t rows, size_t n, size_t window, int with_bias,
                        size_t prefix, size_t off, int special) {
    float *logits = alloc_at(rows * n, 4, off), *bias = with_bias ? alloc_at(n, 4, off) : NULL;
    float *scores = alloc_at(prefix, 4, off);
    double *want = calloc(prefix + 1, sizeof(double));
    for (size_t i = 0; i < rows * n; i++) logits[i] = uniform(-10, 10);
    for (size_t j = 0; bias && j < n; j++) bias[j] = uniform(-2, 1);
    for (size_t j = 0; j < prefix; j++) want[j] = scores[j] = (float)j * 1e-3f;
    if (special && rows * n >= 4) {
        // What an inf or NaN key makes of a logit row, plus one far below the row's maximum.
        logits[0] = NAN;
        logits[rows * n / 2] = INFINITY;
        logits[rows * n - 1] = -INFINITY;
        logits[1] = -200;
    }
    ref_softmax(logits, rows, n, window, bias, prefix, want);
    f(logits, rows, n, window, bias, prefix, scores);
    if (!special)  // with NaN/inf the values are not defined; only the absence of UB is checked
        for (size_t j = 0; j < prefix; j++)
            CHECK(close_to(scores[j], want[j], 1e-6, 1e-4), "%s rows=%zu n=%zu w=%zu bias=%d prefix=%zu off=%zu: "
                  "scores[%zu] %g want %g", name, rows, n, window, with_bias, prefix, off, j, scores[j], want[j]);
    free(want);
    free_at(scores, 4, off);
    if (bias) free_at(bias, 4, off);
    free_at(logits, 4, off);
}

static void test_window_softmax(void) {
    static const size_t ROWS[] = {0, 1, 2, 3, 8};
    for (size_t ri = 0; ri < 5; ri++)
        for (size_t s = 1; s < NSIZES; s++) {  // n ≥ 1: the window keeps at least one token
            size_t n = SIZES[s];
            size_t windows[] = {1, 2, n < 5 ? n : 5, n};
            for (size_t wi = 0; wi < 4; wi++) {
                size_t w = windows[wi] > n ? n : windows[wi];
                size_t prefixes[] = {0, 1, n - w, n - w + 1};
                for (size_t pi = 0; pi < 4; pi++)
                    for (int bias = 0; bias < 2; bias++)
                        for (int special = 0; special < 2; special++) {
                            size_t rows = ROWS[ri], prefix = prefixes[pi] > n - w + 1 ? n - w + 1 : prefixes[pi];
                            size_t off = OFFSETS[(s + wi + pi) % NOFFSETS];
                            run_softmax("kvd_window_softmax_scores", kvd_window_softmax_scores, rows, n, w, bias,
                                        prefix, off, special);
                            run_softmax("softmax_generic", softmax_generic, rows, n, w, bias, prefix, off, special);
                        }
            }
        }
}

// ---- the shared exp ---------------------------------------------------------------------------

// KVD_EXP_BODY (scalar, also the SIMD loops' tails) and exp8 (the AVX2 lanes) against exp, and
// against each other where the result is special: NaN and anything below -87 give 0, above 88 e^88.
#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static float exp8_lane(float x) {
    float lanes[8];
    _mm256_storeu_ps(lanes, exp8(_mm256_set1_ps(x)));
    return lanes[0];
}
#endif

static void test_exp(void) {
    float xs[64] = {NAN, -NAN, INFINITY, -INFINITY, -87.0f, -87.0001f, 88.0f, 88.5f, 0.0f, -0.0f, -1e-30f};
    for (int i = 11; i < 64; i++) xs[i] = uniform(-100, 90);
    for (int i = 0; i < 64; i++) {
        float x = xs[i], e;
        KVD_EXP_BODY(x, e);
        if (x != x || x < -87.0f)
            CHECK(e == 0.0f, "exp(%g) = %g, want 0", x, e);
        else
            CHECK(close_to(e, exp(x > 88.0f ? 88.0 : x), 0, 1e-6), "exp(%g) = %g want %g", x, e, exp(x));
#if defined(__x86_64__)
        if (kvd_have_avx2())
            CHECK(close_to(exp8_lane(x), e, 0, 1e-6), "exp8(%g) = %g, scalar %g", x, exp8_lane(x), e);
#endif
    }
}

// ---- BalanceKV walk step ---------------------------------------------------------------------

static void test_balance_partial(void) {
    const float scale = 0.35f, beta = 0.5f;
    for (size_t s = 0; s < NSIZES; s++)
        for (size_t o = 0; o < NOFFSETS; o++)
            for (int special = 0; special < 2; special++) {
                size_t r = SIZES[s], off = OFFSETS[o];
                float *gk = alloc_at(r, 4, off), *gv = alloc_at(r, 4, off), *signs = alloc_at(r, 4, off);
                double want = 0, mag = 0;
                for (size_t j = 0; j < r; j++) {
                    gk[j] = uniform(-6, 6);
                    gv[j] = uniform(0, 3);
                    signs[j] = (next_u64() & 1) ? 1.f : -1.f;
                }
                if (special && r) gk[r - 1] = (r & 1) ? NAN : INFINITY;
                for (size_t j = 0; j < r; j++) {
                    double term = exp((double)scale * gk[j] - beta) * (1e-8 + gv[j] + 0.025) * signs[j];
                    want += term;
                    mag += fabs(term);
                }
                float got = kvd_balance_partial(gk, gv, signs, r, scale, beta);
                float gen = balance_generic(gk, gv, signs, r, scale, beta);
                if (!special) {
                    CHECK(close_to(got, want, 1e-6, 0) || close_to(got, want, 1e-5 * mag, 0),
                          "kvd_balance_partial r=%zu off=%zu: %g want %g", r, off, got, want);
                    CHECK(close_to(gen, want, 1e-6, 0) || close_to(gen, want, 1e-5 * mag, 0),
                          "balance_generic r=%zu: %g want %g", r, gen, want);
                }
                free_at(signs, 4, off);
                free_at(gv, 4, off);
                free_at(gk, 4, off);
            }
}

// ---- prefetch and BLAS -----------------------------------------------------------------------

static void test_prefetch(void) {
    for (size_t s = 0; s < NSIZES; s++) {
        size_t bytes = SIZES[s] * 7;
        char *p = alloc_at(bytes, 1, 1);
        kvd_prefetch(p, bytes);  // a hint only: must not touch memory outside [p, p + bytes)
        free_at(p, 1, 1);
        checks++;
    }
}

static void test_sgemm(void) {
    if (!kvd_blas_available()) {
        printf("note: OpenBLAS not found; kvd_sgemm_abt not tested\n");
        return;
    }
    kvd_blas_set_threads(1);
    CHECK(strcmp(kvd_blas_core(), "none") != 0, "kvd_blas_core");
    static const size_t DIMS[] = {1, 2, 3, 8, 17, 33};
    for (size_t a = 0; a < 6; a++)
        for (size_t b = 0; b < 6; b++)
            for (size_t c = 0; c < 6; c++) {
                int m = (int)DIMS[a], n = (int)DIMS[b], k = (int)DIMS[c];
                float *A = alloc_at((size_t)m * k, 4, 1), *B = alloc_at((size_t)n * k, 4, 1);
                float *C = alloc_at((size_t)m * n, 4, 1);
                for (int i = 0; i < m * k; i++) A[i] = uniform(-1, 1);
                for (int i = 0; i < n * k; i++) B[i] = uniform(-1, 1);
                kvd_sgemm_abt(m, n, k, 0.5f, A, B, C);
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < n; j++) {
                        double want = 0;
                        for (int l = 0; l < k; l++) want += (double)A[i * k + l] * B[j * k + l];
                        CHECK(close_to(C[i * n + j], 0.5 * want, 1e-5, 1e-5), "sgemm %dx%dx%d [%d,%d]", m, n, k, i, j);
                    }
                free_at(C, 4, 1);
                free_at(B, 4, 1);
                free_at(A, 4, 1);
            }
}

int main(void) {
#if defined(__x86_64__)
    printf("CPU: f16c %d, avx2+fma %d\n", kvd_have_f16c(), kvd_have_avx2());
#endif
    test_f16_to_f32();
    test_f32_to_f16();
    test_bf16_to_f32();
    test_sum_squares();
    test_row_sum_squares();
    test_exp();
    test_window_softmax();
    test_balance_partial();
    test_prefetch();
    test_sgemm();
    printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
