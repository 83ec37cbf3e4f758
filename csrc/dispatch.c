/* dispatch.c -- the public kernels run the variant compiled for the best
 * instruction set this CPU has: baseline x86-64 (SSE2), AVX2 + FMA, or
 * AVX-512. The default build thus runs on any x86-64 and is fast on new ones;
 * other architectures have the baseline only. */
#include "internal.h"

#define real float
#define FN(name) name##_f32_base
#include "kernels_api.h"
#undef FN
#define FN(name) name##_f32_avx2
#include "kernels_api.h"
#undef FN
#define FN(name) name##_f32_avx512
#include "kernels_api.h"
#undef FN
#undef real
#define real double
#define FN(name) name##_f64_base
#include "kernels_api.h"
#undef FN
#define FN(name) name##_f64_avx2
#include "kernels_api.h"
#undef FN
#define FN(name) name##_f64_avx512
#include "kernels_api.h"
#undef FN
#undef real

static int isa_forced = -1;   /* fastrnn_set_isa; -1: the best the CPU has */

int fastrnn_best_isa(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
        && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return FASTRNN_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return FASTRNN_ISA_AVX2;
#endif
    return FASTRNN_ISA_BASELINE;
}

int fastrnn_isa(void)
{
    return isa_forced >= 0 ? isa_forced : fastrnn_best_isa();
}

int fastrnn_set_isa(int isa)
{
    if (isa < -1 || isa > fastrnn_best_isa())
        return FASTRNN_ERR_ARGUMENT;   /* unknown, or not on this CPU */
    isa_forced = isa;
    return FASTRNN_OK;
}

int fastrnn_forward_f32(float *y, float *h_n, float *c_n, float *cache, float *work,
                        const float *x, const float *h0, const float *c0,
                        const float *w_ih, const float *w_hh,
                        const float *b_ih, const float *b_hh, const float *w_hr,
                        const float *peep,
                        const int *lengths, const int *order, const fastrnn_layer *L)
{
    switch (fastrnn_isa()) {
    case FASTRNN_ISA_AVX512:
        return fastrnn_forward_f32_avx512(y, h_n, c_n, cache, work, x, h0, c0, w_ih, w_hh,
                                          b_ih, b_hh, w_hr, peep, lengths, order, L);
    case FASTRNN_ISA_AVX2:
        return fastrnn_forward_f32_avx2(y, h_n, c_n, cache, work, x, h0, c0, w_ih, w_hh,
                                        b_ih, b_hh, w_hr, peep, lengths, order, L);
    default:
        return fastrnn_forward_f32_base(y, h_n, c_n, cache, work, x, h0, c0, w_ih, w_hh,
                                        b_ih, b_hh, w_hr, peep, lengths, order, L);
    }
}

int fastrnn_forward_f64(double *y, double *h_n, double *c_n, double *cache, double *work,
                        const double *x, const double *h0, const double *c0,
                        const double *w_ih, const double *w_hh,
                        const double *b_ih, const double *b_hh, const double *w_hr,
                        const double *peep,
                        const int *lengths, const int *order, const fastrnn_layer *L)
{
    switch (fastrnn_isa()) {
    case FASTRNN_ISA_AVX512:
        return fastrnn_forward_f64_avx512(y, h_n, c_n, cache, work, x, h0, c0, w_ih, w_hh,
                                          b_ih, b_hh, w_hr, peep, lengths, order, L);
    case FASTRNN_ISA_AVX2:
        return fastrnn_forward_f64_avx2(y, h_n, c_n, cache, work, x, h0, c0, w_ih, w_hh,
                                        b_ih, b_hh, w_hr, peep, lengths, order, L);
    default:
        return fastrnn_forward_f64_base(y, h_n, c_n, cache, work, x, h0, c0, w_ih, w_hh,
                                        b_ih, b_hh, w_hr, peep, lengths, order, L);
    }
}

int fastrnn_backward_f32(float *dx, float *dh0, float *dc0,
                         float *dw_ih, float *dw_hh, float *db_ih, float *db_hh, float *dw_hr,
                         float *dpeep, float *work, int accumulate_dx,
                         const float *dy, const float *dh_n, const float *dc_n,
                         const float *cache, const float *x,
                         const float *w_ih, const float *w_hh, const float *w_hr,
                         const float *peep,
                         const int *lengths, const int *order, const fastrnn_layer *L)
{
    switch (fastrnn_isa()) {
    case FASTRNN_ISA_AVX512:
        return fastrnn_backward_f32_avx512(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr, dpeep,
                                           work, accumulate_dx, dy, dh_n, dc_n, cache, x, w_ih,
                                           w_hh, w_hr, peep, lengths, order, L);
    case FASTRNN_ISA_AVX2:
        return fastrnn_backward_f32_avx2(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr, dpeep,
                                         work, accumulate_dx, dy, dh_n, dc_n, cache, x, w_ih,
                                         w_hh, w_hr, peep, lengths, order, L);
    default:
        return fastrnn_backward_f32_base(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr, dpeep,
                                         work, accumulate_dx, dy, dh_n, dc_n, cache, x, w_ih,
                                         w_hh, w_hr, peep, lengths, order, L);
    }
}

int fastrnn_backward_f64(double *dx, double *dh0, double *dc0,
                         double *dw_ih, double *dw_hh, double *db_ih, double *db_hh,
                         double *dw_hr, double *dpeep, double *work, int accumulate_dx,
                         const double *dy, const double *dh_n, const double *dc_n,
                         const double *cache, const double *x,
                         const double *w_ih, const double *w_hh, const double *w_hr,
                         const double *peep,
                         const int *lengths, const int *order, const fastrnn_layer *L)
{
    switch (fastrnn_isa()) {
    case FASTRNN_ISA_AVX512:
        return fastrnn_backward_f64_avx512(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr, dpeep,
                                           work, accumulate_dx, dy, dh_n, dc_n, cache, x, w_ih,
                                           w_hh, w_hr, peep, lengths, order, L);
    case FASTRNN_ISA_AVX2:
        return fastrnn_backward_f64_avx2(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr, dpeep,
                                         work, accumulate_dx, dy, dh_n, dc_n, cache, x, w_ih,
                                         w_hh, w_hr, peep, lengths, order, L);
    default:
        return fastrnn_backward_f64_base(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr, dpeep,
                                         work, accumulate_dx, dy, dh_n, dc_n, cache, x, w_ih,
                                         w_hh, w_hr, peep, lengths, order, L);
    }
}
