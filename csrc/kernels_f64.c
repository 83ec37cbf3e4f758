/* kernels_f64.c -- the double instantiation of the kernels (one source for both
 * precisions), for baseline x86-64; kernels_f64_avx2.c and kernels_f64_avx512.c
 * compile it again for newer CPUs, and dispatch.c picks one at run time. */
#include <math.h>
#include "internal.h"
#include "fastmath_f64.h"

#define real double
#define REAL_BYTES 8   /* sizeof(real), for the preprocessor */
#define LANE_INT int64_t   /* the integer of real's size (vector lane indices) */
#ifndef FN      /* the variants for other instruction sets define it first */
#define FN(name) name##_f64_base
#endif
#define RT(name) name##_f64   /* the API's types of this precision (fastrnn.h) */
#define EXP fastrnn_exp   /* vectorizable; see fastmath_f64.h */
#define TANH fastrnn_tanh
#define LOG1P log1p
#define BLAS_GEMM_TYPE fastrnn_dgemm_fn
#define BLAS_GEMM fastrnn_blas_dgemm

#include "activations.h"
#include "gemm.h"
#include "cells_impl.h"
#include "layer_impl.h"
