/* fastrnn.h -- the C API of fastrnn's recurrent kernels.
 *
 * Pure C99: no Python, no allocation, no printing, no exit. Every function
 * works on caller-owned buffers and returns a status code. Preconditions
 * written as "assumed" are not checked here: the Cython layer checks them
 * once, before it releases the GIL.
 *
 * Dimension letters, used in every shape comment:
 *   T  time steps          B  batch rows          I  input features
 *   H  hidden features     G  gates of the cell (RNN 1, LSTM 4, GRU 3)
 *   P  LSTM projection size (0: none); R = P or H is the width of h
 *
 * Memory order. x, y and every training-cache tensor are matrices whose rows
 * are (t, b) pairs, stored time-major (row t*B + b) or batch-first
 * (row b*T + t). One layer call runs one direction of one layer.
 *
 * Lengths. Row b is active at time t iff t < lengths[b] (lengths NULL: all
 * rows active at all steps). An inactive step writes zeros to y and leaves
 * the state untouched. The forward direction runs t = 0..T-1, the reverse
 * direction t = T-1..0 with the same rule, so a reversed sequence starts at
 * its own last valid step from h0. Rows are visited in `order`, a permutation
 * of 0..B-1 that sorts lengths in descending order, so the rows active at a
 * step are always a prefix of the slots and the recurrent GEMM shrinks
 * instead of masking.
 */
#ifndef FASTRNN_H
#define FASTRNN_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. */
enum {
    FASTRNN_OK = 0,
    FASTRNN_ERR_ARGUMENT = 1,   /* a size or flag outside the documented range */
    FASTRNN_ERR_NO_CACHE = 2    /* backward called without a training cache */
};

/* Cell kinds, gate order as PyTorch (LSTM i,f,g,o; GRU r,z,n). */
typedef enum {
    FASTRNN_RNN_TANH = 0,         /* h = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) */
    FASTRNN_RNN_RELU = 1,         /* h = relu(same) */
    FASTRNN_LSTM = 2,             /* c = f*c + i*g; h = o*tanh(c) */
    FASTRNN_GRU = 3,              /* n = tanh(x W_in^T + b_in + r*(h W_hn^T + b_hn)) */
    FASTRNN_GRU_RESET_BEFORE = 4  /* n = tanh(x W_in^T + b_in + (r*h) W_hn^T + b_hn) */
} fastrnn_cell;

/* Activations of the general cells (ONNX's list; alpha and beta as ONNX's). */
typedef enum {
    FASTRNN_ACT_SIGMOID = 0,
    FASTRNN_ACT_TANH = 1,
    FASTRNN_ACT_RELU = 2,
    FASTRNN_ACT_AFFINE = 3,            /* alpha*x + beta */
    FASTRNN_ACT_LEAKY_RELU = 4,        /* x >= 0 ? x : alpha*x */
    FASTRNN_ACT_THRESHOLDED_RELU = 5,  /* x > alpha ? x : 0 */
    FASTRNN_ACT_SCALED_TANH = 6,       /* alpha*tanh(beta*x) */
    FASTRNN_ACT_HARD_SIGMOID = 7,      /* min(max(alpha*x + beta, 0), 1) */
    FASTRNN_ACT_ELU = 8,               /* x >= 0 ? x : alpha*(e^x - 1) */
    FASTRNN_ACT_SOFTSIGN = 9,          /* x / (1 + |x|) */
    FASTRNN_ACT_SOFTPLUS = 10          /* log(1 + e^x) */
} fastrnn_activation;

typedef struct {
    int kind;                  /* fastrnn_activation */
    double alpha, beta;
} fastrnn_act;

/* The sizes and flags of one layer-direction call. */
typedef struct {
    int cell;          /* fastrnn_cell */
    int T, B, I, H;    /* sizes; T, B, I, H >= 1 */
    int P;             /* LSTM projection: h = (o * tanh(c)) W_hr^T has P columns; 0: none */
    int batch_first;   /* x, y, cache rows are b*T + t instead of t*B + b */
    int reverse;       /* run t = T-1 .. 0 */
    int ldy;           /* row stride of y and dy (D*R for D directions), >= R */
    /* The general cells (ONNX's options), used only when general is 1; the
     * default cells above are PyTorch's and take the fast path. */
    int general;
    fastrnn_act act[3];  /* RNN: act[0]; LSTM: f (gates), g (cell input), h (output);
                          * GRU: f (gates), g (candidate) */
    double clip;         /* > 0: every activation's input is clipped to [-clip, clip] */
    int input_forget;    /* LSTM: couple the gates, f = 1 - i */
    /* Threads the call may use for its time loop (0 or 1: the calling thread
     * only); the bindings fill it from fastrnn_get_num_threads(). Part of the
     * layer so that the work size and the call agree. */
    int threads;
} fastrnn_layer;

/* Gates per cell kind (1, 4 or 3); 0 for an unknown kind. */
int fastrnn_num_gates(int cell);

/* Element counts of the caller-provided buffers. The training cache holds,
 * in memory order: gates (T*B, G*H) post-activation (pre-activation for the
 * general cells, whose derivatives need their input), hs (T*B, R) the state
 * entering each step, then for LSTM cs (T*B, H) the cell state entering each
 * step, for GRU (T*B, H) the recurrent n-term (reset after) or r*h (reset
 * before), then with a projection ms (T*B, H) = o * h(c) before W_hr.
 * Inference keeps no cache; its workspace is independent of T. The sizes
 * depend only on cell, T, B, I, H, P and training: the workspace size is the
 * largest of every loop path (thread count, layout, options), so a size taken
 * before a call fits the call whatever fastrnn_set_num_threads did between. */
size_t fastrnn_cache_size(const fastrnn_layer *L);
size_t fastrnn_forward_work_size(const fastrnn_layer *L, int training);
size_t fastrnn_backward_work_size(const fastrnn_layer *L);

/* Matrix product through a Fortran BLAS ?gemm (e.g. SciPy's cython_blas). */
typedef void (*fastrnn_sgemm_fn)(const char *transa, const char *transb,
                                 const int *m, const int *n, const int *k,
                                 const float *alpha, const float *a, const int *lda,
                                 const float *b, const int *ldb, const float *beta,
                                 float *c, const int *ldc);
typedef void (*fastrnn_dgemm_fn)(const char *transa, const char *transb,
                                 const int *m, const int *n, const int *k,
                                 const double *alpha, const double *a, const int *lda,
                                 const double *b, const int *ldb, const double *beta,
                                 double *c, const int *ldc);

/* Install the BLAS routines; NULL selects the naive C GEMM (the tested
 * sibling and fallback). Called once at import, before any kernel runs. */
void fastrnn_set_gemm(fastrnn_sgemm_fn sgemm, fastrnn_dgemm_fn dgemm);
/* 1 when BLAS is in use, 0 for the naive GEMM. */
int fastrnn_gemm_is_blas(void);

/* Threads of the time loops of later calls (a process-wide setting, >= 1;
 * BLAS's own threads are set through BLAS). */
void fastrnn_set_num_threads(int n);
int fastrnn_get_num_threads(void);
/* The threads a call with this layer would run its time loop on (1 unless
 * the batch and weights suit batch slices; see internal.h loop_threads). */
int fastrnn_loop_threads(const fastrnn_layer *L, int training);

/* Instruction sets of the compiled variants (x86-64; elsewhere baseline only). */
enum { FASTRNN_ISA_BASELINE = 0, FASTRNN_ISA_AVX2 = 1, FASTRNN_ISA_AVX512 = 2 };

/* The best variant this CPU runs, and the one the kernels run (the best
 * unless forced). */
int fastrnn_best_isa(void);
int fastrnn_isa(void);
/* Force a variant (for tests and benchmarks); -1 returns to the best. Refuses
 * (FASTRNN_ERR_ARGUMENT) a variant this CPU cannot run. */
int fastrnn_set_isa(int isa);

/* Forward of one layer-direction.
 *   y      (T*B, ldy) rows in memory order; this call writes columns [0, R)
 *          of each row, so pass y + d*R for direction d
 *   h_n    (B, R) final state; c_n (B, H) for LSTM, else unused (may be NULL)
 *   cache  fastrnn_cache_size elements when training, NULL for inference
 *   work   fastrnn_forward_work_size(L, cache != NULL) elements
 *   x      (T*B, I) rows in memory order
 *   h0     (B, R); c0 (B, H) for LSTM
 *   w_ih (G*H, I), w_hh (G*H, R), b_ih (G*H), b_hh (G*H): biases may be NULL
 *   w_hr   (P, H) with a projection, else NULL
 *   peep   (3H) LSTM peepholes p_i, p_f, p_o (general cells only), else NULL:
 *          i and f see p * c_{t-1}, o sees p * c_t
 *   lengths (B) with 0 <= lengths[b] <= T, or NULL (all T)
 *   order   (B) permutation sorting lengths descending (NULL with lengths NULL)
 * Assumed, not checked: buffers of the sizes above, order consistent with
 * lengths, y not overlapping x. */
int fastrnn_forward_f32(float *y, float *h_n, float *c_n, float *cache, float *work,
                        const float *x, const float *h0, const float *c0,
                        const float *w_ih, const float *w_hh,
                        const float *b_ih, const float *b_hh, const float *w_hr,
                        const float *peep,
                        const int *lengths, const int *order, const fastrnn_layer *L);
int fastrnn_forward_f64(double *y, double *h_n, double *c_n, double *cache, double *work,
                        const double *x, const double *h0, const double *c0,
                        const double *w_ih, const double *w_hh,
                        const double *b_ih, const double *b_hh, const double *w_hr,
                        const double *peep,
                        const int *lengths, const int *order, const fastrnn_layer *L);

/* Backward (BPTT) of the forward call that filled `cache`.
 *   dx     (T*B, I): written, or added to when accumulate_dx (the second
 *          direction of a bidirectional layer shares its input)
 *   dh0    (B, R) written; dc0 (B, H) written for LSTM
 *   dw_ih, dw_hh, db_ih, db_hh, dw_hr, dpeep: parameter gradients, accumulated
 *          (+=); NULL for a parameter the layer does not have
 *   work   fastrnn_backward_work_size elements
 *   dy     (T*B, ldy) gradient of y (columns [0, R)), or NULL for zeros
 *   dh_n (B, R), dc_n (B, H) gradients of the final state, or NULL for zeros
 *   cache, x, w_ih, w_hh, w_hr, peep, lengths, order: as given to the forward
 * Assumed, not checked: as for the forward. */
int fastrnn_backward_f32(float *dx, float *dh0, float *dc0,
                         float *dw_ih, float *dw_hh, float *db_ih, float *db_hh, float *dw_hr,
                         float *dpeep, float *work, int accumulate_dx,
                         const float *dy, const float *dh_n, const float *dc_n,
                         const float *cache, const float *x,
                         const float *w_ih, const float *w_hh, const float *w_hr,
                         const float *peep,
                         const int *lengths, const int *order, const fastrnn_layer *L);
int fastrnn_backward_f64(double *dx, double *dh0, double *dc0,
                         double *dw_ih, double *dw_hh, double *db_ih, double *db_hh, double *dw_hr,
                         double *dpeep, double *work, int accumulate_dx,
                         const double *dy, const double *dh_n, const double *dc_n,
                         const double *cache, const double *x,
                         const double *w_ih, const double *w_hh, const double *w_hr,
                         const double *peep,
                         const int *lengths, const int *order, const fastrnn_layer *L);

#ifdef __cplusplus
}
#endif

#endif /* FASTRNN_H */
