/* gemm.h -- row-major GEMM over the installed BLAS, or the naive sibling.
 *
 * C (M, N) = alpha * op(A) op(B) + beta * C, every matrix row-major with its
 * own leading dimension; op(A) is (M, K), op(B) is (K, N). beta == 0 means C
 * is not read (as in BLAS). */

/* The naive triple loop: reference and fallback for the BLAS path. */
static void FN(gemm_naive)(int trans_a, int trans_b, int M, int N, int K, real alpha,
                           const real *A, int lda, const real *Bm, int ldb,
                           real beta, real *C, int ldc)
{
    for (int m = 0; m < M; m++) {
        real *c = C + (size_t)m * ldc;
        for (int n = 0; n < N; n++)
            c[n] = beta == (real)0 ? (real)0 : beta * c[n];
        for (int k = 0; k < K; k++) {
            real a = alpha * (trans_a ? A[(size_t)k * lda + m] : A[(size_t)m * lda + k]);
            if (trans_b) {
                for (int n = 0; n < N; n++)
                    c[n] += a * Bm[(size_t)n * ldb + k];
            } else {
                const real *b = Bm + (size_t)k * ldb;
                for (int n = 0; n < N; n++)
                    c[n] += a * b[n];
            }
        }
    }
}

static void FN(gemm)(int trans_a, int trans_b, int M, int N, int K, real alpha,
                     const real *A, int lda, const real *Bm, int ldb,
                     real beta, real *C, int ldc)
{
    if (M <= 0 || N <= 0)
        return;
    /* read the installed routine once: set_gemm may run in another thread */
    BLAS_GEMM_TYPE blas = BLAS_GEMM;
    if (blas == NULL) {
        FN(gemm_naive)(trans_a, trans_b, M, N, K, alpha, A, lda, Bm, ldb, beta, C, ldc);
        return;
    }
    /* Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T:
     * hand BLAS the operands swapped, with M and N swapped. */
    char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
    blas(&tb, &ta, &N, &M, &K, &alpha, Bm, &ldb, A, &lda, &beta, C, &ldc);
}

/* C (M, N) = A (M, K) @ Bk (K, N) (+ C when accumulate), row-major: the
 * per-step products with few rows, where a BLAS call costs more than the
 * arithmetic (and may wake BLAS threads for microseconds of work). Four rows
 * of Bk per pass over C keep the loads and stores of C to one per 4 FMAs; the
 * inner loop vectorizes. */
static void FN(gemm_small)(int M, int N, int K, const real *A, int lda,
                           const real *Bk, int ldb, int accumulate, real *C, int ldc)
{
    for (int i = 0; i < M; i++) {
        real *restrict c = C + (size_t)i * ldc;
        const real *a = A + (size_t)i * lda;
        if (!accumulate)
            for (int j = 0; j < N; j++)
                c[j] = (real)0;
        int k = 0;
        for (; k + 4 <= K; k += 4) {
            const real *restrict b0 = Bk + (size_t)k * ldb, *restrict b1 = b0 + ldb;
            const real *restrict b2 = b1 + ldb, *restrict b3 = b2 + ldb;
            real a0 = a[k], a1 = a[k + 1], a2 = a[k + 2], a3 = a[k + 3];
            for (int j = 0; j < N; j++)
                c[j] += a0 * b0[j] + a1 * b1[j] + a2 * b2[j] + a3 * b3[j];
        }
        for (; k < K; k++) {
            const real *restrict b0 = Bk + (size_t)k * ldb;
            real a0 = a[k];
            for (int j = 0; j < N; j++)
                c[j] += a0 * b0[j];
        }
    }
}

/* C[:M] (+)= A[:M] @ Bk, Bk (K, N) row-major: the small kernel for up to
 * FASTRNN_SMALL_ROWS rows, BLAS above */
static void FN(step_gemm)(int M, int N, int K, const real *A, int lda, const real *Bk, int ldb,
                          int accumulate, real *C, int ldc)
{
    if (M <= FASTRNN_SMALL_ROWS)
        FN(gemm_small)(M, N, K, A, lda, Bk, ldb, accumulate, C, ldc);
    else
        FN(gemm)(0, 0, M, N, K, (real)1, A, lda, Bk, ldb, accumulate ? (real)1 : (real)0, C, ldc);
}

/* out (cols, rows) = in (rows, cols)^T, row-major; in 16 x 16 tiles so that
 * both sides stay in cache lines */
static void FN(transpose)(real *restrict out, const real *restrict in, int rows, int cols)
{
    enum { TILE = 16 };
    for (int r0 = 0; r0 < rows; r0 += TILE)
        for (int c0 = 0; c0 < cols; c0 += TILE) {
            int r1 = r0 + TILE < rows ? r0 + TILE : rows, c1 = c0 + TILE < cols ? c0 + TILE : cols;
            for (int c = c0; c < c1; c++)
                for (int r = r0; r < r1; r++)
                    out[(size_t)c * rows + r] = in[(size_t)r * cols + c];
        }
}

/* rows (n, w) = broadcast bias (w), the C of a GEMM with beta = 1 that adds
 * the bias; nothing when bias is NULL (the GEMM then runs with beta = 0) */
static void FN(fill_bias)(real *rows, int n, int w, int ld, const real *bias)
{
    if (!bias)
        return;
    for (int i = 0; i < n; i++) {
        real *r = rows + (size_t)i * ld;
        for (int j = 0; j < w; j++)
            r[j] = bias[j];
    }
}

/* out (w) += column sums of rows (n, w) with row stride ld */
static void FN(add_column_sums)(real *out, const real *rows, size_t n, int w, int ld)
{
    for (size_t i = 0; i < n; i++) {
        const real *r = rows + i * ld;
        for (int j = 0; j < w; j++)
            out[j] += r[j];
    }
}
