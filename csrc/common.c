/* common.c -- the parts of the C API that do not depend on the precision. */
#define _POSIX_C_SOURCE 200112L   /* pthreads under -std=c99 */
#include <limits.h>
#include <pthread.h>
#include <time.h>
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
static int blas_serial = 0;       /* whether those calls made BLAS serial (atomic) */
static int blas_threads_saved = 0;  /* the setting BLAS had before */

void fastrnn_set_blas_threading(fastrnn_blas_get_threads_fn get, fastrnn_blas_set_threads_fn set)
{
    pthread_mutex_lock(&blas_mutex);
    blas_get_threads = get;
    blas_set_threads = set;
    pthread_mutex_unlock(&blas_mutex);
}

/* A kernel call counts itself in and out; BLAS's setting is read and changed
 * only when one of the running calls first reaches a BLAS product
 * (fastrnn_blas_serial), so that calls without any (a cell step, small
 * layers: the packed and dot kernels) pay neither the lock of BLAS's
 * setting nor its two calls. */
void fastrnn_blas_serial_begin(void)
{
    pthread_mutex_lock(&blas_mutex);
    calls_running++;
    pthread_mutex_unlock(&blas_mutex);
}

void fastrnn_blas_serial(void)
{
    if (__atomic_load_n(&blas_serial, __ATOMIC_ACQUIRE))
        return;
    pthread_mutex_lock(&blas_mutex);
    if (!blas_serial && calls_running > 0) {
        blas_threads_saved = blas_get_threads && blas_set_threads ? blas_get_threads() : 0;
        if (blas_threads_saved > 1)
            blas_set_threads(1);
        __atomic_store_n(&blas_serial, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&blas_mutex);
}

void fastrnn_blas_serial_end(void)
{
    pthread_mutex_lock(&blas_mutex);
    if (--calls_running == 0 && blas_serial) {
        if (blas_threads_saved > 1 && blas_set_threads)
            blas_set_threads(blas_threads_saved);
        __atomic_store_n(&blas_serial, 0, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&blas_mutex);
}

int fastrnn_num_gates(int cell)
{
    switch (cell) {
    case FASTRNN_RNN_TANH:
    case FASTRNN_RNN_RELU:
    case FASTRNN_INDRNN_TANH:
    case FASTRNN_INDRNN_RELU:
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

int fastrnn_unit_threads(const fastrnn_layer *L, int training)
{
    return unit_threads(L, training);
}

typedef struct {
    void (*fn)(void *, int, int);
    void *ctx;
    int s0, s1;
} slice_job;

static void run_job(const slice_job *job)
{
    job->fn(job->ctx, job->s0, job->s1);
}

static void *run_job_thread(void *job)
{
    run_job(job);
    return NULL;
}

/* The floating-point mode travels with the work: a persistent worker does not
 * inherit the caller's (dispatch.c flushes denormals for each call). */
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
static unsigned int fp_mode_get(void) { return _mm_getcsr(); }
static void fp_mode_set(unsigned int m) { _mm_setcsr(m); }
static void cpu_relax(void) { _mm_pause(); }
#else
static unsigned int fp_mode_get(void) { return 0; }
static void fp_mode_set(unsigned int m) { (void)m; }
static void cpu_relax(void) {}
#endif

/* A thread start costs 10-30 us and one training call splits hundreds of
 * products, so the workers are started on first use and kept. Between
 * regions a worker spins for about POOL_SPIN pauses (tens of microseconds,
 * so that the next step's region finds it awake) and then sleeps on a
 * condition variable: it never holds a core between calls, which on a busy
 * machine is what made BLAS's own pool slow. One region uses the pool at a
 * time; a region that finds it taken (another Python thread's call, or a
 * region inside a region) starts threads of its own. */
#define POOL_SPIN 4000

static struct {
    pthread_mutex_t region;  /* held by the caller of the running region */
    pthread_mutex_t lock;    /* guards the members below */
    pthread_cond_t wake, done;
    int workers;             /* started: worker k runs slice k (1..workers) */
    unsigned long generation;   /* bumped for each region */
    int pending;             /* the region's slices not yet finished by workers */
    int slices;
    unsigned int fp_mode;
    slice_job jobs[FASTRNN_MAX_THREADS];
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, {{0}}};

static void *pool_worker(void *arg)
{
    int k = (int)(size_t)arg;
    unsigned long seen = 0;
    for (;;) {
        for (int i = 0; i < POOL_SPIN; i++) {
            if (__atomic_load_n(&pool.generation, __ATOMIC_ACQUIRE) != seen)
                break;
            cpu_relax();
        }
        pthread_mutex_lock(&pool.lock);
        while (pool.generation == seen)
            pthread_cond_wait(&pool.wake, &pool.lock);
        seen = pool.generation;
        int mine = k < pool.slices;
        slice_job job = pool.jobs[k];
        unsigned int mode = pool.fp_mode;
        pthread_mutex_unlock(&pool.lock);
        if (!mine)
            continue;
        fp_mode_set(mode);
        run_job(&job);
        pthread_mutex_lock(&pool.lock);
        if (__atomic_sub_fetch(&pool.pending, 1, __ATOMIC_ACQ_REL) == 0)
            pthread_cond_signal(&pool.done);
        pthread_mutex_unlock(&pool.lock);
    }
    return NULL;
}

/* A forked child has none of the parent's workers */
static void pool_after_fork(void)
{
    pthread_mutex_init(&pool.region, NULL);
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_cond_init(&pool.done, NULL);
    pool.workers = 0;
    pool.pending = 0;
}

/* Starts workers up to n - 1 (the caller runs slice 0); returns how many
 * there are. Called with pool.lock held. */
static int pool_grow(int n)
{
    static int fork_handler_set = 0;
    if (!fork_handler_set)
        fork_handler_set = pthread_atfork(NULL, NULL, pool_after_fork) == 0;
    while (pool.workers < n - 1) {
        pthread_t tid;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int failed = pthread_create(&tid, &attr, pool_worker, (void *)(size_t)(pool.workers + 1));
        pthread_attr_destroy(&attr);
        if (failed)
            break;
        pool.workers++;
    }
    return pool.workers;
}

/* Each slice in a thread of its own, started and joined here */
static void run_on_new_threads(slice_job *jobs, int n)
{
    pthread_t tids[FASTRNN_MAX_THREADS];
    int started[FASTRNN_MAX_THREADS] = {0};
    for (int k = 1; k < n; k++)
        started[k] = pthread_create(&tids[k], NULL, run_job_thread, &jobs[k]) == 0;
    run_job(&jobs[0]);
    for (int k = 1; k < n; k++) {
        if (started[k])
            pthread_join(tids[k], NULL);
        else
            run_job(&jobs[k]);
    }
}

/* A busy machine: when another process holds a core, the slice of a
 * descheduled worker finishes milliseconds after the caller's, and every split
 * region waits for it (default threads then ran training 1.1-1.4x slower than
 * one thread). A region whose caller waited for its workers longer than its
 * own slice took, and more than STALL_NS, makes the regions of the next
 * BACKOFF_NS run their slices one after another in the caller: the same
 * slices, so the same results bit for bit, at one thread's speed. A team
 * whose last member came that late disbands the same way, and starts the
 * same backoff (fastrnn_barrier_wait). */
#define STALL_NS 200000LL        /* 0.2 ms */
#define BACKOFF_NS 250000000LL   /* 0.25 s */
static long long backoff_until;  /* CLOCK_MONOTONIC ns (atomic) */

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int fastrnn_backing_off(void)
{
    long long until = __atomic_load_n(&backoff_until, __ATOMIC_RELAXED);
    return until != 0 && now_ns() < until;
}

void fastrnn_back_off(long long ns)
{
    __atomic_store_n(&backoff_until, ns > 0 ? now_ns() + ns : 0, __ATOMIC_RELAXED);
}

/* With pool.region held: jobs[0, n) at once on the caller and the workers
 * (started as needed); returns how many of them ran there. The caller runs
 * the rest, if any, after. */
static int pool_run(slice_job *jobs, int n)
{
    pthread_mutex_lock(&pool.lock);
    int workers = pool_grow(n);
    if (n > workers + 1)
        n = workers + 1;
    for (int k = 0; k < n; k++)
        pool.jobs[k] = jobs[k];
    pool.slices = n;
    __atomic_store_n(&pool.pending, n - 1, __ATOMIC_RELEASE);
    pool.fp_mode = fp_mode_get();
    __atomic_store_n(&pool.generation, pool.generation + 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);

    long long start = now_ns();
    run_job(&jobs[0]);
    for (int i = 0; i < POOL_SPIN && __atomic_load_n(&pool.pending, __ATOMIC_ACQUIRE) > 0; i++)
        cpu_relax();
    if (__atomic_load_n(&pool.pending, __ATOMIC_ACQUIRE) > 0) {   /* a late worker */
        long long own = now_ns() - start;
        pthread_mutex_lock(&pool.lock);
        while (pool.pending > 0)
            pthread_cond_wait(&pool.done, &pool.lock);
        pthread_mutex_unlock(&pool.lock);
        long long end = now_ns(), waited = end - start - own;
        if (waited > STALL_NS && waited > own)
            __atomic_store_n(&backoff_until, end + BACKOFF_NS, __ATOMIC_RELAXED);
    }
    return n;
}

static int clamp_threads(int n)
{
    return n < 1 ? 1 : (n > FASTRNN_MAX_THREADS ? FASTRNN_MAX_THREADS : n);
}

void fastrnn_run_slices(int nthreads, int B, void (*fn)(void *, int, int), void *ctx)
{
    slice_job jobs[FASTRNN_MAX_THREADS];
    nthreads = clamp_threads(nthreads);
    for (int k = 0; k < nthreads; k++) {
        jobs[k].fn = fn;
        jobs[k].ctx = ctx;
        jobs[k].s0 = (int)((long long)B * k / nthreads);
        jobs[k].s1 = (int)((long long)B * (k + 1) / nthreads);
    }
    if (nthreads == 1 || fastrnn_backing_off()) {
        for (int k = 0; k < nthreads; k++)   /* the same slices, one after another */
            run_job(&jobs[k]);
    } else if (pthread_mutex_trylock(&pool.region) != 0) {
        run_on_new_threads(jobs, nthreads);
    } else {
        for (int k = pool_run(jobs, nthreads); k < nthreads; k++)
            run_job(&jobs[k]);   /* slices whose worker could not start */
        pthread_mutex_unlock(&pool.region);
    }
}

int fastrnn_run_team(int nthreads, void (*fn)(void *, int, int), void *ctx,
                     fastrnn_barrier *barrier)
{
    slice_job jobs[FASTRNN_MAX_THREADS];
    nthreads = clamp_threads(nthreads);
    if (nthreads < 2 || pthread_mutex_trylock(&pool.region) != 0)
        return 0;
    pthread_mutex_lock(&pool.lock);
    int n = pool_grow(nthreads) + 1;   /* members that can run at once */
    pthread_mutex_unlock(&pool.lock);
    if (n > nthreads)
        n = nthreads;
    if (n < 2) {
        pthread_mutex_unlock(&pool.region);
        return 0;
    }
    for (int k = 0; k < n; k++)
        jobs[k] = (slice_job){fn, ctx, k, n};
    barrier->parties = n;
    barrier->waiting = barrier->phase = barrier->sleepers = barrier->solo = 0;
    barrier->opened = now_ns();
    barrier->late_sum = barrier->own_sum = 0;
    barrier->first = LLONG_MAX;
    pthread_mutex_init(&barrier->lock, NULL);
    pthread_cond_init(&barrier->wake, NULL);
    pool_run(jobs, n);
    pthread_cond_destroy(&barrier->wake);
    pthread_mutex_destroy(&barrier->lock);
    pthread_mutex_unlock(&pool.region);
    return n;
}

/* A waiting member spins about POOL_SPIN pauses, then sleeps: on a busy
 * machine the member it waits for may need its core. The last to arrive
 * judges the phase (fastrnn_barrier_wait in internal.h), opens the next one
 * and wakes the sleepers (a sleeper checks the phase under the lock after
 * counting itself, so no wake-up is lost). */
int fastrnn_barrier_wait(fastrnn_barrier *b)
{
    int phase = __atomic_load_n(&b->phase, __ATOMIC_ACQUIRE);
    long long arrived = now_ns(), first = __atomic_load_n(&b->first, __ATOMIC_RELAXED);
    while (arrived < first
           && !__atomic_compare_exchange_n(&b->first, &first, arrived, 0, __ATOMIC_RELAXED,
                                           __ATOMIC_RELAXED))
        ;
    if (__atomic_add_fetch(&b->waiting, 1, __ATOMIC_ACQ_REL) == b->parties) {
        /* every earlier arrival's time is visible here (their adds released it) */
        long long late = arrived - b->first, own = b->first - b->opened;
        b->late_sum += late;
        b->own_sum += own;
        if ((late > STALL_NS && late > own) || (b->late_sum > STALL_NS && b->late_sum > b->own_sum)) {
            b->solo = 1;
            __atomic_store_n(&backoff_until, arrived + BACKOFF_NS, __ATOMIC_RELAXED);
        }
        b->opened = arrived;
        b->first = LLONG_MAX;
        __atomic_store_n(&b->waiting, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->phase, phase + 1, __ATOMIC_SEQ_CST);
        pthread_mutex_lock(&b->lock);
        if (b->sleepers > 0)
            pthread_cond_broadcast(&b->wake);
        pthread_mutex_unlock(&b->lock);
        return b->solo;
    }
    for (int i = 0; i < POOL_SPIN; i++) {
        if (__atomic_load_n(&b->phase, __ATOMIC_ACQUIRE) != phase)
            return b->solo;
        cpu_relax();
    }
    pthread_mutex_lock(&b->lock);
    b->sleepers++;
    while (__atomic_load_n(&b->phase, __ATOMIC_SEQ_CST) == phase)
        pthread_cond_wait(&b->wake, &b->lock);
    b->sleepers--;
    pthread_mutex_unlock(&b->lock);
    return b->solo;
}
