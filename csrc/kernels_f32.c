/* kernels_f32.c -- the float instantiation of the kernels (one source for both precisions). */
#include <math.h>
#include "internal.h"
#include "fastmath_f32.h"

#define real float
#define FN(name) name##_f32
#define EXP fastrnn_expf   /* vectorizable; see fastmath_f32.h */
#define TANH fastrnn_tanhf
#define LOG1P log1pf
#define BLAS_GEMM_TYPE fastrnn_sgemm_fn
#define BLAS_GEMM fastrnn_blas_sgemm

#include "activations.h"
#include "gemm.h"
#include "cells_impl.h"
#include "layer_impl.h"
