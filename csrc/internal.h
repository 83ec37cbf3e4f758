/* internal.h -- helpers shared by the float and double kernels (not part of the API). */
#ifndef FASTRNN_INTERNAL_H
#define FASTRNN_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include "fastrnn.h"

/* The BLAS routines installed by fastrnn_set_gemm (NULL: naive GEMM). */
extern fastrnn_sgemm_fn fastrnn_blas_sgemm;
extern fastrnn_dgemm_fn fastrnn_blas_dgemm;

/* The per-step products (gemm.h): batches of at most FASTRNN_SMALL_ROWS rows
 * use the row kernel (on W^T, or dot products on W itself when the call has
 * fewer than FASTRNN_TRANSPOSE_STEPS steps), at most FASTRNN_PACKED_ROWS the
 * packed register-blocked kernel, larger ones BLAS. Chosen by measurement
 * (README, "Performance notes"). */
#define FASTRNN_SMALL_ROWS 2
#define FASTRNN_TRANSPOSE_STEPS 4
#define FASTRNN_PACKED_ROWS 32

/* Packed operands round N up to a multiple of this many elements: a multiple
 * of every variant's tile width (at most 32 floats or 16 doubles). */
#define FASTRNN_TILE_PAD 32

/* Elements of a prepared per-step operand W (K, N) (gemm.h operand_prepare),
 * and whether a batch of B rows needs one in the work buffer. */
static inline size_t operand_size(int K, int N)
{
    return (size_t)K * (((size_t)N + FASTRNN_TILE_PAD - 1) / FASTRNN_TILE_PAD * FASTRNN_TILE_PAD);
}

/* Bracket every kernel call (dispatch.c): BLAS runs serially in between,
 * whatever its own setting (fastrnn_set_blas_threading). */
void fastrnn_blas_serial_begin(void);
void fastrnn_blas_serial(void);   /* before each BLAS product of a call */
void fastrnn_blas_serial_end(void);

/* Runs fn(ctx, s0, s1) on nthreads contiguous slices of [0, B) at once, the
 * first in the calling thread, the others on the persistent workers
 * (common.c); a slice whose thread cannot start runs in the caller after the
 * others. */
void fastrnn_run_slices(int nthreads, int B, void (*fn)(void *, int, int), void *ctx);

/* A team of threads that meet at a barrier (fastrnn_barrier_wait) */
typedef struct {
    int parties, waiting, phase, sleepers;
    int solo;               /* set once a member stalled: the team disbands */
    long long opened;       /* when the current phase opened (ns) */
    long long first;        /* the current phase's first arrival (ns) */
    long long late_sum, own_sum;   /* over the phases so far: last arrival - first,
                                    * first arrival - opening */
    pthread_mutex_t lock;   /* members that stop spinning sleep on wake */
    pthread_cond_t wake;
} fastrnn_barrier;

/* Runs fn(ctx, k, n) for k in [0, n) on n <= nthreads threads at once (as many
 * as the pool can give, the caller being member 0), barrier set for n, and
 * returns n; returns 0 without running anything when fewer than two can run
 * at once (the pool serves another region): the caller then does the work. */
int fastrnn_run_team(int nthreads, void (*fn)(void *, int, int), void *ctx,
                     fastrnn_barrier *barrier);

/* Waits for every member; returns 1 when the team disbands after this
 * phase, the same answer to every member of the phase: the last to arrive
 * came later than STALL_NS and later than the first member's own work of
 * the phase (a member whose core another process holds), or the phases so
 * far lost more than STALL_NS waiting for their last member, and more than
 * their first members' own work took (many short stalls). Member 0 (the
 * caller) then does every member's remaining work in turn, one member's share
 * after another, so results stay bitwise those of the team; the others
 * return. It also starts the backoff below. */
int fastrnn_barrier_wait(fastrnn_barrier *barrier);

/* Whether a recent stall (a late worker in a split region, a late member of a
 * team) asks calls to do their threads' shares one after another in the
 * caller, for BACKOFF_NS (common.c) */
int fastrnn_backing_off(void);

/* Starts the backoff for ns nanoseconds (0: ends it); for tests */
void fastrnn_back_off(long long ns);

/* Inference projects the input this many rows (time steps x batch) at a
 * time, so its scratch does not grow with T yet each GEMM stays large. */
#define FASTRNN_INFER_CHUNK_ROWS 256

/* Row of (t, b) in a memory-order matrix (x, y, training cache). */
static inline size_t mem_row(const fastrnn_layer *L, int t, int b)
{
    return L->batch_first ? (size_t)b * L->T + t : (size_t)t * L->B + b;
}

/* Width of h: the projection size P when there is one, else H. */
static inline int state_width(const fastrnn_layer *L)
{
    return L->P ? L->P : L->H;
}

/* Whether the recurrence is elementwise (IndRNN: u * h_{t-1}, u (H)): then
 * no step has a recurrent GEMM, and W_hh is no per-step operand. */
static inline int elementwise_recurrence(int cell)
{
    return cell == FASTRNN_INDRNN_TANH || cell == FASTRNN_INDRNN_RELU;
}

/* Whether a call applies zoneout to h or c (masks, or inference's expectation) */
static inline int has_zoneout(const fastrnn_layer *L)
{
    return L->zone_h || L->zone_c || L->p_h > 0 || L->p_c > 0;
}

/* The sizes and flags every kernel requires (the rest is assumed). Recurrent
 * dropout is not for IndRNN's elementwise recurrence. */
static inline int layer_ok(const fastrnn_layer *L, int gates)
{
    return gates != 0 && L->T >= 1 && L->B >= 1 && L->I >= 1 && L->H >= 1 && L->P >= 0
           && (L->P == 0 || L->cell == FASTRNN_LSTM) && L->ldy >= state_width(L)
           && (L->lengths == NULL || L->order != NULL)
           && !(L->general && elementwise_recurrence(L->cell))
           && L->p_h >= 0 && L->p_h < 1 && L->p_c >= 0 && L->p_c < 1
           && ((!L->zone_c && L->p_c == 0) || L->cell == FASTRNN_LSTM)
           && (!L->drop_h || !elementwise_recurrence(L->cell))
           && (!L->layer_norm || ((L->cell == FASTRNN_LSTM || L->cell == FASTRNN_GRU)
                                  && !L->general && !L->P));
}

/* Whether the training cache has a third (T*B, H) block: LSTM's c_{t-1},
 * GRU's recurrent n-term (reset after) or r*h (reset before). */
static inline int has_extra_cache(int cell)
{
    return cell == FASTRNN_LSTM || cell == FASTRNN_GRU || cell == FASTRNN_GRU_RESET_BEFORE;
}

/* Batch row held by slot i (slots sort lengths descending). */
static inline int slot_row(const int *order, int i)
{
    return order ? order[i] : i;
}

/* Number of slots active at time t: slots are sorted by length, descending,
 * so they are the prefix whose length exceeds t (binary search). */
static inline int active_slots(const int *lengths, const int *order, int B, int t)
{
    int lo = 0, hi = B;
    if (!lengths)
        return B;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (lengths[order[mid]] > t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Threads of one call's time loop. Rows are independent, so each thread runs
 * the whole loop, input projection included, for its own slice of the slots
 * (no barrier per step), with the packed kernel on the shared operands. By
 * measurement (README, "Threads") this pays in inference when every thread
 * gets FASTRNN_MIN_SLICE_ROWS to FASTRNN_PACKED_ROWS rows and the per-step
 * weights stay under FASTRNN_SLICE_WEIGHTS (larger ones stream from L2
 * in each thread; larger batches keep BLAS's threads inside each product).
 * Not in training: there BLAS runs just before the loop (the projection), and
 * its threads spin-wait on the cores afterwards, which made the loop slower
 * with two threads than with one. Not for the general cells (the peephole
 * gradient sums over rows). L->threads (0 or 1: one) comes from
 * fastrnn_set_num_threads through the bindings. */
#define FASTRNN_MIN_SLICE_ROWS 8
#define FASTRNN_MAX_THREADS 8
#define FASTRNN_SLICE_WEIGHTS (256 * 1024)   /* elements of W_hh: 1 MB in float32 */

static inline int loop_threads(const fastrnn_layer *L, int training)
{
    int n = L->threads < FASTRNN_MAX_THREADS ? L->threads : FASTRNN_MAX_THREADS;
    size_t weights = elementwise_recurrence(L->cell)
                     ? (size_t)L->H : (size_t)state_width(L) * fastrnn_num_gates(L->cell) * L->H;
    if (n > L->B / FASTRNN_MIN_SLICE_ROWS)
        n = L->B / FASTRNN_MIN_SLICE_ROWS;
    if (n < 2 || training || L->general || (L->B + n - 1) / n > FASTRNN_PACKED_ROWS
        || weights > FASTRNN_SLICE_WEIGHTS)
        return 1;
    return n;
}

/* GEMMs of at least this many multiply-adds are split over the call's
 * threads (gemm.h FN(gemm)), in slices of at least FASTRNN_MIN_SPLIT rows or
 * columns each; below, handing a slice to a worker (1-2 us awake, tens of us
 * asleep) costs more than it saves. */
#define FASTRNN_SPLIT_GEMM_MACS (4.0 * 1024 * 1024)
#define FASTRNN_MIN_SPLIT 16

/* Threads of the call's BLAS products (the loop's own threads are loop_threads) */
static inline int gemm_threads(const fastrnn_layer *L)
{
    int n = L->threads;
    return n < 1 ? 1 : (n > FASTRNN_MAX_THREADS ? FASTRNN_MAX_THREADS : n);
}

/* The unit-split time loop (layer_impl.h unit_loop): where slices of the
 * batch do not apply (training, batches above 32 rows per thread, large
 * W_hh), n threads each own a range of whole blocks of FASTRNN_UNIT_BLOCK
 * hidden units for the whole call: every step each computes its units'
 * columns of every gate, their gate math and its part of h_t, then waits at
 * one barrier. Each thread reads only its share of W_hh, which then stays
 * in its core's cache. For the plain RNN, LSTM and GRU (reset after)
 * without projection, when H is a multiple of the block and the per-step
 * product has at least FASTRNN_SPLIT_GEMM_MACS multiply-adds, as the split
 * products before it: one meeting of the threads per step either way, and
 * on a machine whose other cores are busy smaller steps lost to one thread
 * (a late member costs a wake-up, tens of microseconds). Nor does the
 * meeting pay at B = 1 and H = 64 (LSTM, 16K multiply-adds per step): a team
 * of two took 0.354 ms per 100-step call against 0.234 ms for the same
 * shares done in turn by one thread (the best of 300 calls each, AMD EPYC
 * Zen 3, 2 vCPUs). */
#define FASTRNN_UNIT_BLOCK FASTRNN_TILE_PAD

/* Whether the split applies at some thread count (its buffers are then laid
 * out whatever the setting). Not with layer normalization, whose statistics
 * span every unit of a row. */
static inline int unit_split_applies(const fastrnn_layer *L)
{
    double macs = (double)L->B * L->H * fastrnn_num_gates(L->cell) * L->H;
    return !L->general && !L->P && !L->drop_h && !L->layer_norm
           && !elementwise_recurrence(L->cell)
           && L->H % FASTRNN_UNIT_BLOCK == 0
           && L->H >= 2 * FASTRNN_UNIT_BLOCK && L->cell != FASTRNN_GRU_RESET_BEFORE
           && macs >= FASTRNN_SPLIT_GEMM_MACS;
}

static inline int unit_threads(const fastrnn_layer *L, int training)
{
    int n = gemm_threads(L), blocks = L->H / FASTRNN_UNIT_BLOCK;
    if (!unit_split_applies(L) || loop_threads(L, training) > 1)
        return 1;
    return n < blocks ? n : blocks;
}

/* The hidden units [u0, u1) of member k of n: whole blocks, as even as they go */
static inline void unit_range(int H, int k, int n, int *u0, int *u1)
{
    int blocks = H / FASTRNN_UNIT_BLOCK;
    *u0 = blocks * k / n * FASTRNN_UNIT_BLOCK;
    *u1 = blocks * (k + 1) / n * FASTRNN_UNIT_BLOCK;
}

/* Rows of each per-step product: the batch, or a thread's slice of it */
static inline int step_rows(const fastrnn_layer *L, int training)
{
    int n = loop_threads(L, training);
    return (L->B + n - 1) / n;
}

/* Whether the per-step operands are copied (transposed or packed) into the
 * work (IndRNN has none) */
static inline int operand_buffered(const fastrnn_layer *L, int training)
{
    return !elementwise_recurrence(L->cell) && step_rows(L, training) <= FASTRNN_PACKED_ROWS;
}

/* Time steps per inference projection chunk. */
static inline int infer_chunk_steps(const fastrnn_layer *L)
{
    int k = FASTRNN_INFER_CHUNK_ROWS / L->B;
    if (k < 1)
        k = 1;
    return k < L->T ? k : L->T;
}

/* Input projections X W_ih^T of at most this many multiply-adds per GEMM use
 * the packed kernel (single-threaded: no BLAS call, no thread wake-up, which
 * on a busy machine can cost more than the product); larger ones BLAS. */
#define FASTRNN_PACKED_PROJECTION_MACS (2.0 * 1024 * 1024)

/* Whether inference projects the input step by step in each thread of a
 * threaded loop (its rows are the thread's slots) rather than in chunks */
static inline int projection_by_slice(const fastrnn_layer *L, int training)
{
    return !training && loop_threads(L, training) > 1;
}

/* Rows of each input-projection GEMM of a forward: all steps when training,
 * a chunk in inference, one step per GEMM for batch-first inference, a
 * slice's rows of a chunk in threaded inference. */
static inline int projection_rows(const fastrnn_layer *L, int training)
{
    if (training)
        return L->T * L->B;
    if (projection_by_slice(L, training))
        return infer_chunk_steps(L) * step_rows(L, training);
    return L->batch_first && L->B > 1 ? L->B : infer_chunk_steps(L) * L->B;
}

/* Whether the forward packs W_ih for the packed kernel (into its work); always
 * in threaded inference, where BLAS's threads would compete with the loop's. */
static inline int projection_packed(const fastrnn_layer *L, int training)
{
    int rows = projection_rows(L, training);
    double macs = (double)rows * L->I * fastrnn_num_gates(L->cell) * L->H;
    return rows > FASTRNN_SMALL_ROWS
           && (projection_by_slice(L, training)
               || macs <= FASTRNN_PACKED_PROJECTION_MACS);
}

#endif /* FASTRNN_INTERNAL_H */
