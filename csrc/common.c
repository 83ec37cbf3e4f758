/* common.c -- the parts of the C API that do not depend on the precision. */
#define _POSIX_C_SOURCE 200112L   /* pthreads under -std=c99 */
#include <pthread.h>
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

/* The workspace of one loop path: the forward with exactly these flags */
static size_t forward_work_size_of_path(const fastrnn_layer *L, int training)
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
    if (operand_buffered(L, training)) {           /* W_hh^T, W_hn^T, W_hr^T prepared */
        n += operand_size(R, gru_rb ? 2 * L->H : (int)GH);
        if (gru_rb)
            n += operand_size(L->H, L->H);
        if (L->P)
            n += operand_size(L->H, L->P);
    }
    if (projection_packed(L, training))
        n += operand_size(L->I, (int)GH);          /* W_ih packed */
    if (projection_by_slice(L, training))
        n += B * GH + B * (size_t)L->I;            /* P rows, gathered x rows */
    else if (!training)
        n += (size_t)infer_chunk_steps(L) * B * GH; /* projection chunk */
    return n;
}

/* The largest workspace of any path with these sizes: the path depends on the
 * thread setting, the layout and the options (the general cells run on one
 * thread), and a size taken before the call must fit whatever path the call
 * takes (another thread may change the setting in between). */
size_t fastrnn_forward_work_size(const fastrnn_layer *L, int training)
{
    size_t most = 0;
    for (int threads = 1; threads <= FASTRNN_MAX_THREADS; threads++) {
        for (int batch_first = 0; batch_first <= 1; batch_first++) {
            fastrnn_layer path = *L;
            path.threads = threads;
            path.batch_first = batch_first;
            path.general = 0;   /* general cells run the one-thread path (threads = 1) */
            size_t n = forward_work_size_of_path(&path, training);
            if (n > most)
                most = n;
        }
    }
    return most;
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
    if (operand_buffered(L, 1)) {                  /* W_hh (or W_hh[:2H], W_hn), W_hr prepared */
        if (L->cell == FASTRNN_GRU_RESET_BEFORE)
            n += operand_size(2 * L->H, L->H) + operand_size(L->H, L->H);
        else
            n += operand_size((int)GH, state_width(L));
        if (L->P)
            n += operand_size(L->P, L->H);
    }
    return n;
}

/* ------------------------------------------------------------- threads */

static int num_threads = 1;

void fastrnn_set_num_threads(int n)
{
    __atomic_store_n(&num_threads, n < 1 ? 1 : n, __ATOMIC_RELAXED);
}

int fastrnn_get_num_threads(void)
{
    return __atomic_load_n(&num_threads, __ATOMIC_RELAXED);
}

int fastrnn_loop_threads(const fastrnn_layer *L, int training)
{
    return loop_threads(L, training);
}

typedef struct {
    void (*fn)(void *, int, int);
    void *ctx;
    int s0, s1;
} slice_job;

static void *run_job(void *arg)
{
    slice_job *job = arg;
    job->fn(job->ctx, job->s0, job->s1);
    return NULL;
}

void fastrnn_run_slices(int nthreads, int B, void (*fn)(void *, int, int), void *ctx)
{
    slice_job jobs[FASTRNN_MAX_THREADS];
    pthread_t tids[FASTRNN_MAX_THREADS];
    int started[FASTRNN_MAX_THREADS] = {0};
    if (nthreads > FASTRNN_MAX_THREADS)
        nthreads = FASTRNN_MAX_THREADS;
    if (nthreads < 1)
        nthreads = 1;
    for (int k = 0; k < nthreads; k++) {
        jobs[k].fn = fn;
        jobs[k].ctx = ctx;
        jobs[k].s0 = (int)((long long)B * k / nthreads);
        jobs[k].s1 = (int)((long long)B * (k + 1) / nthreads);
    }
    for (int k = 1; k < nthreads; k++)
        started[k] = pthread_create(&tids[k], NULL, run_job, &jobs[k]) == 0;
    run_job(&jobs[0]);
    for (int k = 1; k < nthreads; k++) {
        if (started[k])
            pthread_join(tids[k], NULL);
        else
            run_job(&jobs[k]);
    }
}
