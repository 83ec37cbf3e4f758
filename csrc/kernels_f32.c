/* kernels_f32.c -- the float instantiation of the kernels (one source for both precisions). */
#include <math.h>
#include "internal.h"

#define real float
#define FN(name) name##_f32
#define EXP expf
#define TANH tanhf
#define BLAS_GEMM fastrnn_blas_sgemm

#include "activations.h"
#include "gemm.h"
#include "cells_impl.h"
#include "layer_impl.h"
