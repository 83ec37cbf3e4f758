/* kernels_f64.c -- the double instantiation of the kernels (one source for both precisions). */
#include <math.h>
#include "internal.h"

#define real double
#define FN(name) name##_f64
#define EXP exp
#define TANH tanh
#define LOG1P log1p
#define BLAS_GEMM_TYPE fastrnn_dgemm_fn
#define BLAS_GEMM fastrnn_blas_dgemm

#include "activations.h"
#include "gemm.h"
#include "cells_impl.h"
#include "layer_impl.h"
