/* kernels_f32.c -- the float instantiation of the kernels (one source for both
 * precisions), for baseline x86-64; kernels_f32_avx2.c and kernels_f32_avx512.c
 * compile it again for newer CPUs, and dispatch.c picks one at run time. */
#include <math.h>
#include "internal.h"
#include "fastmath_f32.h"

#define real float
#define REAL_BYTES 4   /* sizeof(real), for the preprocessor */
#define LANE_INT int32_t   /* the integer of real's size (vector lane indices) */
#ifndef FN      /* the variants for other instruction sets define it first */
#define FN(name) name##_f32_base
#endif
#define RT(name) name##_f32   /* the API's types of this precision (fastrnn.h) */
#define EXP fastrnn_expf   /* vectorizable; see fastmath_f32.h */
#define TANH fastrnn_tanhf
#define LOG1P log1pf
#define BLAS_GEMM_TYPE fastrnn_sgemm_fn
#define BLAS_GEMM fastrnn_blas_sgemm

#include "activations.h"
#include "gemm.h"
#include "cells_impl.h"
#include "layer_impl.h"
