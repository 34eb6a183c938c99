// Small numeric kernels kvd needs in C: element conversions that Swift would otherwise compile to
// one library call per element. Each picks the fastest instruction set the CPU has at run time.
#ifndef KVD_KERNELS_H
#define KVD_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// IEEE binary16 → binary32, n elements (F16C when the CPU has it).
void kvd_f16_to_f32(const uint16_t *src, float *dst, size_t n);
/// bfloat16 → binary32, n elements (a 16-bit shift; vectorised by the compiler).
void kvd_bf16_to_f32(const uint16_t *src, float *dst, size_t n);
/// binary32 → IEEE binary16 with round-to-nearest-even, n elements.
void kvd_f32_to_f16(const float *src, uint16_t *dst, size_t n);
/// 1 when the F16C path is in use (for benchmarks and logs).
int kvd_have_f16c(void);

#ifdef __cplusplus
}
#endif
#endif

#ifndef KVD_KERNELS_SOFTMAX_H
#define KVD_KERNELS_SOFTMAX_H
#ifdef __cplusplus
extern "C" {
#endif
/// Window-attention scores from logits, in place. `logits` is [rows][n] row-major, rows = G·w;
/// row r is window query r % w, which sees tokens 0 .. n - w + (r % w) (causal). For each row:
/// add `bias` (per-token log-weights, may be NULL), softmax over the visible tokens, then add
/// row[j] / rows to scores[j] for j < prefix. exp is a vectorised polynomial (≤ 2 ulp on the
/// range softmax uses).
void kvd_window_softmax_scores(float *logits, size_t rows, size_t n, size_t window, const float *bias,
                               size_t prefix, float *scores);
/// Σ_i x[i]², n elements, vectorised.
float kvd_sum_squares(const float *x, size_t n);
/// out[r] = Σ_i x[r][i]² for `rows` rows of `d` elements stored as `dtype` (1 f16, 2 bf16, 3 f32,
/// as kvd_dtype), read in place (F16C + FMA for f16 when the CPU has them).
void kvd_row_sum_squares(const void *src, int dtype, size_t rows, size_t d, float *out);
/// Asks the CPU to fetch `bytes` at `p` into cache (a hint; no effect on results).
void kvd_prefetch(const void *p, size_t bytes);
/// BalanceKV's walk step for row r: Σ_{j<r} exp(scale·gk[j] − beta)·(1e-8 + gv[j] + 0.025)·signs[j]
/// (gk, gv: row r of the key and value Gram matrices; signs: ±1 of the rows before). Vectorised,
/// with the polynomial exp above (x clamped to [−87, 88]).
float kvd_balance_partial(const float *gk, const float *gv, const float *signs, size_t r, float scale,
                          float beta);
#ifdef __cplusplus
}
#endif
#endif

#ifndef KVD_KERNELS_BLAS_H
#define KVD_KERNELS_BLAS_H
#ifdef __cplusplus
extern "C" {
#endif
/// 1 when OpenBLAS (libopenblas.so.0) could be opened; loads it on first call (see blas.c).
int kvd_blas_available(void);
/// OpenBLAS's name for the kernel it uses (e.g. "Haswell"), or "none".
const char *kvd_blas_core(void);
/// OpenBLAS threads (kvd uses 1 and parallelises over heads).
void kvd_blas_set_threads(int n);
/// Row-major C[m][n] = alpha · A[m][k] · B[n][k]ᵀ. Call only when kvd_blas_available().
void kvd_sgemm_abt(int m, int n, int k, float alpha, const float *a, const float *b, float *c);
/* glibc malloc settings for multi-megabyte buffers (remote-tier blobs, large inline appends): such
 * blocks come from the heap and freed heap stays mapped, so the next buffer of the same size reuses
 * pages already faulted in instead of mapping (and zeroing) fresh ones. No-op without glibc. */
void kvd_malloc_tune(void);

#ifdef __cplusplus
}
#endif
#endif
