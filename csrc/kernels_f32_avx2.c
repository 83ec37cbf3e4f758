/* kernels_f32_avx2.c -- kernels_f32.c compiled for AVX2 (dispatch.c runs it when
 * the CPU has it); the portable build needs no -march flag. */
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx2,fma")
#define FASTRNN_VBYTES 32   /* ymm */
#define FASTRNN_MR 6        /* 12 accumulators of 16 registers */
#define FN(name) name##_f32_avx2
#include "kernels_f32.c"
#else
typedef int fastrnn_no_f32_avx2;   /* other architectures: the baseline only */
#endif
