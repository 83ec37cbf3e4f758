/* fastrnn.h -- the C API of fastrnn's recurrent kernels.
 *
 * Pure C99: no Python, no allocation, no printing, no exit. Every function
 * works on caller-owned buffers and returns a status code. Preconditions
 * written as "assumed" are not checked here: the Cython layer checks them
 * once, before it releases the GIL.
 *
 * Dimension letters, used in every shape comment:
 *   T  time steps          B  batch rows          I  input features
 *   H  hidden features     G  gates of the cell (RNN 1, LSTM 4, GRU 3, IndRNN 1)
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
    FASTRNN_GRU_RESET_BEFORE = 4, /* n = tanh(x W_in^T + b_in + (r*h) W_hn^T + b_hn) */
    FASTRNN_INDRNN_TANH = 5,      /* h = tanh(x W_ih^T + b_ih + u * h + b_hh), u = w_hh (H) */
    FASTRNN_INDRNN_RELU = 6       /* h = relu(same) (Li et al. 2018, IndRNN) */
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

/* One layer-direction call: its sizes, flags and sequence lengths. */
typedef struct {
    int cell;          /* fastrnn_cell */
    int T, B, I, H;    /* sizes; T, B, I, H >= 1 */
    int P;             /* LSTM projection: h = (o * tanh(c)) W_hr^T has P columns; 0: none */
    int batch_first;   /* x, y, cache rows are b*T + t instead of t*B + b */
    int reverse;       /* run t = T-1 .. 0 */
    int ldy;           /* row stride of y and dy (D*R for D directions), >= R */
    const int *lengths;  /* (B) with 0 <= lengths[b] <= T, or NULL (all T) */
    const int *order;    /* (B) permutation sorting lengths descending; NULL with lengths */
    int accumulate_dx;   /* backward adds to dx instead of writing it (the second
                          * direction of a bidirectional layer shares its input) */
    /* The general cells (ONNX's options), used only when general is 1; the
     * default cells above are PyTorch's and take the fast path. */
    int general;
    fastrnn_act act[3];  /* RNN: act[0]; LSTM: f (gates), g (cell input), h (output);
                          * GRU: f (gates), g (candidate) */
    double clip;         /* > 0: every activation's input is clipped to [-clip, clip] */
    int input_forget;    /* LSTM: couple the gates, f = 1 - i */
    /* Zoneout (Krueger et al. 2016): after each active step, a unit of h (and
     * of the LSTM's c) keeps its previous value. With masks (training): the
     * unit keeps h_{t-1} where zone_h is 1, else takes the step's new value;
     * zone_h (T*B, R) and zone_c (T*B, H), rows in memory order, each NULL for
     * none. Without a mask, p_h > 0 (p_c > 0) gives the expectation (inference):
     * h_t = p_h * h_{t-1} + (1 - p_h) * h_new. The LSTM's new h is computed from
     * the new c before c's zoneout. Backward needs the forward's masks. */
    const unsigned char *zone_h, *zone_c;
    double p_h, p_c;
    /* Variational dropout as Keras' recurrent layers have it (Gal & Ghahramani
     * 2016), training only: one keep-mask per sequence and gate block, the same
     * at every step. Gate block g's input product is (x * keep_x[g] * scale_x)
     * W_ih_g^T and its recurrent product (h_{t-1} * keep_h[g] * scale_h)
     * W_hh_g^T (GRU: the n-term's too). drop_x (G, B, I) and drop_h (G, B, R),
     * 1: kept, NULL: none; scale_x, scale_h: 1 / (1 - p). With
     * FASTRNN_GRU_RESET_BEFORE the n block's product is (r * (h_{t-1} *
     * keep_h[2] * scale_h)) W_hn^T, as Keras'. Backward needs the forward's masks. */
    const unsigned char *drop_x, *drop_h;
    double scale_x, scale_h;
    /* Layer normalization (Ba et al. 2016, in the form of haste's LayerNormLSTM
     * and LayerNormGRU): LSTM and GRU (reset after) only, default cells, no
     * projection. Each row's input product x W_ih^T and recurrent product
     * h W_hh^T are normalized over all G*H columns (mean 0, variance 1, with
     * FASTRNN_LN_EPS added to the variance), scaled by the gains ln_ih, ln_hh
     * (G*H) and shifted by b_ih, b_hh (the biases act as the shifts); the LSTM
     * outputs h = o * tanh(LN(c_t) * ln_c + ln_cb). The parameters are in
     * fastrnn_params; c itself is the carried state. */
    int layer_norm;
    /* Threads the call may use for its time loop (0 or 1: the calling thread
     * only); the bindings fill it from fastrnn_get_num_threads(). */
    int threads;
} fastrnn_layer;

/* The parameters of one layer-direction, and (the same type) their gradients.
 * Shapes: w_ih (G*H, I), w_hh (G*H, R) (IndRNN: the vector u (H), its
 * elementwise recurrent weights), b_ih and b_hh (G*H) or both NULL,
 * w_hr (P, H) with a projection else NULL, peep (3H) LSTM peepholes p_i, p_f,
 * p_o of the general cells else NULL (i and f see p * c_{t-1}, o sees
 * p * c_t). With layer_norm: the gains ln_ih, ln_hh (G*H), and for the LSTM
 * the gain ln_c and shift ln_cb (H) of c's normalization; else NULL. The
 * kernels never write through a parameter struct given as const; gradients
 * accumulate (+=). */
typedef struct {
    float *w_ih, *w_hh, *b_ih, *b_hh, *w_hr, *peep;
    float *ln_ih, *ln_hh, *ln_c, *ln_cb;
} fastrnn_params_f32;
typedef struct {
    double *w_ih, *w_hh, *b_ih, *b_hh, *w_hr, *peep;
    double *ln_ih, *ln_hh, *ln_c, *ln_cb;
} fastrnn_params_f64;

/* The variance offset of layer normalization (torch.nn.LayerNorm's default) */
#define FASTRNN_LN_EPS 1e-5

/* A recurrent state (or its gradient): h (B, R), and c (B, H) for LSTM, else NULL. */
typedef struct { float *h, *c; } fastrnn_state_f32;
typedef struct { double *h, *c; } fastrnn_state_f64;

/* Gates per cell kind (1, 4 or 3); 0 for an unknown kind. */
int fastrnn_num_gates(int cell);

/* Element counts of the caller-provided buffers. The training cache holds,
 * in memory order: gates (T*B, G*H) post-activation (pre-activation for the
 * general cells, whose derivatives need their input), hs (T*B, R) the state
 * entering each step, then for LSTM cs (T*B, H) the cell state entering each
 * step, for GRU (T*B, H) the recurrent n-term (reset after) or r*h (reset
 * before), then with a projection ms (T*B, H) = o * h(c) before W_hr, then
 * with layer_norm the normalized products ln_ih and ln_hh (T*B, G*H), for the
 * LSTM the normalized c_t ln_c (T*B, H), and rstd (T*B, 3) the inverse
 * standard deviations of the three.
 * Inference keeps no cache; its workspace is independent of T. The sizes
 * depend only on cell, T, B, I, H, P and training: the workspace size is the
 * largest of every loop path (thread count, layout, options), so a size taken
 * before a call fits the call whatever fastrnn_set_num_threads did between.
 * The layouts themselves are written once, in layer_impl.h (cache_layout,
 * forward_layout, backward_layout). */
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

/* The BLAS's own thread setting (e.g. OpenBLAS's openblas_get_num_threads /
 * openblas_set_num_threads), or NULL for a BLAS whose threads cannot be set.
 * While any kernel call runs, the BLAS is set to one thread and the kernels
 * split their large products over their own threads (fastrnn_layer.threads);
 * the last call to return restores the setting. */
typedef int (*fastrnn_blas_get_threads_fn)(void);
typedef void (*fastrnn_blas_set_threads_fn)(int n);
void fastrnn_set_blas_threading(fastrnn_blas_get_threads_fn get, fastrnn_blas_set_threads_fn set);

/* Threads of the time loops of later calls (a process-wide setting, >= 1;
 * BLAS's own threads are set through BLAS). */
void fastrnn_set_num_threads(int n);
int fastrnn_get_num_threads(void);
/* The threads a call with this layer would run its time loop on (1 unless
 * the batch and weights suit batch slices; see internal.h loop_threads). */
int fastrnn_loop_threads(const fastrnn_layer *L, int training);
/* The threads that would split its forward loop's hidden units instead (1
 * when that split does not apply; see internal.h unit_threads). */
int fastrnn_unit_threads(const fastrnn_layer *L, int training);

/* Instruction sets of the compiled variants (x86-64; elsewhere baseline only). */
enum { FASTRNN_ISA_BASELINE = 0, FASTRNN_ISA_AVX2 = 1, FASTRNN_ISA_AVX512 = 2 };

/* The best variant this CPU runs, and the one the kernels run (the best
 * unless forced). */
int fastrnn_best_isa(void);
int fastrnn_isa(void);
/* Force a variant (for tests and benchmarks); -1 returns to the best. Refuses
 * (FASTRNN_ERR_ARGUMENT) a variant this CPU cannot run. */
int fastrnn_set_isa(int isa);

/* The machine's FMA peak, for benchmark reports: `iterations` rounds of
 * independent float32 vector FMAs on registers in the variant in use, in the
 * calling thread; returns the floating-point operations done (time them).
 * *sink receives a result (to be ignored). */
long fastrnn_fma_probe_f32(long iterations, float *sink);

/* Forward of one layer-direction.
 *   y       (T*B, ldy) rows in memory order; this call writes columns [0, R)
 *           of each row, so pass y + d*R for direction d
 *   state_n the final state, written
 *   cache   fastrnn_cache_size elements when training, NULL for inference
 *   work    fastrnn_forward_work_size(L, cache != NULL) elements
 *   x       (T*B, I) rows in memory order
 *   state0  the initial state
 *   W       the parameters
 * Assumed, not checked: buffers of the sizes above, L->order consistent with
 * L->lengths, y not overlapping x.
 * (The function types declare the API functions below and the kernel
 * variants of every instruction set, so all agree by construction.) */
typedef int fastrnn_forward_fn_f32(float *y, fastrnn_state_f32 *state_n, float *cache,
                                   float *work, const float *x, const fastrnn_state_f32 *state0,
                                   const fastrnn_params_f32 *W, const fastrnn_layer *L);
typedef int fastrnn_forward_fn_f64(double *y, fastrnn_state_f64 *state_n, double *cache,
                                   double *work, const double *x, const fastrnn_state_f64 *state0,
                                   const fastrnn_params_f64 *W, const fastrnn_layer *L);
fastrnn_forward_fn_f32 fastrnn_forward_f32;
fastrnn_forward_fn_f64 fastrnn_forward_f64;

/* Backward (BPTT) of the forward call that filled `cache`.
 *   dx       (T*B, I): written, or added to with L->accumulate_dx
 *   dstate0  gradient of the initial state, written
 *   dW       parameter gradients, accumulated (+=); NULL members for the
 *            parameters W does not have
 *   work     fastrnn_backward_work_size elements
 *   dy       (T*B, ldy) gradient of y (columns [0, R)), or NULL for zeros
 *   dstate_n gradient of the final state; NULL members (or dstate_n NULL) for zeros
 *   cache, x, W, L: as given to the forward
 * Assumed, not checked: as for the forward. */
typedef int fastrnn_backward_fn_f32(float *dx, fastrnn_state_f32 *dstate0,
                                    const fastrnn_params_f32 *dW, float *work, const float *dy,
                                    const fastrnn_state_f32 *dstate_n, const float *cache,
                                    const float *x, const fastrnn_params_f32 *W,
                                    const fastrnn_layer *L);
typedef int fastrnn_backward_fn_f64(double *dx, fastrnn_state_f64 *dstate0,
                                    const fastrnn_params_f64 *dW, double *work, const double *dy,
                                    const fastrnn_state_f64 *dstate_n, const double *cache,
                                    const double *x, const fastrnn_params_f64 *W,
                                    const fastrnn_layer *L);
fastrnn_backward_fn_f32 fastrnn_backward_f32;
fastrnn_backward_fn_f64 fastrnn_backward_f64;

#ifdef __cplusplus
}
#endif

#endif /* FASTRNN_H */
