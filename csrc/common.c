/* common.c -- the parts of the C API that do not depend on the precision. */
#include "internal.h"

fastrnn_sgemm_fn fastrnn_blas_sgemm = NULL;
fastrnn_dgemm_fn fastrnn_blas_dgemm = NULL;

void fastrnn_set_gemm(fastrnn_sgemm_fn sgemm, fastrnn_dgemm_fn dgemm)
{
    fastrnn_blas_sgemm = sgemm;
    fastrnn_blas_dgemm = dgemm;
}

int fastrnn_gemm_is_blas(void)
{
    return fastrnn_blas_sgemm != NULL && fastrnn_blas_dgemm != NULL;
}

int fastrnn_num_gates(int cell)
{
    switch (cell) {
    case FASTRNN_RNN_TANH:
    case FASTRNN_RNN_RELU:
        return 1;
    case FASTRNN_LSTM:
        return 4;
    case FASTRNN_GRU:
    case FASTRNN_GRU_RESET_BEFORE:
        return 3;
    default:
        return 0;
    }
}

static int has_cell_state(int cell) { return cell == FASTRNN_LSTM; }

size_t fastrnn_cache_size(const fastrnn_layer *L)
{
    size_t rows = (size_t)L->T * L->B, H = L->H, G = fastrnn_num_gates(L->cell);
    size_t n = rows * G * H + rows * state_width(L);   /* gates, hs */
    if (has_extra_cache(L->cell))
        n += rows * H;                             /* cs, or the GRU n-term / r*h */
    if (L->P)
        n += rows * H;                             /* ms: o * tanh(c) before W_hr */
    return n;
}

size_t fastrnn_forward_work_size(const fastrnn_layer *L, int training)
{
    size_t B = L->B, H = L->H, GH = (size_t)fastrnn_num_gates(L->cell) * H;
    int R = state_width(L), gru_rb = L->cell == FASTRNN_GRU_RESET_BEFORE;
    size_t n = B * R + B * GH;                     /* h, recurrent pre-activations */
    if (has_cell_state(L->cell))
        n += B * H;                                /* c */
    if (L->P)
        n += B * H;                                /* m */
    if (gru_rb)
        n += B * H;                                /* r*h */
    if (operand_buffered(L->B)) {                  /* W_hh^T, W_hn^T, W_hr^T prepared */
        n += operand_size(R, gru_rb ? 2 * L->H : (int)GH);
        if (gru_rb)
            n += operand_size(L->H, L->H);
        if (L->P)
            n += operand_size(L->H, L->P);
    }
    if (projection_packed(L, training))
        n += operand_size(L->I, (int)GH);          /* W_ih packed */
    if (!training)
        n += (size_t)infer_chunk_steps(L) * B * GH; /* projection chunk */
    return n;
}

size_t fastrnn_backward_work_size(const fastrnn_layer *L)
{
    size_t rows = (size_t)L->T * L->B, B = L->B, H = L->H;
    size_t GH = (size_t)fastrnn_num_gates(L->cell) * H;
    size_t n = B * state_width(L) + B * GH + rows * GH;  /* dh, dR (slots), dP (memory order) */
    if (has_cell_state(L->cell))
        n += B * H;                                /* dc */
    if (L->P)
        n += B * H + rows * L->P;                  /* dm (slots), dh of every step (memory order) */
    if (L->cell == FASTRNN_GRU)
        n += rows * H;                             /* recurrent-side n gradient */
    if (L->cell == FASTRNN_GRU_RESET_BEFORE)
        n += B * H;                                /* dn W_hn */
    if (operand_buffered(L->B)) {                  /* W_hh (or W_hh[:2H], W_hn), W_hr prepared */
        if (L->cell == FASTRNN_GRU_RESET_BEFORE)
            n += operand_size(2 * L->H, L->H) + operand_size(L->H, L->H);
        else
            n += operand_size((int)GH, state_width(L));
        if (L->P)
            n += operand_size(L->P, L->H);
    }
    return n;
}
