/* gemm.h -- row-major GEMM over the installed BLAS, or the naive sibling.
 *
 * C (M, N) = alpha * op(A) op(B) + beta * C, every matrix row-major with its
 * own leading dimension; op(A) is (M, K), op(B) is (K, N). beta == 0 means C
 * is not read (as in BLAS). */
/* Macro contract: real (float or double), FN(name) (this instantiation's
 * name), REAL_BYTES (sizeof(real) for the preprocessor), LANE_INT (the integer
 * of real's size), BLAS_GEMM and BLAS_GEMM_TYPE (the installed ?gemm and its
 * type); optionally FASTRNN_VBYTES and FASTRNN_MR (the vector width and
 * register block of the target). */
#if !defined(real) || !defined(FN) || !defined(REAL_BYTES) || !defined(LANE_INT) \
    || !defined(BLAS_GEMM) || !defined(BLAS_GEMM_TYPE)
#error "gemm.h needs real, FN, REAL_BYTES, LANE_INT, BLAS_GEMM and BLAS_GEMM_TYPE: include it through kernels_f32.c or kernels_f64.c"
#endif


#include <string.h>

/* The vector width and register block of the instruction set being compiled
 * (the AVX2 and AVX-512 variants define them first); SSE2 by default. */
#ifndef FASTRNN_VBYTES
#define FASTRNN_VBYTES 16
#define FASTRNN_MR 4
#endif

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

/* One BLAS call (or the naive GEMM) in the calling thread */
static void FN(gemm_serial)(int trans_a, int trans_b, int M, int N, int K, real alpha,
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
    fastrnn_blas_serial();   /* BLAS's own threads off while the call runs */
    /* Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T:
     * hand BLAS the operands swapped, with M and N swapped. */
    char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
    blas(&tb, &ta, &N, &M, &K, &alpha, Bm, &ldb, A, &lda, &beta, C, &ldc);
}

/* A GEMM split into slices of C's rows, or of its columns when it has fewer
 * rows than columns: each slice is one serial BLAS call in its own thread */
typedef struct {
    int trans_a, trans_b, M, N, K;
    real alpha, beta;
    const real *A, *Bm;
    real *C;
    int lda, ldb, ldc, by_cols;
} FN(gemm_job);

static void FN(gemm_slice)(void *arg, int s0, int s1)
{
    const FN(gemm_job) *j = arg;
    if (s1 <= s0)
        return;
    if (j->by_cols) {
        /* C[:, s0:s1] = op(A) op(B)[:, s0:s1] */
        const real *b = j->trans_b ? j->Bm + (size_t)s0 * j->ldb : j->Bm + s0;
        FN(gemm_serial)(j->trans_a, j->trans_b, j->M, s1 - s0, j->K, j->alpha, j->A, j->lda,
                        b, j->ldb, j->beta, j->C + s0, j->ldc);
    } else {
        /* C[s0:s1] = op(A)[s0:s1] op(B) */
        const real *a = j->trans_a ? j->A + s0 : j->A + (size_t)s0 * j->lda;
        FN(gemm_serial)(j->trans_a, j->trans_b, s1 - s0, j->N, j->K, j->alpha, a, j->lda,
                        j->Bm, j->ldb, j->beta, j->C + (size_t)s0 * j->ldc, j->ldc);
    }
}

/* C = alpha op(A) op(B) + beta C on up to `threads` threads. BLAS runs
 * serially inside fastrnn's calls (dispatch.c): a threaded BLAS leaves its
 * workers spin-waiting after each product, which on a machine whose other
 * cores are busy made training up to 20x slower than one thread. The slices
 * run on fastrnn's pool (common.c), whose workers sleep between calls.
 * Products below FASTRNN_SPLIT_GEMM_MACS multiply-adds stay in one thread. */
static void FN(gemm)(int threads, int trans_a, int trans_b, int M, int N, int K, real alpha,
                     const real *A, int lda, const real *Bm, int ldb,
                     real beta, real *C, int ldc)
{
    if (threads < 2 || (double)M * N * K < FASTRNN_SPLIT_GEMM_MACS) {
        FN(gemm_serial)(trans_a, trans_b, M, N, K, alpha, A, lda, Bm, ldb, beta, C, ldc);
        return;
    }
    FN(gemm_job) job = {trans_a, trans_b, M, N, K, alpha, beta, A, Bm, C, lda, ldb, ldc, M < N};
    int extent = job.by_cols ? N : M;
    if (threads > extent / FASTRNN_MIN_SPLIT)
        threads = extent / FASTRNN_MIN_SPLIT;
    if (threads < 2)
        FN(gemm_slice)(&job, 0, extent);
    else
        fastrnn_run_slices(threads, extent, FN(gemm_slice), &job);
}

/* out (cols, rows) = in (rows, cols)^T, row-major (in with row stride ld); in
 * 16 x 16 tiles so that both sides stay in cache lines */
static void FN(transpose)(real *restrict out, const real *restrict in, int rows, int cols, int ld)
{
    enum { TILE = 16 };
    for (int r0 = 0; r0 < rows; r0 += TILE)
        for (int c0 = 0; c0 < cols; c0 += TILE) {
            int r1 = r0 + TILE < rows ? r0 + TILE : rows, c1 = c0 + TILE < cols ? c0 + TILE : cols;
            for (int c = c0; c < c1; c++)
                for (int r = r0; r < r1; r++)
                    out[(size_t)c * rows + r] = in[(size_t)r * ld + c];
        }
}

/* ------------------------------------------------- per-step products
 *
 * Inside the time loop every product is C[:M] (+)= A[:M] @ W with the same
 * right-hand operand W (K, N) at every step, and M (the active batch rows) is
 * small. BLAS would repack W at every call (and wake its threads for
 * microseconds of work), so the call prepares W once (an "operand") in the
 * layout of the kernel that suits the batch:
 *   NT      W used in place as given, (N, K) rows: dot products along k.
 *           Few rows and few steps: cheaper than any copy of W.
 *   SMALL   W (K, N) row-major (in place when given so, else transposed
 *           once): gemm_small, which streams W's rows with many independent
 *           sums. Best for one or two rows.
 *   PACKED  W in column tiles of NR = 2 vectors, each tile (K, NR)
 *           contiguous: gemm_packed, a register-blocked MR x NR kernel that
 *           loads each W vector once per MR rows.
 *   BLAS    large batches, where BLAS's own packing pays for itself.
 * The thresholds are in internal.h (chosen by measurement). */

/* The vector of the instruction set this file is compiled for (GCC vector
 * extensions: portable, and FMA-contracted with -ffp-contract=fast). */
typedef real vreal __attribute__((vector_size(FASTRNN_VBYTES)));
#define VL ((int)(FASTRNN_VBYTES / sizeof(real)))  /* lanes */
#define NR (2 * VL)                                 /* columns of a packed tile */
#define MR FASTRNN_MR                               /* rows of the register block */

static inline vreal FN(vload)(const real *p) { vreal v; memcpy(&v, p, sizeof v); return v; }
static inline void FN(vstore)(real *p, vreal v) { memcpy(p, &v, sizeof v); }

/* c[:nv*VL] (+)= a (K) @ Bk[:, :nv*VL]: nv vector sums held in registers over
 * all of k (one load of Bk per FMA, none of c), in ks interleaved partial sums
 * so that at least 8 independent FMAs hide the FMA latency. nv and ks are
 * constants after inlining. */
static inline __attribute__((always_inline)) void
FN(row_block)(int nv, int ks, int K, const real *a, const real *Bk, int ldb, int accumulate,
              real *c)
{
    vreal acc[2][8];
    for (int s = 0; s < ks; s++)
        for (int v = 0; v < nv; v++)
            acc[s][v] = (vreal){0};
    const real *b = Bk;   /* row k of Bk */
    int k = 0;
    for (; k + ks <= K; k += ks)
        for (int s = 0; s < ks; s++, b += ldb) {
            real ak = a[k + s];
            for (int v = 0; v < nv; v++)
                acc[s][v] += ak * FN(vload)(b + v * VL);
        }
    for (; k < K; k++, b += ldb)
        for (int v = 0; v < nv; v++)
            acc[0][v] += a[k] * FN(vload)(b + v * VL);
    for (int v = 0; v < nv; v++) {
        if (ks > 1)
            acc[0][v] += acc[1][v];
        if (accumulate)
            acc[0][v] += FN(vload)(c + v * VL);
        FN(vstore)(c + v * VL, acc[0][v]);
    }
}

/* C (M, N) (+)= A (M, K) @ Bk (K, N), row-major, for one or two rows: each
 * row in column blocks of 8 vectors (then 4, 2, 1) kept in registers across
 * k, the last columns (fewer than a vector) by scalar sums. */
static void FN(gemm_small)(int M, int N, int K, const real *A, int lda,
                           const real *Bk, int ldb, int accumulate, real *C, int ldc)
{
    for (int i = 0; i < M; i++) {
        real *c = C + (size_t)i * ldc;
        const real *a = A + (size_t)i * lda;
        int j = 0;
        for (; j + 8 * VL <= N; j += 8 * VL)
            FN(row_block)(8, 1, K, a, Bk + j, ldb, accumulate, c + j);
        if (j + 4 * VL <= N) {
            FN(row_block)(4, 2, K, a, Bk + j, ldb, accumulate, c + j);
            j += 4 * VL;
        }
        if (j + 2 * VL <= N) {
            FN(row_block)(2, 2, K, a, Bk + j, ldb, accumulate, c + j);
            j += 2 * VL;
        }
        if (j + VL <= N) {
            FN(row_block)(1, 2, K, a, Bk + j, ldb, accumulate, c + j);
            j += VL;
        }
        for (; j < N; j++) {
            real s = accumulate ? c[j] : (real)0;
            for (int k = 0; k < K; k++)
                s += a[k] * Bk[(size_t)k * ldb + j];
            c[j] = s;
        }
    }
}

/* The vector whose lane j is the sum of the lanes of s[j], for VL vectors s.
 * Summing lane by lane cost more than the dot products themselves; instead
 * log2(VL) rounds of shuffles add lanes pairwise across pairs of vectors
 * (after round one, the low half of a vector holds s[2i]'s pair sums and the
 * high half s[2i+1]'s; after the last, lane j holds all of s[j]'s). */
#if defined(__GNUC__) && !defined(__clang__)
#if FASTRNN_VBYTES / REAL_BYTES == 16
#define EVEN_LANES {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}
#define ODD_LANES {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31}
#elif FASTRNN_VBYTES / REAL_BYTES == 8
#define EVEN_LANES {0, 2, 4, 6, 8, 10, 12, 14}
#define ODD_LANES {1, 3, 5, 7, 9, 11, 13, 15}
#elif FASTRNN_VBYTES / REAL_BYTES == 4
#define EVEN_LANES {0, 2, 4, 6}
#define ODD_LANES {1, 3, 5, 7}
#else
#define EVEN_LANES {0, 2}
#define ODD_LANES {1, 3}
#endif
typedef LANE_INT vlane __attribute__((vector_size(FASTRNN_VBYTES)));

static inline __attribute__((always_inline)) vreal FN(lane_sums)(vreal s[VL])
{
    const vlane even = EVEN_LANES, odd = ODD_LANES;
    for (int n = VL; n > 1; n /= 2)
        for (int i = 0; i < n / 2; i++)
            s[i] = __builtin_shuffle(s[2 * i], s[2 * i + 1], even)
                   + __builtin_shuffle(s[2 * i], s[2 * i + 1], odd);
    return s[0];
}
#else   /* other compilers: lane by lane */
static inline vreal FN(lane_sums)(vreal s[VL])
{
    vreal r = {0};
    for (int j = 0; j < VL; j++)
        for (int i = 0; i < VL; i++)
            r[j] += s[j][i];
    return r;
}
#endif

/* C (M, N) (+)= A (M, K) @ W^T with W (N, K) row-major: VL dot products at a
 * time, vectorized along k, their sums gathered into one vector of C. */
static void FN(gemm_nt_small)(int M, int N, int K, const real *A, int lda,
                              const real *W, int ldw, int accumulate, real *C, int ldc)
{
    int kv = K / VL * VL;
    for (int m = 0; m < M; m++) {
        const real *a = A + (size_t)m * lda;
        real *c = C + (size_t)m * ldc;
        int n = 0;
        for (; n + VL <= N; n += VL) {
            /* one pointer per row, k the shared index: independent
             * addresses (stepping one pointer from row to row made a chain) */
            const real *w[VL];
            vreal s[VL];
            for (int j = 0; j < VL; j++) {
                w[j] = W + (size_t)(n + j) * ldw;
                s[j] = (vreal){0};
            }
            for (int k = 0; k < kv; k += VL) {
                vreal av = FN(vload)(a + k);
                for (int j = 0; j < VL; j++)
                    s[j] += av * FN(vload)(w[j] + k);
            }
            vreal r = FN(lane_sums)(s);
            for (int k = kv; k < K; k++)
                for (int j = 0; j < VL; j++)
                    r[j] += a[k] * w[j][k];
            if (accumulate)
                r += FN(vload)(c + n);
            FN(vstore)(c + n, r);
        }
        for (; n < N; n++) {
            const real *w0 = W + (size_t)n * ldw;
            real r = 0;
            for (int k = 0; k < K; k++)
                r += a[k] * w0[k];
            c[n] = accumulate ? c[n] + r : r;
        }
    }
}

/* Wp = the tiles of W (K, N), element (k, n) at src[k*sk + n*sn]: tile t holds
 * columns [t*NR, t*NR + NR) as a contiguous (K, NR) block; the last tile's
 * missing columns are zeros. */
static void FN(pack_tiles)(real *restrict Wp, const real *restrict src, int K, int N,
                           size_t sk, size_t sn)
{
    for (int n0 = 0; n0 < N; n0 += NR) {
        int w = N - n0 < NR ? N - n0 : NR;
        real *tile = Wp + (size_t)n0 * K;
        if (sk == 1) {   /* W given as (N, K) rows: read along them */
            for (int j = 0; j < w; j++)
                for (int k = 0; k < K; k++)
                    tile[(size_t)k * NR + j] = src[k + (size_t)(n0 + j) * sn];
        } else {
            for (int k = 0; k < K; k++)
                for (int j = 0; j < w; j++)
                    tile[(size_t)k * NR + j] = src[(size_t)k * sk + (size_t)(n0 + j) * sn];
        }
        for (int k = 0; k < K; k++)
            for (int j = w; j < NR; j++)
                tile[(size_t)k * NR + j] = (real)0;
    }
}

/* C[:mr, :w] (+)= A[:mr] @ tile (K, NR), w <= NR valid columns. mr <= MR and
 * ks are constants after inlining, so acc stays in registers. ks > 1 keeps ks
 * interleaved partial sums over k: with one or two rows a single sum per
 * register would be a chain of K dependent FMAs. */
static inline __attribute__((always_inline)) void
FN(micro)(int mr, int ks, int K, const real *A, int lda, const real *tile, int accumulate,
          real *C, int ldc, int w)
{
    vreal acc[4][MR][2];
    for (int s = 0; s < ks; s++)
        for (int r = 0; r < mr; r++)
            acc[s][r][0] = acc[s][r][1] = (vreal){0};
    int k = 0;
    for (; k + ks <= K; k += ks)
        for (int s = 0; s < ks; s++) {
            vreal b0 = FN(vload)(tile + (size_t)(k + s) * NR);
            vreal b1 = FN(vload)(tile + (size_t)(k + s) * NR + VL);
            for (int r = 0; r < mr; r++) {
                real a = A[(size_t)r * lda + k + s];
                acc[s][r][0] += a * b0;
                acc[s][r][1] += a * b1;
            }
        }
    for (; k < K; k++) {
        vreal b0 = FN(vload)(tile + (size_t)k * NR), b1 = FN(vload)(tile + (size_t)k * NR + VL);
        for (int r = 0; r < mr; r++) {
            real a = A[(size_t)r * lda + k];
            acc[0][r][0] += a * b0;
            acc[0][r][1] += a * b1;
        }
    }
    for (int r = 0; r < mr; r++) {
        for (int s = 1; s < ks; s++) {
            acc[0][r][0] += acc[s][r][0];
            acc[0][r][1] += acc[s][r][1];
        }
        real *c = C + (size_t)r * ldc;
        if (w == NR) {   /* a whole tile: vector stores */
            if (accumulate) {
                acc[0][r][0] += FN(vload)(c);
                acc[0][r][1] += FN(vload)(c + VL);
            }
            FN(vstore)(c, acc[0][r][0]);
            FN(vstore)(c + VL, acc[0][r][1]);
        } else {         /* the last, partial tile */
            real out[NR];
            FN(vstore)(out, acc[0][r][0]);
            FN(vstore)(out + VL, acc[0][r][1]);
            for (int j = 0; j < w; j++)
                c[j] = accumulate ? c[j] + out[j] : out[j];
        }
    }
}

/* C[:M, :w] (+)= A[:M] @ tile (K, NR): register blocks of MR rows, then the
 * remaining rows, each count its own constant. Where a whole block would
 * leave one or two rows (which run at a fraction of the block's speed), a
 * block of 4 goes first: 8 rows as 4 + 4 rather than 6 + 2. */
static void FN(packed_tile)(int M, int K, const real *A, int lda, const real *tile,
                            int accumulate, real *C, int ldc, int w)
{
    int m = 0;
    while (m + MR <= M) {
        int left = M - m - MR, block = MR > 4 && (left == 1 || left == 2) ? 4 : MR;
        if (block == 4)
            FN(micro)(4, 1, K, A + (size_t)m * lda, lda, tile, accumulate,
                      C + (size_t)m * ldc, ldc, w);
        else
            FN(micro)(MR, 1, K, A + (size_t)m * lda, lda, tile, accumulate,
                      C + (size_t)m * ldc, ldc, w);
        m += block;
    }
    const real *a = A + (size_t)m * lda;
    real *c = C + (size_t)m * ldc;
    switch (M - m) {
    case 1: FN(micro)(1, 4, K, a, lda, tile, accumulate, c, ldc, w); break;
    case 2: FN(micro)(2, 2, K, a, lda, tile, accumulate, c, ldc, w); break;
    case 3: FN(micro)(3, 2, K, a, lda, tile, accumulate, c, ldc, w); break;
#if FASTRNN_MR > 4
    case 4: FN(micro)(4, 1, K, a, lda, tile, accumulate, c, ldc, w); break;
    case 5: FN(micro)(5, 1, K, a, lda, tile, accumulate, c, ldc, w); break;
#endif
#if FASTRNN_MR > 6
    case 6: FN(micro)(6, 1, K, a, lda, tile, accumulate, c, ldc, w); break;
    case 7: FN(micro)(7, 1, K, a, lda, tile, accumulate, c, ldc, w); break;
#endif
    default: break;
    }
}

/* Rows of a tile per pass: KC x NR elements (32 KB in float32, 32 KB in
 * float64 on AVX-512) stay in L1 while every row block of A uses them */
#define KC 256

/* C (M, N) (+)= A (M, K) @ W, W packed by pack_tiles: tile by tile, in
 * passes of at most KC rows of k */
static void FN(gemm_packed)(int M, int N, int K, const real *A, int lda, const real *Wp,
                            int accumulate, real *C, int ldc)
{
    for (int k0 = 0; k0 < K; k0 += KC) {
        int kc = K - k0 < KC ? K - k0 : KC;
        for (int n0 = 0; n0 < N; n0 += NR)
            FN(packed_tile)(M, kc, A + k0, lda, Wp + (size_t)n0 * K + (size_t)k0 * NR,
                            accumulate || k0 > 0, C + n0, ldc, N - n0 < NR ? N - n0 : NR);
    }
}

enum { OP_NT, OP_SMALL, OP_PACKED, OP_BLAS };

/* A right-hand operand W (K, N) of the per-step products, prepared once */
typedef struct {
    int kind, K, N;
    const real *p;  /* NT, BLAS with trans: (N, K) rows; SMALL, BLAS: (K, N); PACKED: tiles */
    int ld;         /* row stride of p (not PACKED) */
    int trans;      /* BLAS: p holds W^T */
    int threads;    /* BLAS: threads of each product (FN(gemm)) */
} FN(operand);

/* The operand W (K, N) for products of at most `rows` rows over `steps`
 * steps. W is given as (N, K) rows when transposed, else (K, N) rows, with
 * row stride ld; buf holds operand_size(K, N) elements when
 * operand_buffered(rows), and may be NULL otherwise; threads: of each BLAS
 * product (FN(gemm)), when BLAS is the kernel chosen. */
static FN(operand) FN(operand_prepare)(const real *W, int ld, int transposed, int K, int N,
                                       int rows, int steps, real *buf, int threads)
{
    FN(operand) op = {OP_BLAS, K, N, W, ld, transposed, threads};
    if (rows <= FASTRNN_SMALL_ROWS) {
        if (transposed && steps < FASTRNN_TRANSPOSE_STEPS) {
            op.kind = OP_NT;
        } else {
            op.kind = OP_SMALL;
            if (transposed) {
                FN(transpose)(buf, W, N, K, ld);
                op.p = buf;
                op.ld = N;
            }
        }
    } else if (rows <= FASTRNN_PACKED_ROWS) {
        op.kind = OP_PACKED;
        FN(pack_tiles)(buf, W, K, N, transposed ? 1 : (size_t)ld, transposed ? (size_t)ld : 1);
        op.p = buf;
    }
    return op;
}

/* C[:M, n0:n1] (+)= A[:M] @ W[:, n0:n1] in the calling thread; for PACKED,
 * n0 is a multiple of FASTRNN_TILE_PAD (a whole tile) */
static void FN(operand_mul_cols)(const FN(operand) *op, int M, const real *A, int lda,
                                 int accumulate, real *C, int ldc, int n0, int n1)
{
    int N = n1 - n0, K = op->K;
    if (M <= 0 || N <= 0)
        return;
    switch (op->kind) {
    case OP_NT:
        FN(gemm_nt_small)(M, N, K, A, lda, op->p + (size_t)n0 * op->ld, op->ld, accumulate,
                          C + n0, ldc);
        break;
    case OP_SMALL:
        FN(gemm_small)(M, N, K, A, lda, op->p + n0, op->ld, accumulate, C + n0, ldc);
        break;
    case OP_PACKED:
        FN(gemm_packed)(M, N, K, A, lda, op->p + (size_t)n0 * K, accumulate, C + n0, ldc);
        break;
    default:
        FN(gemm_serial)(0, op->trans, M, N, K, (real)1, A, lda,
                        op->trans ? op->p + (size_t)n0 * op->ld : op->p + n0, op->ld,
                        accumulate ? (real)1 : (real)0, C + n0, ldc);
    }
}

/* C[:M] (+)= A[:M] @ W, a BLAS product split over op->threads */
static void FN(operand_mul)(const FN(operand) *op, int M, const real *A, int lda, int accumulate,
                            real *C, int ldc)
{
    if (M > 0 && op->kind == OP_BLAS)
        FN(gemm)(op->threads, 0, op->trans, M, op->N, op->K, (real)1, A, lda, op->p, op->ld,
                 accumulate ? (real)1 : (real)0, C, ldc);
    else
        FN(operand_mul_cols)(op, M, A, lda, accumulate, C, ldc, 0, op->N);
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

/* out[j] += sum over rows i of a[i, j] * b[i, j], a and b (n, w) contiguous */
static void FN(add_column_dots)(real *restrict out, const real *restrict a, const real *restrict b,
                                size_t n, int w)
{
    for (size_t i = 0; i < n; i++)
        for (int j = 0; j < w; j++)
            out[j] += a[i * w + j] * b[i * w + j];
}

#if REAL_BYTES == 4
/* The FMA peak probe (fastrnn_fma_probe_f32): iterations x 12 independent
 * chains of vector FMAs on registers, no memory traffic: enough chains to
 * fill two FMA pipes of four cycles' latency. x = x * m + a converges to 1,
 * so no value turns denormal or infinite. Returns the float operations done;
 * *sink gets a sum of every chain, so that none is optimized away. */
long FN(fastrnn_fma_probe)(long iterations, float *sink)
{
    enum { CHAINS = 12 };
    const vreal zero = {0};
    vreal acc[CHAINS], m = zero + (real)0.999, a = zero + (real)0.001;
    for (int i = 0; i < CHAINS; i++)
        acc[i] = zero + (real)(i + 2);   /* not the fixed point 1 */
    for (long n = 0; n < iterations; n++)
        for (int i = 0; i < CHAINS; i++)
            acc[i] = acc[i] * m + a;
    real total = 0;
    for (int i = 0; i < CHAINS; i++)
        for (int j = 0; j < VL; j++)
            total += acc[i][j];
    *sink = total;
    return iterations * CHAINS * VL * 2;
}
#endif
