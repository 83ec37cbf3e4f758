/* kernels_f64_avx512.c -- kernels_f64.c compiled for AVX512 (dispatch.c runs it when
 * the CPU has it); the portable build needs no -march flag. */
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx512f,avx512vl,avx2,fma")
#define FASTRNN_VBYTES 64   /* zmm */
#define FASTRNN_MR 8        /* 16 accumulators of 32 registers */
#define FN(name) name##_f64_avx512
#include "kernels_f64.c"
#else
typedef int fastrnn_no_f64_avx512;   /* other architectures: the baseline only */
#endif
