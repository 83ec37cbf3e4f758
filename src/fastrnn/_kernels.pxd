# Mirrors csrc/fastrnn.h, line for line. Read that header for the contract.

cdef extern from "fastrnn.h" nogil:
    enum:
        FASTRNN_OK
        FASTRNN_ERR_ARGUMENT
        FASTRNN_ERR_NO_CACHE

    ctypedef enum fastrnn_cell:
        FASTRNN_RNN_TANH
        FASTRNN_RNN_RELU
        FASTRNN_LSTM
        FASTRNN_GRU
        FASTRNN_GRU_RESET_BEFORE
        FASTRNN_INDRNN_TANH
        FASTRNN_INDRNN_RELU

    ctypedef enum fastrnn_activation:
        FASTRNN_ACT_SIGMOID
        FASTRNN_ACT_TANH
        FASTRNN_ACT_RELU
        FASTRNN_ACT_AFFINE
        FASTRNN_ACT_LEAKY_RELU
        FASTRNN_ACT_THRESHOLDED_RELU
        FASTRNN_ACT_SCALED_TANH
        FASTRNN_ACT_HARD_SIGMOID
        FASTRNN_ACT_ELU
        FASTRNN_ACT_SOFTSIGN
        FASTRNN_ACT_SOFTPLUS

    ctypedef struct fastrnn_act:
        int kind
        double alpha, beta

    ctypedef struct fastrnn_layer:
        int cell
        int T, B, I, H
        int P
        int batch_first
        int reverse
        int ldy
        const int *lengths
        const int *order
        int accumulate_dx
        int general
        fastrnn_act act[3]
        double clip
        int input_forget
        const unsigned char *zone_h
        const unsigned char *zone_c
        double p_h, p_c
        const unsigned char *drop_x
        const unsigned char *drop_h
        double scale_x, scale_h
        int layer_norm
        int threads

    ctypedef struct fastrnn_params_f32:
        float *w_ih
        float *w_hh
        float *b_ih
        float *b_hh
        float *w_hr
        float *peep
        float *ln_ih
        float *ln_hh
        float *ln_c
        float *ln_cb
    ctypedef struct fastrnn_params_f64:
        double *w_ih
        double *w_hh
        double *b_ih
        double *b_hh
        double *w_hr
        double *peep
        double *ln_ih
        double *ln_hh
        double *ln_c
        double *ln_cb

    ctypedef struct fastrnn_state_f32:
        float *h
        float *c
    ctypedef struct fastrnn_state_f64:
        double *h
        double *c

    int fastrnn_num_gates(int cell)
    size_t fastrnn_cache_size(const fastrnn_layer *L)
    size_t fastrnn_forward_work_size(const fastrnn_layer *L, int training)
    size_t fastrnn_backward_work_size(const fastrnn_layer *L)

    ctypedef void (*fastrnn_sgemm_fn)(const char *transa, const char *transb,
                                      const int *m, const int *n, const int *k,
                                      const float *alpha, const float *a, const int *lda,
                                      const float *b, const int *ldb, const float *beta,
                                      float *c, const int *ldc)
    ctypedef void (*fastrnn_dgemm_fn)(const char *transa, const char *transb,
                                      const int *m, const int *n, const int *k,
                                      const double *alpha, const double *a, const int *lda,
                                      const double *b, const int *ldb, const double *beta,
                                      double *c, const int *ldc)
    void fastrnn_set_gemm(fastrnn_sgemm_fn sgemm, fastrnn_dgemm_fn dgemm)
    int fastrnn_gemm_is_blas()

    ctypedef int (*fastrnn_blas_get_threads_fn)()
    ctypedef void (*fastrnn_blas_set_threads_fn)(int n)
    void fastrnn_set_blas_threading(fastrnn_blas_get_threads_fn get,
                                    fastrnn_blas_set_threads_fn set)

    void fastrnn_set_num_threads(int n)
    int fastrnn_get_num_threads()
    int fastrnn_loop_threads(const fastrnn_layer *L, int training)
    int fastrnn_unit_threads(const fastrnn_layer *L, int training)

    enum:
        FASTRNN_ISA_BASELINE
        FASTRNN_ISA_AVX2
        FASTRNN_ISA_AVX512
    int fastrnn_best_isa()
    int fastrnn_isa()
    int fastrnn_set_isa(int isa)
    long fastrnn_fma_probe_f32(long iterations, float *sink)

    int fastrnn_forward_f32(float *y, fastrnn_state_f32 *state_n, float *cache,
                            float *work, const float *x, const fastrnn_state_f32 *state0,
                            const fastrnn_params_f32 *W, const fastrnn_layer *L)
    int fastrnn_forward_f64(double *y, fastrnn_state_f64 *state_n, double *cache,
                            double *work, const double *x, const fastrnn_state_f64 *state0,
                            const fastrnn_params_f64 *W, const fastrnn_layer *L)

    int fastrnn_backward_f32(float *dx, fastrnn_state_f32 *dstate0,
                             const fastrnn_params_f32 *dW, float *work, const float *dy,
                             const fastrnn_state_f32 *dstate_n, const float *cache,
                             const float *x, const fastrnn_params_f32 *W,
                             const fastrnn_layer *L)
    int fastrnn_backward_f64(double *dx, fastrnn_state_f64 *dstate0,
                             const fastrnn_params_f64 *dW, double *work, const double *dy,
                             const fastrnn_state_f64 *dstate_n, const double *cache,
                             const double *x, const fastrnn_params_f64 *W,
                             const fastrnn_layer *L)
