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
