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

/* ------------------------------------------------- BLAS threads during calls */

static fastrnn_blas_get_threads_fn blas_get_threads = NULL;
static fastrnn_blas_set_threads_fn blas_set_threads = NULL;
static pthread_mutex_t blas_mutex = PTHREAD_MUTEX_INITIALIZER;
static int calls_running = 0;     /* kernel calls in progress (any thread) */
static int blas_threads_saved = 0;  /* the setting the first of them found */

void fastrnn_set_blas_threading(fastrnn_blas_get_threads_fn get, fastrnn_blas_set_threads_fn set)
{
    pthread_mutex_lock(&blas_mutex);
    blas_get_threads = get;
    blas_set_threads = set;
    pthread_mutex_unlock(&blas_mutex);
}

void fastrnn_blas_serial_begin(void)
{
    pthread_mutex_lock(&blas_mutex);
    if (calls_running++ == 0 && blas_get_threads && blas_set_threads) {
        blas_threads_saved = blas_get_threads();
        if (blas_threads_saved > 1)
            blas_set_threads(1);
    }
    pthread_mutex_unlock(&blas_mutex);
}

void fastrnn_blas_serial_end(void)
{
    pthread_mutex_lock(&blas_mutex);
    if (--calls_running == 0 && blas_set_threads && blas_threads_saved > 1)
        blas_set_threads(blas_threads_saved);
    pthread_mutex_unlock(&blas_mutex);
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
