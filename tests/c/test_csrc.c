/* Plain-C checks of csrc/ (no Python): the float activations against libm in
 * double, the double ones against libm's, the per-step product kernels of
 * gemm.h against its naive GEMM, and one forward/backward through the C API
 * with the naive GEMM.
 * Prints "N passed, N failed" and exits non-zero on any failure. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "fastmath_f32.h"
#include "fastmath_f64.h"
#include "fastrnn.h"
#include "internal.h"

/* gemm.h's kernels in float, as the baseline build compiles them (the Python
 * tests run every instruction-set variant through the layers) */
#define real float
#define REAL_BYTES 4
#define LANE_INT int32_t
#define FN(name) name##_test
#define BLAS_GEMM_TYPE fastrnn_sgemm_fn
#define BLAS_GEMM ((fastrnn_sgemm_fn)0)   /* the naive GEMM */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "gemm.h"
#pragma GCC diagnostic pop

static int passed, failed;

static void check(int ok, const char *what, double value)
{
    if (ok) {
        passed++;
    } else {
        failed++;
        printf("FAIL %s (%g)\n", what, value);
    }
}

static double ulps(double got, double want)
{
    float w = (float)fabs(want);
    double ulp = nextafterf(w, INFINITY) - w;
    return fabs(got - want) / ulp;
}

static void test_activations(void)
{
    double worst_exp = 0, worst_tanh = 0;
    for (float v = -87.0f; v < 88.0f; v += 0.000731f) {
        double e = ulps(fastrnn_expf(v), exp((double)v));
        double t = ulps(fastrnn_tanhf(v), tanh((double)v));
        worst_exp = e > worst_exp ? e : worst_exp;
        worst_tanh = t > worst_tanh ? t : worst_tanh;
    }
    for (float v = 1e-30f; v < 1.0f; v *= 1.001f) {   /* tiny arguments keep relative accuracy */
        double t = ulps(fastrnn_tanhf(v), tanh((double)v));
        worst_tanh = t > worst_tanh ? t : worst_tanh;
    }
    check(worst_exp <= 2.0, "expf within 2 ulp", worst_exp);
    check(worst_tanh <= 2.0, "tanhf within 2 ulp", worst_tanh);
    check(isnan(fastrnn_tanhf(NAN)) && isnan(fastrnn_expf(NAN)), "NaN propagates", 0);
    check(fastrnn_tanhf(INFINITY) == 1.0f && fastrnn_tanhf(-INFINITY) == -1.0f, "tanh(+-inf)", 0);
    check(fastrnn_expf(-INFINITY) >= 0.0f && fastrnn_expf(-INFINITY) < 1e-37f, "exp(-inf)", 0);
}

/* |got - want| in units of want's double ulp (an ulp of the smallest
 * subnormal at 0); infinities must match exactly */
static double ulps64(double got, double want)
{
    if (isinf(want) || isinf(got))
        return got == want ? 0.0 : INFINITY;
    double w = fabs(want);
    return fabs(got - want) / (nextafter(w, INFINITY) - w);
}

static void test_activations_f64(void)
{
    double worst_exp = 0, worst_tanh = 0;
    /* the whole range, with overflow (> 709.78) and gradual underflow to 0 (< -708.4) */
    for (double v = -750.0; v < 750.0; v += 0.000917) {
        double e = ulps64(fastrnn_exp(v), exp(v));
        worst_exp = e > worst_exp ? e : worst_exp;
    }
    for (double v = -20.0; v < 20.0; v += 0.0000317) {
        double t = ulps64(fastrnn_tanh(v), tanh(v));
        worst_tanh = t > worst_tanh ? t : worst_tanh;
    }
    for (double v = 0.53; v < 0.57; v += 1.3e-8) {       /* around the switch of formulas */
        double t = ulps64(fastrnn_tanh(v), tanh(v)), tn = ulps64(fastrnn_tanh(-v), tanh(-v));
        t = tn > t ? tn : t;
        worst_tanh = t > worst_tanh ? t : worst_tanh;
    }
    for (double v = 1e-300; v < 1.0; v *= 1.0001) {     /* tiny arguments keep relative accuracy */
        double t = ulps64(fastrnn_tanh(v), tanh(v));
        worst_tanh = t > worst_tanh ? t : worst_tanh;
    }
    check(worst_exp <= 2.0, "exp within 2 ulp", worst_exp);
    check(worst_tanh <= 3.0, "tanh within 3 ulp", worst_tanh);
    check(isnan(fastrnn_tanh(NAN)) && isnan(fastrnn_exp(NAN)), "NaN propagates (double)", 0);
    check(fastrnn_exp(INFINITY) == INFINITY && fastrnn_exp(710.0) == INFINITY
          && isfinite(fastrnn_exp(709.78)), "exp overflows to inf where libm does", 0);
    check(fastrnn_exp(-INFINITY) == 0.0 && fastrnn_exp(-746.0) == 0.0
          && fastrnn_exp(-745.1) > 0.0, "exp underflows to 0 where libm does", 0);
    check(fastrnn_tanh(INFINITY) == 1.0 && fastrnn_tanh(-INFINITY) == -1.0, "tanh(+-inf) (double)", 0);
    check(fastrnn_tanh(5e-324) == 5e-324 && fastrnn_tanh(-1e-310) == -1e-310
          && signbit(fastrnn_tanh(-0.0)), "tanh of subnormals and -0", 0);
}

/* every kernel (NT, SMALL, PACKED and the BLAS kind, here naive) through
 * operand_prepare/operand_mul, W given transposed and not, both accumulate
 * modes, against gemm_naive; sizes around every tile and register block */
static void test_step_kernels(void)
{
    static const int Ms[] = {1, 2, 3, 4, 5, 8, 9, 13, 32, 33};
    static const int Ns[] = {1, 7, 8, 31, 32, 33, 100};
    static const int Ks[] = {1, 3, 4, 17, 64};
    double worst = 0;
    int cases = 0;
    for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++)
        for (size_t ni = 0; ni < sizeof Ns / sizeof *Ns; ni++)
            for (size_t ki = 0; ki < sizeof Ks / sizeof *Ks; ki++) {
                int M = Ms[mi], N = Ns[ni], K = Ks[ki];
                float *A = malloc(sizeof(float) * M * K), *W = malloc(sizeof(float) * N * K);
                float *want = malloc(sizeof(float) * M * N), *got = malloc(sizeof(float) * M * N);
                float *buf = malloc(sizeof(float) * operand_size(K, N));
                for (int i = 0; i < M * K; i++) A[i] = (float)((i * 37 % 101) - 50) / 50.0f;
                for (int i = 0; i < N * K; i++) W[i] = (float)((i * 53 % 97) - 48) / 48.0f;
                for (int transposed = 0; transposed <= 1; transposed++)
                    for (int steps = 1; steps <= 8; steps += 7)
                        for (int acc = 0; acc <= 1; acc++) {
                            /* W holds (N, K) rows when transposed, else (K, N) */
                            int ld = transposed ? K : N;
                            for (int i = 0; i < M * N; i++)
                                want[i] = got[i] = (float)(i % 5) - 2.0f;
                            gemm_naive_test(0, transposed, M, N, K, 1.0f, A, K, W, ld,
                                            acc ? 1.0f : 0.0f, want, N);
                            operand_test op = operand_prepare_test(W, ld, transposed, K, N, M,
                                                                   steps, buf, 1);
                            operand_mul_test(&op, M, A, K, acc, got, N);
                            for (int i = 0; i < M * N; i++) {
                                double e = fabs((double)got[i] - want[i]);
                                if (e > worst) worst = e;
                            }
                            cases++;
                        }
                free(A); free(W); free(want); free(got); free(buf);
            }
    check(worst <= 1e-4, "per-step kernels match the naive GEMM", worst);
    check(cases == 10 * 7 * 5 * 8, "per-step kernel cases", cases);
}

static void test_layer_round_trip(int cell)
{
    fastrnn_layer L = {.cell = cell, .T = 6, .B = 3, .I = 4, .H = 5, .P = 0,
                       .batch_first = 0, .reverse = 1, .ldy = 5, .general = 0};
    int GH = fastrnn_num_gates(cell) * L.H;
    size_t rows = (size_t)L.T * L.B;
    size_t nwork = fastrnn_forward_work_size(&L, 1);
    if (fastrnn_backward_work_size(&L) > nwork)
        nwork = fastrnn_backward_work_size(&L);
    float *x = calloc(rows * L.I, sizeof(float)), *y = calloc(rows * L.H, sizeof(float));
    float *hn = calloc(L.B * L.H, sizeof(float)), *cn = calloc(L.B * L.H, sizeof(float));
    float *h0 = calloc(L.B * L.H, sizeof(float)), *c0 = calloc(L.B * L.H, sizeof(float));
    float *w_ih = calloc((size_t)GH * L.I, sizeof(float)), *w_hh = calloc((size_t)GH * L.H, sizeof(float));
    float *cache = calloc(fastrnn_cache_size(&L), sizeof(float)), *work = calloc(nwork, sizeof(float));
    float *dx = calloc(rows * L.I, sizeof(float)), *dh0 = calloc(L.B * L.H, sizeof(float));
    float *dc0 = calloc(L.B * L.H, sizeof(float));
    float *dw_ih = calloc((size_t)GH * L.I, sizeof(float)), *dw_hh = calloc((size_t)GH * L.H, sizeof(float));
    int lengths[3] = {2, 6, 4}, order[3] = {1, 2, 0};
    for (size_t i = 0; i < rows * L.I; i++) x[i] = (float)sin((double)i);
    for (int i = 0; i < GH * L.I; i++) w_ih[i] = 0.3f * (float)cos((double)i);
    for (int i = 0; i < GH * L.H; i++) w_hh[i] = 0.2f * (float)sin(0.7 * i);

    fastrnn_state_f32 state0 = {h0, c0}, state_n = {hn, cn}, dstate0 = {dh0, dc0};
    fastrnn_params_f32 W = {.w_ih = w_ih, .w_hh = w_hh}, dW = {.w_ih = dw_ih, .w_hh = dw_hh};
    if (cell != FASTRNN_LSTM)
        state0.c = state_n.c = dstate0.c = NULL;
    L.lengths = lengths;
    L.order = order;
    int status = fastrnn_forward_f32(y, &state_n, cache, work, x, &state0, &W, &L);
    check(status == FASTRNN_OK, "forward status", status);
    /* row b = 0 has length 2: its outputs at t >= 2 are zero */
    check(y[(size_t)(3 * L.B + 0) * L.H] == 0.0f, "output zero past the length", 0);
    status = fastrnn_backward_f32(dx, &dstate0, &dW, work, y, NULL, cache, x, &W, &L);
    check(status == FASTRNN_OK, "backward status", status);
    double norm = 0;
    for (int i = 0; i < GH * L.I; i++) norm += fabs(dw_ih[i]);
    check(isfinite(norm) && norm > 0, "weight gradient finite and non-zero", norm);
    check(fastrnn_backward_f32(dx, &dstate0, &dW, work, y, NULL, NULL, x, &W, &L)
          == FASTRNN_ERR_NO_CACHE,
          "backward without cache refused", 0);
    L.order = NULL;
    check(fastrnn_forward_f32(y, &state_n, NULL, work, x, &state0, &W, &L) == FASTRNN_ERR_ARGUMENT,
          "lengths without an order refused", 0);
    L.lengths = NULL;
    fastrnn_params_f32 no_w_hh = {.w_ih = w_ih};
    check(fastrnn_forward_f32(y, &state_n, NULL, work, x, &state0, &no_w_hh, &L)
          == FASTRNN_ERR_ARGUMENT, "missing w_hh refused", 0);
    L.cell = 99;
    check(fastrnn_forward_f32(y, &state_n, NULL, work, x, &state0, &W, &L) == FASTRNN_ERR_ARGUMENT,
          "unknown cell refused", 0);
    L.cell = FASTRNN_GRU;
    L.P = 2;   /* a projection is for LSTM only */
    fastrnn_params_f32 with_w_hr = {.w_ih = w_ih, .w_hh = w_hh, .w_hr = w_hh};
    check(fastrnn_forward_f32(y, &state_n, NULL, work, x, &state0, &with_w_hr, &L)
          == FASTRNN_ERR_ARGUMENT, "GRU projection refused", 0);
    free(x); free(y); free(hn); free(cn); free(h0); free(c0); free(w_ih); free(w_hh);
    free(cache); free(work); free(dx); free(dh0); free(dc0); free(dw_ih); free(dw_hh);
}

/* gemm split over threads (slices of C's rows, or of its columns when C is
 * wide) equals one serial product, for every transpose */
static void test_split_gemm(void)
{
    double worst = 0;
    int cases = 0;
    int shapes[2][3] = {{150, 70, 420}, {40, 260, 420}};   /* tall (rows), wide (columns) */
    for (int s = 0; s < 2; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *A = malloc(sizeof(float) * M * K), *Bm = malloc(sizeof(float) * K * N);
        float *want = malloc(sizeof(float) * M * N), *got = malloc(sizeof(float) * M * N);
        for (int i = 0; i < M * K; i++) A[i] = (float)sin(0.37 * i);
        for (int i = 0; i < K * N; i++) Bm[i] = (float)cos(0.11 * i);
        for (int ta = 0; ta <= 1; ta++)
            for (int tb = 0; tb <= 1; tb++) {
                int lda = ta ? M : K, ldb = tb ? K : N;
                for (int i = 0; i < M * N; i++) want[i] = got[i] = (float)(i % 3);
                gemm_naive_test(ta, tb, M, N, K, 0.5f, A, lda, Bm, ldb, 1.0f, want, N);
                gemm_test(3, ta, tb, M, N, K, 0.5f, A, lda, Bm, ldb, 1.0f, got, N);
                for (int i = 0; i < M * N; i++) {
                    double e = fabs((double)got[i] - want[i]);
                    if (e > worst) worst = e;
                }
                cases++;
            }
        free(A); free(Bm); free(want); free(got);
    }
    check(worst == 0, "split gemm equals the serial one", worst);
    check(cases == 8, "split gemm cases", cases);
}

/* A stand-in BLAS (column-major sgemm, as Fortran's) that records the
 * thread setting it runs under, and a stand-in thread setting */
static int fake_threads = 4, fake_set_calls, fake_sgemm_calls, fake_threads_seen_max;

static int fake_get_threads(void) { return fake_threads; }
static void fake_set_threads(int n) { fake_threads = n; fake_set_calls++; }

static void fake_sgemm(const char *ta, const char *tb, const int *m, const int *n, const int *k,
                       const float *alpha, const float *a, const int *lda, const float *b,
                       const int *ldb, const float *beta, float *c, const int *ldc)
{
    fake_sgemm_calls++;
    if (fake_threads > fake_threads_seen_max)
        fake_threads_seen_max = fake_threads;
    for (int j = 0; j < *n; j++)
        for (int i = 0; i < *m; i++) {
            double sum = 0;
            for (int p = 0; p < *k; p++)
                sum += (double)(*ta == 'N' ? a[i + (size_t)p * *lda] : a[p + (size_t)i * *lda])
                       * (*tb == 'N' ? b[p + (size_t)j * *ldb] : b[j + (size_t)p * *ldb]);
            float *cij = c + i + (size_t)j * *ldc;
            *cij = (float)(*alpha * sum + (*beta == 0.0f ? 0.0 : (double)*beta * *cij));
        }
}

/* A call makes BLAS serial only if it reaches a BLAS product, and puts the
 * setting back when it returns; a call without one (one row: the dot
 * kernels) leaves BLAS's setting alone. */
static void test_blas_serial_only_when_used(void)
{
    fastrnn_set_gemm(fake_sgemm, NULL);
    fastrnn_set_blas_threading(fake_get_threads, fake_set_threads);
    for (int B = 64; B >= 1; B -= 63) {
        fastrnn_layer L = {.cell = FASTRNN_GRU, .T = 3, .B = B, .I = 8, .H = 8, .ldy = 8,
                           .threads = 1};
        size_t rows = (size_t)L.T * B;
        float *x = calloc(rows * 8, sizeof(float)), *y = calloc(rows * 8, sizeof(float));
        float *h0 = calloc((size_t)B * 8, sizeof(float)), *hn = calloc((size_t)B * 8, sizeof(float));
        float *w_ih = calloc(24 * 8, sizeof(float)), *w_hh = calloc(24 * 8, sizeof(float));
        float *work = calloc(fastrnn_forward_work_size(&L, 0), sizeof(float));
        fastrnn_state_f32 state0 = {h0, NULL}, state_n = {hn, NULL};
        fastrnn_params_f32 W = {.w_ih = w_ih, .w_hh = w_hh};
        fake_set_calls = fake_sgemm_calls = fake_threads_seen_max = 0;
        int status = fastrnn_forward_f32(y, &state_n, NULL, work, x, &state0, &W, &L);
        check(status == FASTRNN_OK, "forward status (stand-in BLAS)", status);
        if (B > 1) {   /* 64 rows per step: BLAS products, run serially */
            check(fake_sgemm_calls > 0, "rows above the packed kernel's reach BLAS", B);
            check(fake_threads_seen_max == 1, "BLAS serial during the call", fake_threads_seen_max);
            check(fake_set_calls == 2, "BLAS set serial once and restored", fake_set_calls);
        } else {
            check(fake_sgemm_calls == 0 && fake_set_calls == 0,
                  "a call without BLAS leaves its setting alone", fake_set_calls);
        }
        check(fake_threads == 4, "BLAS's setting restored", fake_threads);
        free(x); free(y); free(h0); free(hn); free(w_ih); free(w_hh); free(work);
    }
    fastrnn_set_blas_threading(NULL, NULL);
    fastrnn_set_gemm(NULL, NULL);
}

/* IndRNN's recurrence is elementwise: no ONNX general cell takes it */
static void test_indrnn_has_no_general_cell(void)
{
    fastrnn_layer L = {.cell = FASTRNN_INDRNN_RELU, .T = 1, .B = 1, .I = 1, .H = 1, .ldy = 1,
                       .general = 1};
    float x = 1, y, h0 = 0, hn, w_ih = 1, u = 0.5f, work[64];
    fastrnn_state_f32 state0 = {&h0, NULL}, state_n = {&hn, NULL};
    fastrnn_params_f32 W = {.w_ih = &w_ih, .w_hh = &u};
    check(fastrnn_forward_work_size(&L, 0) <= 64, "IndRNN work fits", 0);
    check(fastrnn_forward_f32(&y, &state_n, NULL, work, &x, &state0, &W, &L)
          == FASTRNN_ERR_ARGUMENT, "IndRNN general cell refused", 0);
    L.general = 0;
    check(fastrnn_forward_f32(&y, &state_n, NULL, work, &x, &state0, &W, &L) == FASTRNN_OK
          && y == 1.0f && hn == 1.0f, "IndRNN one step: relu(1 * 1 + 0.5 * 0)", (double)y);
}

/* The layouts count elements, so the sizes the API reports (from the float
 * baseline variant, dispatch.c) hold for the double kernels too. */
size_t fastrnn_cache_size_f64_base(const fastrnn_layer *L);
size_t fastrnn_forward_work_size_f64_base(const fastrnn_layer *L, int training);
size_t fastrnn_backward_work_size_f64_base(const fastrnn_layer *L);

static void test_sizes_precision_free(void)
{
    int mismatches = 0, cases = 0;
    for (int cell = FASTRNN_RNN_TANH; cell <= FASTRNN_INDRNN_RELU; cell++)
        for (int B = 1; B <= 80; B += 13)
            for (int P = 0; P <= (cell == FASTRNN_LSTM ? 3 : 0); P += 3)
                for (int training = 0; training <= 1; training++) {
                    fastrnn_layer L = {.cell = cell, .T = 7, .B = B, .I = 9, .H = 6, .P = P,
                                       .ldy = 6, .threads = 4};
                    mismatches += fastrnn_cache_size(&L) != fastrnn_cache_size_f64_base(&L);
                    mismatches += fastrnn_forward_work_size(&L, training)
                                  != fastrnn_forward_work_size_f64_base(&L, training);
                    mismatches += fastrnn_backward_work_size(&L)
                                  != fastrnn_backward_work_size_f64_base(&L);
                    cases++;
                }
    check(mismatches == 0, "sizes equal for float and double", mismatches);
    check(cases > 0, "size cases", cases);
}

int main(void)
{
    fastrnn_set_gemm(NULL, NULL);   /* the naive GEMM: no BLAS in a plain C build */
    test_activations();
    test_activations_f64();
    test_step_kernels();
    test_sizes_precision_free();
    test_split_gemm();
    test_blas_serial_only_when_used();
    for (int cell = FASTRNN_RNN_TANH; cell <= FASTRNN_INDRNN_RELU; cell++)
        test_layer_round_trip(cell);
    test_indrnn_has_no_general_cell();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
