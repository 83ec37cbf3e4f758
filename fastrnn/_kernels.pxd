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
        int general
        fastrnn_act act[3]
        double clip
        int input_forget
        int threads

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

    enum:
        FASTRNN_ISA_BASELINE
        FASTRNN_ISA_AVX2
        FASTRNN_ISA_AVX512
    int fastrnn_best_isa()
    int fastrnn_isa()
    void fastrnn_set_num_threads(int n)
    int fastrnn_get_num_threads()
    int fastrnn_loop_threads(const fastrnn_layer *L, int training)
    int fastrnn_set_isa(int isa)

    int fastrnn_forward_f32(float *y, float *h_n, float *c_n, float *cache, float *work,
                            const float *x, const float *h0, const float *c0,
                            const float *w_ih, const float *w_hh,
                            const float *b_ih, const float *b_hh, const float *w_hr,
                            const float *peep,
                            const int *lengths, const int *order, const fastrnn_layer *L)
    int fastrnn_forward_f64(double *y, double *h_n, double *c_n, double *cache, double *work,
                            const double *x, const double *h0, const double *c0,
                            const double *w_ih, const double *w_hh,
                            const double *b_ih, const double *b_hh, const double *w_hr,
                            const double *peep,
                            const int *lengths, const int *order, const fastrnn_layer *L)

    int fastrnn_backward_f32(float *dx, float *dh0, float *dc0,
                             float *dw_ih, float *dw_hh, float *db_ih, float *db_hh, float *dw_hr,
                             float *dpeep, float *work, int accumulate_dx,
                             const float *dy, const float *dh_n, const float *dc_n,
                             const float *cache, const float *x,
                             const float *w_ih, const float *w_hh, const float *w_hr,
                             const float *peep,
                             const int *lengths, const int *order, const fastrnn_layer *L)
    int fastrnn_backward_f64(double *dx, double *dh0, double *dc0,
                             double *dw_ih, double *dw_hh, double *db_ih, double *db_hh,
                             double *dw_hr, double *dpeep, double *work, int accumulate_dx,
                             const double *dy, const double *dh_n, const double *dc_n,
                             const double *cache, const double *x,
                             const double *w_ih, const double *w_hh, const double *w_hr,
                             const double *peep,
                             const int *lengths, const int *order, const fastrnn_layer *L)
