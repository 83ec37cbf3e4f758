/* layer_impl.h -- the time loop of one layer-direction, forward and
 * backward (BPTT), written once over `real`.
 *
 * Forward: P = X W_ih^T + b_ih for many steps in one GEMM (all T when
 * training, where P becomes the gates cache; a bounded chunk of steps in
 * inference), then per step (forward_step) one GEMM R = h W_hh^T + b_hh over
 * the active slots and one fused elementwise pass per row.
 * Backward: per step, reversed (backward_step), the fused pass gives the
 * pre-activation gradients dP_t and dh_{t-1} = dP_t W_hh + direct terms;
 * after the loop (weight_gradients) three large GEMMs give dX, dW_ih and dW_hh.
 *
 * Macro contract (kernels_f32.c / kernels_f64.c define them):
 *   real      float or double
 *   FN(name)  the name of this instantiation's function (precision and ISA suffix)
 *   RT(name)  the API type of this precision (fastrnn_params_f32, ...)
 * and cells_impl.h and gemm.h are included first. */
#if !defined(real) || !defined(FN) || !defined(RT)
#error "layer_impl.h needs real, FN and RT: include it through kernels_f32.c or kernels_f64.c"
#endif

/* ======================================================= Buffer layout
 *
 * Every buffer a call uses is carved from the caller's cache and work arrays
 * by the three layout functions below, and the sizes the API reports are the
 * same functions run on a NULL base: one place says where everything lives. */

/* n elements at offset *used of base, or NULL when base is NULL (sizing only) */
static real *FN(take)(real *base, size_t *used, size_t n)
{
    real *p = base ? base + *used : NULL;
    *used += n;
    return p;
}

/* The training cache, rows in memory order (t*B + b, or b*T + t batch-first) */
typedef struct {
    real *gates;  /* (T*B, G*H) post-activation gates (pre-activation, general cells) */
    real *hs;     /* (T*B, R) the state entering each step */
    real *extra;  /* (T*B, H) LSTM c_{t-1}, GRU the recurrent n-term (reset after)
                   * or r*h (reset before) */
    real *ms;     /* (T*B, H) m_t = o * tanh(c_t) before W_hr, with a projection, else NULL */
    /* layer normalization, else NULL: */
    real *ln_ih, *ln_hh;  /* (T*B, G*H) the normalized products x^ of x W_ih^T, h W_hh^T */
    real *ln_c;           /* (T*B, H) LSTM: x^ of c_t */
    real *rstd;           /* (T*B, 3) the inverse standard deviations of the three */
} FN(cache_tensors);

/* Assigns K's tensors from base; returns the cache's size in elements */
static size_t FN(cache_layout)(FN(cache_tensors) *K, real *base, const fastrnn_layer *L)
{
    size_t rows = (size_t)L->T * L->B, used = 0;
    size_t GH = (size_t)fastrnn_num_gates(L->cell) * L->H;
    K->gates = FN(take)(base, &used, rows * GH);
    K->hs = FN(take)(base, &used, rows * state_width(L));
    K->extra = has_extra_cache(L->cell) ? FN(take)(base, &used, rows * L->H) : NULL;
    K->ms = L->P ? FN(take)(base, &used, rows * L->H) : NULL;
    K->ln_ih = L->layer_norm ? FN(take)(base, &used, rows * GH) : NULL;
    K->ln_hh = L->layer_norm ? FN(take)(base, &used, rows * GH) : NULL;
    K->ln_c = L->layer_norm && L->cell == FASTRNN_LSTM ? FN(take)(base, &used, rows * L->H) : NULL;
    K->rstd = L->layer_norm ? FN(take)(base, &used, rows * 3) : NULL;
    return used;
}

/* Where P (the input projection) lives: row (t, b) is (t - t0)*pst + b*psb,
 * or with by_slot (threaded inference) (t - t0)*pst + i for slot i. */
typedef struct {
    real *p;     /* (rows, G*H) */
    int t0;      /* first step held */
    size_t pst;  /* row stride of t */
    size_t psb;  /* row stride of b */
    int by_slot;
} FN(proj);

/* The buffers of one forward call. Slot-ordered (row i = batch row order[i]). */
typedef struct {
    /* the workspace (forward_layout) */
    real *h;      /* (B, R) state */
    real *h2;     /* (B, R) the unit-split loop's other state buffer, else NULL */
    real *rec;    /* (B, G*H) recurrent pre-activations h W_hh^T + b_hh; NULL for
                   * IndRNN, whose recurrence is elementwise */
    real *bias;   /* IndRNN: (H) b_ih + b_hh, folded into the projection, else NULL */
    real *c;      /* (B, H) LSTM cell state, else NULL */
    real *rh;     /* (B, H) r * h, GRU reset before, else NULL */
    real *m;      /* (B, H) o * tanh(c) before the projection W_hr, else NULL */
    real *zh, *zc;   /* (B, R), (B, H) zoneout: h and LSTM c entering the step, else NULL */
    real *xd;     /* (T*B, I) input dropout: x masked for one gate block, else NULL */
    real *hd;     /* (B, R) recurrent dropout: h masked for one gate block, else NULL */
    real *w_hh_room, *w_hn_room, *w_hr_room;  /* the per-step operands' copies, when
                                               * operand_buffered, else NULL */
    real *w_ih_room;  /* W_ih packed, when projection_packed, else NULL */
    real *p;      /* inference: P of a chunk of steps (chunk*B, G*H) (threaded: one
                   * block per slice, project_slots); NULL in training */
    real *xg;     /* threaded inference: a chunk's x rows gathered by slice and
                   * slot (chunk*B, I), else NULL */
    /* the training cache, NULL members in inference */
    real *hs, *extra, *ms;   /* as cache_layout */
    real *ln_hh, *ln_c, *rstd;
    /* the operands (gemm.h), prepared once per call */
    FN(operand) w_hh;  /* W_hh^T (R, G*H); GRU reset before: its r, z blocks (R, 2H) */
    FN(operand) w_hn;  /* GRU reset before: W_hn^T (H, H) */
    FN(operand) w_hr;  /* projection: W_hr^T (H, P) */
    FN(operand) w_ih;  /* W_ih^T (I, G*H), of the input projection */
} FN(fwd_buffers);

/* Assigns S's workspace members from base for the path L takes; returns the
 * workspace's size in elements */
static size_t FN(forward_layout)(FN(fwd_buffers) *S, real *base, const fastrnn_layer *L,
                                 int training)
{
    size_t B = L->B, H = L->H, GH = (size_t)fastrnn_num_gates(L->cell) * H, used = 0;
    int R = state_width(L), gru_rb = L->cell == FASTRNN_GRU_RESET_BEFORE;
    int buffered = operand_buffered(L, training);
    S->h = FN(take)(base, &used, B * R);
    S->h2 = unit_split_applies(L) ? FN(take)(base, &used, B * R) : NULL;
    int elementwise = elementwise_recurrence(L->cell);
    S->rec = elementwise ? NULL : FN(take)(base, &used, B * GH);
    S->bias = elementwise ? FN(take)(base, &used, H) : NULL;
    S->c = L->cell == FASTRNN_LSTM ? FN(take)(base, &used, B * H) : NULL;
    S->rh = gru_rb ? FN(take)(base, &used, B * H) : NULL;
    S->m = L->P ? FN(take)(base, &used, B * H) : NULL;
    S->zh = has_zoneout(L) ? FN(take)(base, &used, B * R) : NULL;
    S->zc = has_zoneout(L) && L->cell == FASTRNN_LSTM ? FN(take)(base, &used, B * H) : NULL;
    S->xd = L->drop_x && training ? FN(take)(base, &used, (size_t)L->T * B * L->I) : NULL;
    S->hd = L->drop_h ? FN(take)(base, &used, B * R) : NULL;
    S->w_hh_room = buffered ? FN(take)(base, &used, operand_size(R, gru_rb ? 2 * L->H : (int)GH))
                            : NULL;
    S->w_hn_room = buffered && gru_rb ? FN(take)(base, &used, operand_size(L->H, L->H)) : NULL;
    S->w_hr_room = buffered && L->P ? FN(take)(base, &used, operand_size(L->H, L->P)) : NULL;
    S->w_ih_room = projection_packed(L, training)
                   ? FN(take)(base, &used, operand_size(L->I, (int)GH)) : NULL;
    S->p = training ? NULL : FN(take)(base, &used, (size_t)infer_chunk_steps(L) * B * GH);
    S->xg = projection_by_slice(L, training)
            ? FN(take)(base, &used, (size_t)infer_chunk_steps(L) * B * L->I) : NULL;
    return used;
}

/* The buffers of one backward call: slot-ordered rows (B, .), or memory-order
 * rows (T*B, .) for what the weight GEMMs read after the loop */
typedef struct {
    real *dh;       /* (B, R) gradient of the state */
    real *drec;     /* (B, G*H) the step's pre-activation gradients, recurrent side */
    real *drec2;    /* (B, G*H) the unit-split loop's other drec buffer, else NULL */
    real *dP;       /* (T*B, G*H) every step's pre-activation gradients, input side */
    real *dc;       /* (B, H) LSTM: gradient of the cell state, else NULL */
    real *dPn_rec;  /* (T*B, H) GRU reset after: gradient of the recurrent n-term, else NULL */
    real *dPh;      /* (T*B, G*H) layer norm: gradients of h W_hh^T (before the
                     * normalization; dP holds the input side's after it), else NULL */
    real *drh;      /* (B, H) GRU reset before: dn W_hn, else NULL */
    real *dm;       /* (B, H) projection: gradient of m, else NULL */
    real *dhs;      /* (T*B, P) projection: dh of every step, else NULL */
    real *zdh, *zdc;   /* (B, R), (B, H) zoneout: the direct gradients of h_{t-1} and
                        * LSTM c_{t-1}, else NULL */
    real *dhd;      /* (B, R) recurrent dropout: one gate block's share of dh, else NULL */
    real *ad;       /* (T*B, max(I, R)) dropout: x, hs or dx of one gate block, else NULL */
    const real *w_hh_raw;   /* W_hh (G*H, R) itself: recurrent dropout's products */
    real *w_hh_room, *w_hn_room, *w_hr_room;  /* operand copies, when operand_buffered */
    /* the per-step operands in their natural (K, N) layout: dh = dP W_hh */
    FN(operand) w_hh;  /* W_hh (G*H, R); GRU reset before: its r, z blocks (2H, H) */
    FN(operand) w_hn;  /* GRU reset before: W_hn (H, H) */
    FN(operand) w_hr;  /* projection: W_hr (P, H) */
    const real *u;     /* IndRNN: u = W_hh (H), its elementwise operand, else NULL */
} FN(bwd_buffers);

/* Assigns S's workspace members from base; returns the size in elements */
static size_t FN(backward_layout)(FN(bwd_buffers) *S, real *base, const fastrnn_layer *L)
{
    size_t rows = (size_t)L->T * L->B, B = L->B, H = L->H, used = 0;
    size_t GH = (size_t)fastrnn_num_gates(L->cell) * H;
    int R = state_width(L), gru_rb = L->cell == FASTRNN_GRU_RESET_BEFORE;
    int buffered = operand_buffered(L, 1);   /* training: one thread, all B rows */
    S->dh = FN(take)(base, &used, B * R);
    S->drec = FN(take)(base, &used, B * GH);
    S->drec2 = unit_split_applies(L) ? FN(take)(base, &used, B * GH) : NULL;
    S->dP = FN(take)(base, &used, rows * GH);
    S->dc = L->cell == FASTRNN_LSTM ? FN(take)(base, &used, B * H) : NULL;
    S->dPn_rec = L->cell == FASTRNN_GRU && !L->layer_norm ? FN(take)(base, &used, rows * H) : NULL;
    S->dPh = L->layer_norm ? FN(take)(base, &used, rows * GH) : NULL;
    S->drh = gru_rb ? FN(take)(base, &used, B * H) : NULL;
    S->dm = L->P ? FN(take)(base, &used, B * H) : NULL;
    S->dhs = L->P ? FN(take)(base, &used, rows * L->P) : NULL;
    S->zdh = has_zoneout(L) ? FN(take)(base, &used, B * R) : NULL;
    S->zdc = has_zoneout(L) && L->cell == FASTRNN_LSTM ? FN(take)(base, &used, B * H) : NULL;
    S->dhd = L->drop_h ? FN(take)(base, &used, B * R) : NULL;
    S->ad = L->drop_x || L->drop_h
            ? FN(take)(base, &used, rows * (size_t)(L->I > R ? L->I : R)) : NULL;
    S->w_hh_room = !buffered ? NULL
        : FN(take)(base, &used, gru_rb ? operand_size(2 * L->H, L->H)
                                       : operand_size((int)GH, R));
    S->w_hn_room = buffered && gru_rb ? FN(take)(base, &used, operand_size(L->H, L->H)) : NULL;
    S->w_hr_room = buffered && L->P ? FN(take)(base, &used, operand_size(L->P, L->H)) : NULL;
    return used;
}

/* The sizes the API reports (dispatch.c), in elements: the same for every
 * precision and instruction set, since the layouts count elements. */
size_t FN(fastrnn_cache_size)(const fastrnn_layer *L)
{
    FN(cache_tensors) K;
    return FN(cache_layout)(&K, NULL, L);
}

/* The largest workspace of any path with these sizes: the path depends on the
 * thread setting, the layout and the options (the general cells run on one
 * thread), and a size taken before the call must fit whatever path the call
 * takes (another thread may change the setting in between). */
size_t FN(fastrnn_forward_work_size)(const fastrnn_layer *L, int training)
{
    FN(fwd_buffers) S;
    size_t most = 0;
    for (int threads = 1; threads <= FASTRNN_MAX_THREADS; threads++) {
        for (int batch_first = 0; batch_first <= 1; batch_first++) {
            fastrnn_layer path = *L;
            path.threads = threads;
            path.batch_first = batch_first;
            path.general = 0;   /* the general cells take the one-thread path */
            size_t n = FN(forward_layout)(&S, NULL, &path, training);
            if (n > most)
                most = n;
        }
    }
    return most;
}

size_t FN(fastrnn_backward_work_size)(const fastrnn_layer *L)
{
    FN(bwd_buffers) S;
    return FN(backward_layout)(&S, NULL, L);
}

/* ============================================================ Dropout
 *
 * Keras' variational dropout, training only: gate block g reads its input
 * through keep_x[g] and h_{t-1} through keep_h[g], one mask per sequence
 * (batch row) for every step. Each block's product runs on a masked copy, so
 * the products cost what the plain ones do, in G pieces. */

/* dst (n) = src * keep * scale: one row through its batch row's mask */
static void FN(mask_row)(real *restrict dst, const real *restrict src,
                         const unsigned char *restrict keep, real scale, int n)
{
    for (int j = 0; j < n; j++)
        dst[j] = keep[j] ? src[j] * scale : (real)0;
}

/* dst (T*B, n) = src rows (memory order) * keep[b] * scale, keep (B, n) the
 * masks of the batch rows */
static void FN(mask_mem_rows)(real *dst, const real *src, const unsigned char *keep, int n,
                              double scale, const fastrnn_layer *L)
{
    size_t rows = (size_t)L->T * L->B;
    for (size_t r = 0; r < rows; r++) {
        size_t b = L->batch_first ? r / (size_t)L->T : r % (size_t)L->B;
        FN(mask_row)(dst + r * n, src + r * n, keep + b * n, (real)scale, n);
    }
}

/* P = X W_ih^T + b_ih (all steps, memory order) with input dropout: gate block
 * g's columns from (X * keep_x[g]) @ W_ih[g].T. xd (T*B, I) scratch */
static void FN(dropped_projection)(real *P, real *xd, const real *x, const RT(fastrnn_params) *W,
                                   const fastrnn_layer *L)
{
    int G = fastrnn_num_gates(L->cell), H = L->H, I = L->I, GH = G * H, rows = L->T * L->B;
    FN(fill_bias)(P, rows, GH, GH, W->b_ih);
    for (int g = 0; g < G; g++) {
        FN(mask_mem_rows)(xd, x, L->drop_x + (size_t)g * L->B * I, I, L->scale_x, L);
        /* P[:, g] (+)= XD @ W_ih[g].T */
        FN(gemm)(gemm_threads(L), 0, 1, rows, H, I, (real)1, xd, I, W->w_ih + (size_t)g * H * I,
                 I, W->b_ih ? (real)1 : (real)0, P + g * H, GH);
    }
}

/* Gate blocks of the recurrent product h W_hh^T: all, but for the GRU with
 * the reset gate before it, whose n block multiplies r * h (a second product) */
static inline int product_blocks(const fastrnn_layer *L)
{
    return L->cell == FASTRNN_GRU_RESET_BEFORE ? 2 : fastrnn_num_gates(L->cell);
}

/* hd[s0:e] = (h * keep_h[g] * scale)[s0:e]: h through gate block g's masks */
static void FN(mask_slots)(real *hd, const real *h, int g, int s0, int e, const fastrnn_layer *L)
{
    int R = state_width(L);
    const unsigned char *keep = L->drop_h + (size_t)g * L->B * R;
    for (int i = s0; i < e; i++)
        FN(mask_row)(hd + (size_t)i * R, h + (size_t)i * R,
                     keep + (size_t)slot_row(L->order, i) * R, (real)L->scale_h, R);
}

/* rec[s0:e, g] (+)= (h * keep_h[g])[s0:e] @ W_hh[g].T, every block of the
 * product (the recurrent product with recurrent dropout); hd (B, R) scratch,
 * slot rows */
static void FN(dropped_recurrent)(real *rec, real *hd, const real *h, const real *w_hh,
                                  int accumulate, int s0, int e, const fastrnn_layer *L)
{
    int G = fastrnn_num_gates(L->cell), H = L->H, R = state_width(L), GH = G * H;
    for (int g = 0; g < product_blocks(L); g++) {
        FN(mask_slots)(hd, h, g, s0, e, L);
        /* rec[s0:e, g] (+)= HD[s0:e] @ W_hh[g].T */
        FN(gemm)(1, 0, 1, e - s0, H, R, (real)1, hd + (size_t)s0 * R, R,
                 w_hh + (size_t)g * H * R, R, accumulate ? (real)1 : (real)0,
                 rec + (size_t)s0 * GH + g * H, GH);
    }
}

/* ============================================================ Forward */

/* P's gates of step t, batch row b held by slot i */
static inline real *FN(proj_gates)(const FN(proj) *P, int t, int b, int i, int GH)
{
    if (P->by_slot)
        return P->p + ((size_t)(t - P->t0) * P->pst + i) * GH;
    return P->p + (size_t)(t - P->t0) * P->pst * GH + (size_t)b * P->psb * GH;
}

/* W_ih^T (I, G*H), the operand of the input projection: dot products for one
 * or two rows, the packed kernel for small GEMMs (W_ih packed into room),
 * else BLAS on W_ih itself */
static FN(operand) FN(projection_operand)(const real *w_ih, const fastrnn_layer *L,
                                          int training, real *room)
{
    int I = L->I, GH = fastrnn_num_gates(L->cell) * L->H;
    FN(operand) op = {OP_BLAS, I, GH, w_ih, I, 1, gemm_threads(L)};
    if (projection_rows(L, training) <= FASTRNN_SMALL_ROWS) {
        op.kind = OP_NT;
    } else if (projection_packed(L, training)) {
        op.kind = OP_PACKED;
        FN(pack_tiles)(room, w_ih, I, GH, 1, (size_t)I);
        op.p = room;
    }
    return op;
}

/* C[:M, units [u0, u1) of every gate block] = A[:M] @ W's matching columns
 * + bias; in one product when the range holds every unit */
static void FN(mul_units)(const FN(operand) *W, int M, const real *A, int lda, const real *bias,
                          real *C, int ldc, int u0, int u1, const fastrnn_layer *L)
{
    int G = fastrnn_num_gates(L->cell), H = L->H;
    if (u0 == 0 && u1 == H) {
        FN(fill_bias)(C, M, G * H, ldc, bias);
        FN(operand_mul)(W, M, A, lda, bias != NULL, C, ldc);
        return;
    }
    for (int g = 0; g < G; g++) {
        int n0 = g * H + u0;
        FN(fill_bias)(C + n0, M, u1 - u0, ldc, bias ? bias + n0 : NULL);
        FN(operand_mul_cols)(W, M, A, lda, bias != NULL, C, ldc, n0, g * H + u1);
    }
}

/* Layer normalization of n rows (row stride GH) in place: x^ * ln_ih + b_ih;
 * xn (n, GH) and rstd (n, 3) receive x^ and rstd when not NULL */
static void FN(normalize_projection)(real *p, int n, real *xn, real *rstd,
                                     const RT(fastrnn_params) *W, int GH)
{
    for (size_t r = 0; r < (size_t)n; r++) {
        real s = FN(layer_norm_row)(p + r * GH, xn ? xn + r * GH : NULL, W->ln_ih, W->b_ih, GH);
        if (rstd)
            rstd[r * 3] = s;
    }
}

/* P rows of steps [t0, t1) = X W_ih^T + b_ih (inference chunk, time-major),
 * the columns of units [u0, u1); with layer normalization, LN(X W_ih^T) * ln_ih
 * + b_ih (then every unit) */
static void FN(project_chunk)(FN(proj) *P, const real *x, const FN(operand) *w_ih,
                              const RT(fastrnn_params) *W, int t0, int t1, int u0, int u1,
                              const fastrnn_layer *L)
{
    int B = L->B, I = L->I, GH = fastrnn_num_gates(L->cell) * L->H;
    const real *b_ih = L->layer_norm ? NULL : W->b_ih;   /* LN's shift, after */
    P->t0 = t0;
    if (!L->batch_first || B == 1) {
        /* P[t0:t1] = X[t0:t1] @ W_ih.T  (contiguous rows) */
        FN(mul_units)(w_ih, (t1 - t0) * B, x + (size_t)t0 * B * I, I, b_ih, P->p, GH, u0, u1, L);
    } else {
        /* batch-first: P[t] = X[:, t] @ W_ih.T, rows b strided by T */
        for (int t = t0; t < t1; t++)
            FN(mul_units)(w_ih, B, x + (size_t)t * I, L->T * I, b_ih,
                          P->p + (size_t)(t - t0) * B * GH, GH, u0, u1, L);
    }
    if (L->layer_norm)
        FN(normalize_projection)(P->p, (t1 - t0) * B, NULL, NULL, W, GH);
}

/* The active slots of [s0, s1) when the first n of all slots are active: [s0, end) */
static inline int slice_end(int n, int s0, int s1)
{
    return n < s0 ? s0 : (n > s1 ? s1 : n);
}

/* One step at time t for slots [s0, s1), of which those below n are active:
 * recurrent GEMM + fused pass. Slices touch disjoint rows (threads). */
static void FN(forward_step)(real *y, FN(fwd_buffers) *S, const FN(proj) *P,
                             const RT(fastrnn_params) *W, int t, int n, int s0, int s1,
                             const fastrnn_layer *L)
{
    int H = L->H, R = state_width(L), GH = fastrnn_num_gates(L->cell) * H;
    int cell = L->cell, training = S->hs != NULL, general = L->general;
    int rec_w = cell == FASTRNN_GRU_RESET_BEFORE ? 2 * H : GH;  /* r, z only */
    int e = slice_end(n, s0, s1);
    const int *order = L->order;
    const real *b_hh = W->b_hh;

    if (!elementwise_recurrence(cell)) {
        /* rec[s0:e] = h[s0:e] @ W_hh.T + b_hh  (GRU reset before: r and z blocks);
         * with layer normalization LN(h @ W_hh.T) * ln_hh + b_hh */
        const real *bias = L->layer_norm ? NULL : b_hh;
        FN(fill_bias)(S->rec + (size_t)s0 * GH, e - s0, rec_w, GH, bias);
        if (S->hd) {
            FN(dropped_recurrent)(S->rec, S->hd, S->h, W->w_hh, bias != NULL, s0, e, L);
            if (cell == FASTRNN_GRU_RESET_BEFORE)   /* the n block's r * (h * keep_h[2]) */
                FN(mask_slots)(S->hd, S->h, 2, s0, e, L);
        } else
            FN(operand_mul)(&S->w_hh, e - s0, S->h + (size_t)s0 * R, R, bias != NULL,
                            S->rec + (size_t)s0 * GH, GH);
        for (int i = s0; i < e && L->layer_norm; i++) {
            size_t row = mem_row(L, t, slot_row(order, i));
            real rstd = FN(layer_norm_row)(S->rec + (size_t)i * GH,
                                           training ? S->ln_hh + row * GH : NULL,
                                           W->ln_hh, b_hh, GH);
            if (training)
                S->rstd[row * 3 + 1] = rstd;
        }
    }

    for (int i = s0; i < e; i++) {
        int b = slot_row(order, i);
        size_t row = mem_row(L, t, b);
        real *gates = FN(proj_gates)(P, t, b, i, GH);
        real *hi = S->h + (size_t)i * R, *ri = S->rec ? S->rec + (size_t)i * GH : NULL;
        real *ci = S->c ? S->c + (size_t)i * H : NULL;
        if (S->zh) {   /* zoneout blends the step's result with its input state */
            memcpy(S->zh + (size_t)i * R, hi, (size_t)R * sizeof(real));
            if (S->zc)
                memcpy(S->zc + (size_t)i * H, ci, (size_t)H * sizeof(real));
        }
        if (training) {
            for (int j = 0; j < R; j++)
                S->hs[row * R + j] = hi[j];
            if (cell == FASTRNN_LSTM)
                for (int j = 0; j < H; j++)
                    S->extra[row * H + j] = ci[j];
        }
        switch (cell) {
        case FASTRNN_RNN_TANH:
        case FASTRNN_RNN_RELU:
            if (general)
                FN(rnn_general_forward_row)(gates, hi, ri, H, L);
            else
                FN(rnn_forward_row)(gates, hi, ri, H, cell == FASTRNN_RNN_RELU);
            break;
        case FASTRNN_INDRNN_TANH:
        case FASTRNN_INDRNN_RELU:
            FN(indrnn_forward_row)(gates, hi, y + row * L->ldy, W->w_hh, H,
                                   cell == FASTRNN_INDRNN_RELU);
            break;
        case FASTRNN_LSTM: {
            /* with a projection the row writes m = o * h(c), projected below */
            real *out = S->m ? S->m + (size_t)i * H : hi;
            if (general) {
                FN(lstm_general_forward_row)(gates, out, ci, ri, W->peep, H, L);
            } else if (L->layer_norm) {
                real rstd = FN(lstm_ln_forward_row)(gates, out, ci, ri, W->ln_c, W->ln_cb,
                                                    training ? S->ln_c + row * H : NULL, H);
                if (training)
                    S->rstd[row * 3 + 2] = rstd;
            } else {
                FN(lstm_forward_row)(gates, out, ci, ri, H, H);
            }
            if (S->m && training)
                for (int j = 0; j < H; j++)
                    S->ms[row * H + j] = out[j];
            break;
        }
        case FASTRNN_GRU:
            if (training)
                for (int j = 0; j < H; j++)
                    S->extra[row * H + j] = ri[2 * H + j];
            if (general)
                FN(gru_general_forward_row)(gates, hi, ri, H, L);
            else
                FN(gru_forward_row)(gates, hi, ri, H, H);
            break;
        case FASTRNN_GRU_RESET_BEFORE: {
            /* rh = r * h_{t-1}, with recurrent dropout r * (h_{t-1} * keep_h[2]) */
            const real *h_n = S->hd ? S->hd + (size_t)i * H : hi;
            if (general)
                FN(gru_rb_general_forward_gates_row)(gates, S->rh + (size_t)i * H, h_n, ri, H, L);
            else
                FN(gru_rb_forward_gates_row)(gates, S->rh + (size_t)i * H, h_n, ri, H);
            if (training)
                for (int j = 0; j < H; j++)
                    S->extra[row * H + j] = S->rh[(size_t)i * H + j];
            break;
        }
        }
    }

    if (cell == FASTRNN_GRU_RESET_BEFORE) {
        /* rec[s0:e, 2H:] = (r*h)[s0:e] @ W_hn.T + b_hn */
        real *rec_ns = S->rec + (size_t)s0 * GH + 2 * H;
        FN(fill_bias)(rec_ns, e - s0, H, GH, b_hh ? b_hh + 2 * H : NULL);
        FN(operand_mul)(&S->w_hn, e - s0, S->rh + (size_t)s0 * H, H, b_hh != NULL, rec_ns, GH);
        for (int i = s0; i < e; i++) {
            int b = slot_row(order, i);
            real *gates = FN(proj_gates)(P, t, b, i, GH);
            real *hi = S->h + (size_t)i * H, *rec_n = S->rec + (size_t)i * GH + 2 * H;
            if (general)
                FN(gru_rb_general_forward_output_row)(gates, hi, rec_n, H, L);
            else
                FN(gru_rb_forward_output_row)(gates, hi, rec_n, H);
        }
    }
    if (S->m) {
        /* h[s0:e] = m[s0:e] @ W_hr.T  (the LSTM projection) */
        FN(operand_mul)(&S->w_hr, e - s0, S->m + (size_t)s0 * H, H, 0, S->h + (size_t)s0 * R, R);
    }
    if (S->zh) {
        /* zoneout: h = keep ? h_{t-1} : h_new (c likewise), or the expectation */
        for (int i = s0; i < e; i++) {
            size_t row = mem_row(L, t, slot_row(order, i));
            FN(zoneout_row)(S->h + (size_t)i * R, S->zh + (size_t)i * R,
                            L->zone_h ? L->zone_h + row * R : NULL, L->p_h, R);
            if (S->zc)
                FN(zoneout_row)(S->c + (size_t)i * H, S->zc + (size_t)i * H,
                                L->zone_c ? L->zone_c + row * H : NULL, L->p_c, H);
        }
    }

    /* y[t, b] = h_t for active rows, zeros for the rest */
    for (int i = s0; i < s1; i++) {
        int b = slot_row(order, i);
        size_t row = mem_row(L, t, b);
        real *yrow = y + row * L->ldy;
        if (i < e) {   /* (as copies: the loop with the choice inside stayed scalar) */
            if (!elementwise_recurrence(cell) || S->zh)   /* IndRNN's row wrote it,
                                                            * before zoneout */
                memcpy(yrow, S->h + (size_t)i * R, (size_t)R * sizeof(real));
        } else
            memset(yrow, 0, (size_t)R * sizeof(real));
        if (training && i >= e) {
            /* inactive rows take part in the weight GEMMs with zero gradients:
             * keep them finite */
            for (int j = 0; j < R; j++)
                S->hs[row * R + j] = (real)0;
            for (int j = 0; j < H; j++) {
                if (S->extra)
                    S->extra[row * H + j] = (real)0;
                if (S->ms)
                    S->ms[row * H + j] = (real)0;
            }
        }
    }
}

/* One step of the unit-split loop for units [u0, u1) of every slot (internal.h
 * unit_threads): h_{t-1} is read from h (every unit, every slot) and h_t's
 * units written to h_next, so no member overwrites what another still reads;
 * the caller waits at the barrier after each step. Plain RNN, LSTM and GRU
 * (reset after) without projection. */
static void FN(unit_step)(real *y, FN(fwd_buffers) *S, const FN(proj) *P,
                          const RT(fastrnn_params) *W, int t, int n, const real *h,
                          real *h_next, int u0, int u1, const fastrnn_layer *L)
{
    int B = L->B, H = L->H, GH = fastrnn_num_gates(L->cell) * H, w = u1 - u0;
    int cell = L->cell, training = S->hs != NULL;
    size_t units = (size_t)w * sizeof(real);

    /* rec[:n, units of each gate] = h[:n] @ W_hh.T + b_hh */
    FN(mul_units)(&S->w_hh, n, h, H, W->b_hh, S->rec, GH, u0, u1, L);
    for (int i = 0; i < B; i++) {   /* inactive slots keep their state */
        memcpy(h_next + (size_t)i * H + u0, h + (size_t)i * H + u0, units);
    }
    for (int i = 0; i < n; i++) {
        int b = slot_row(L->order, i);
        size_t row = mem_row(L, t, b);
        real *gates = FN(proj_gates)(P, t, b, i, GH) + u0, *ri = S->rec + (size_t)i * GH + u0;
        real *hi = h_next + (size_t)i * H + u0, *ci = S->c ? S->c + (size_t)i * H + u0 : NULL;
        if (training) {
            memcpy(S->hs + row * H + u0, h + (size_t)i * H + u0, units);
            if (cell == FASTRNN_LSTM)
                memcpy(S->extra + row * H + u0, ci, units);
            if (cell == FASTRNN_GRU)
                memcpy(S->extra + row * H + u0, ri + 2 * H, units);
        }
        if (S->zc)   /* zoneout blends c_t with c_{t-1}; h_{t-1} stays in h */
            memcpy(S->zc + (size_t)i * H + u0, ci, units);
        if (cell == FASTRNN_LSTM)
            FN(lstm_forward_row)(gates, hi, ci, ri, w, H);
        else if (cell == FASTRNN_GRU)
            FN(gru_forward_row)(gates, hi, ri, w, H);
        else
            FN(rnn_forward_row)(gates, hi, ri, w, cell == FASTRNN_RNN_RELU);
        if (S->zh) {
            FN(zoneout_row)(hi, h + (size_t)i * H + u0,
                            L->zone_h ? L->zone_h + row * H + u0 : NULL, L->p_h, w);
            if (S->zc)
                FN(zoneout_row)(ci, S->zc + (size_t)i * H + u0,
                                L->zone_c ? L->zone_c + row * H + u0 : NULL, L->p_c, w);
        }
    }
    /* y[t, b] = h_t for active rows, zeros for the rest (and zero caches: the
     * weight GEMMs read inactive rows with zero gradients) */
    for (int i = 0; i < B; i++) {
        size_t row = mem_row(L, t, slot_row(L->order, i));
        if (i < n) {
            memcpy(y + row * L->ldy + u0, h_next + (size_t)i * H + u0, units);
            continue;
        }
        memset(y + row * L->ldy + u0, 0, units);
        if (training) {
            memset(S->hs + row * H + u0, 0, units);
            if (S->extra)
                memset(S->extra + row * H + u0, 0, units);
        }
    }
}

/* What the time loop of one forward call reads and writes (shared by its
 * threads, each of which owns a slice of the slots, or with team its units) */
typedef struct {
    real *y;
    FN(fwd_buffers) *S;
    FN(proj) P;               /* the cache, or the inference chunk (one thread) */
    int chunk;                /* steps per projection chunk */
    int by_slice;             /* threaded inference: each slice projects its own rows */
    int members;              /* the unit-split loop's members (units split n ways), or 1 */
    fastrnn_barrier *team;    /* their barrier; NULL: the caller does every member's share */
    const real *x;
    const RT(fastrnn_params) *W;
    const fastrnn_layer *L;
} FN(fwd_loop);

/* P rows of slots [s0, s1) for steps [t0, t1) = their x rows @ W_ih^T + b_ih,
 * one GEMM (threaded inference): the rows are gathered step-major into the
 * slice's block of xg, and land in the slice's block of p, row
 * (t - t0) * (s1 - s0) + (i - s0). */
static void FN(project_slots)(const FN(fwd_loop) *C, int t0, int t1, int s0, int s1)
{
    const fastrnn_layer *L = C->L;
    const FN(fwd_buffers) *S = C->S;
    int I = L->I, GH = fastrnn_num_gates(L->cell) * L->H, rows = (t1 - t0) * (s1 - s0);
    real *a = S->xg + (size_t)s0 * C->chunk * I, *dst = S->p + (size_t)s0 * C->chunk * GH;
    for (int t = t0; t < t1; t++)
        for (int i = s0; i < s1; i++)
            memcpy(a + ((size_t)(t - t0) * (s1 - s0) + (i - s0)) * I,
                   C->x + mem_row(L, t, slot_row(L->order, i)) * I, (size_t)I * sizeof(real));
    const real *b_ih = L->layer_norm ? NULL : C->W->b_ih;   /* LN's shift, after */
    FN(fill_bias)(dst, rows, GH, GH, b_ih);
    FN(operand_mul)(&S->w_ih, rows, a, I, b_ih != NULL, dst, GH);
    if (L->layer_norm)
        FN(normalize_projection)(dst, rows, NULL, NULL, C->W, GH);
}

/* The whole time loop for slots [s0, s1); with C->members > 1, for member s0
 * of the team (its units of every slot), or for every member in turn when
 * there is no team or it disbands (fastrnn_barrier_wait) */
static void FN(forward_loop)(void *arg, int s0, int s1)
{
    FN(fwd_loop) *C = arg;
    const fastrnn_layer *L = C->L;
    int T = L->T, B = L->B, H = L->H;
    int chunk = C->chunk, nchunks = (T + chunk - 1) / chunk;
    if (C->by_slice) {
        /* threaded inference: each slice projects its own rows, a chunk of steps
         * at a time; P row (t - t0) * (s1 - s0) + i of slot i is that of
         * project_slots, from a base s0 rows before the slice's block */
        int GH = fastrnn_num_gates(L->cell) * H;
        FN(proj) P = {C->S->p + (size_t)s0 * (chunk - 1) * GH, 0, (size_t)(s1 - s0), 0, 1};
        for (int k = 0; k < nchunks; k++) {
            int t0 = (L->reverse ? nchunks - 1 - k : k) * chunk;
            int t1 = t0 + chunk < T ? t0 + chunk : T;
            FN(project_slots)(C, t0, t1, s0, s1);
            P.t0 = t0;
            for (int s = 0; s < t1 - t0; s++) {
                int t = L->reverse ? t1 - 1 - s : t0 + s;
                int n = active_slots(L->lengths, L->order, B, t);
                FN(forward_step)(C->y, C->S, &P, C->W, t, n, s0, s1, L);
            }
        }
        return;
    }
    FN(proj) P = C->P;
    if (C->members < 2) {
        for (int k = 0; k < nchunks; k++) {
            int t0 = (L->reverse ? nchunks - 1 - k : k) * chunk;
            int t1 = t0 + chunk < T ? t0 + chunk : T;
            if (!C->S->hs)   /* inference: the chunk's projection */
                FN(project_chunk)(&P, C->x, &C->S->w_ih, C->W, t0, t1, 0, H, L);
            for (int s = 0; s < t1 - t0; s++) {
                int t = L->reverse ? t1 - 1 - s : t0 + s;
                int n = active_slots(L->lengths, L->order, B, t);
                FN(forward_step)(C->y, C->S, &P, C->W, t, n, s0, s1, L);
            }
        }
        return;
    }
    /* the unit-split loop: member `me` does units [u0, u1) of member j for j
     * in [j0, j1): its own, or every member's when solo */
    int me = s0, members = C->members, solo = C->team == NULL, u0, u1;
    real *h = C->S->h, *h_next = C->S->h2;
#define MEMBERS_DO(stmt)                                                 \
    for (int j = solo ? 0 : me; j < (solo ? members : me + 1); j++) {   \
        unit_range(H, j, members, &u0, &u1);                             \
        stmt;                                                            \
    }
    for (int k = 0; k < nchunks; k++) {
        int t0 = (L->reverse ? nchunks - 1 - k : k) * chunk;
        int t1 = t0 + chunk < T ? t0 + chunk : T;
        if (!C->S->hs)   /* inference: the members' columns of the chunk's projection */
            MEMBERS_DO(FN(project_chunk)(&P, C->x, &C->S->w_ih, C->W, t0, t1, u0, u1, L))
        for (int s = 0; s < t1 - t0; s++) {
            int t = L->reverse ? t1 - 1 - s : t0 + s;
            int n = active_slots(L->lengths, L->order, B, t);
            MEMBERS_DO(FN(unit_step)(C->y, C->S, &P, C->W, t, n, h, h_next, u0, u1, L))
            if (!solo && fastrnn_barrier_wait(C->team)) {
                if (me != 0)
                    return;   /* the caller does the rest */
                solo = 1;
            }
            real *swap = h;
            h = h_next;
            h_next = swap;
        }
    }
    if (h != C->S->h)   /* the final state where the caller reads it */
        MEMBERS_DO(for (int i = 0; i < B; i++)
                       memcpy(C->S->h + (size_t)i * H + u0, h + (size_t)i * H + u0,
                              (size_t)(u1 - u0) * sizeof(real)))
#undef MEMBERS_DO
}

/* The parameters a layer needs and may have, and nothing else */
static int FN(params_ok)(const RT(fastrnn_params) *W, const fastrnn_layer *L)
{
    int ln_c = L->layer_norm && L->cell == FASTRNN_LSTM;
    return W->w_ih && W->w_hh && (W->b_ih != NULL) == (W->b_hh != NULL)
           && (L->P ? W->w_hr != NULL : W->w_hr == NULL)
           && (!W->peep || (L->cell == FASTRNN_LSTM && L->general))
           && (W->ln_ih != NULL) == (L->layer_norm != 0)
           && (W->ln_hh != NULL) == (L->layer_norm != 0)
           && (W->ln_c != NULL) == ln_c && (W->ln_cb != NULL) == ln_c;
}

RT(fastrnn_forward_fn) FN(fastrnn_forward);   /* the API's type (fastrnn.h) */

int FN(fastrnn_forward)(real *y, RT(fastrnn_state) *state_n, real *cache, real *work,
                        const real *x, const RT(fastrnn_state) *state0,
                        const RT(fastrnn_params) *W, const fastrnn_layer *L)
{
    int G = fastrnn_num_gates(L->cell);
    if (!layer_ok(L, G) || !FN(params_ok)(W, L))
        return FASTRNN_ERR_ARGUMENT;
    int T = L->T, B = L->B, H = L->H, R = state_width(L), GH = G * H;
    int lstm = L->cell == FASTRNN_LSTM, training = cache != NULL;
    int gru_rb = L->cell == FASTRNN_GRU_RESET_BEFORE, rec_w = gru_rb ? 2 * H : GH;
    if ((L->drop_x || L->drop_h) && !training)
        return FASTRNN_ERR_ARGUMENT;   /* dropout is for training */
    const int *order = L->order;

    FN(fwd_buffers) S;
    FN(forward_layout)(&S, work, L, training);
    FN(cache_tensors) K = {0};
    if (training)
        FN(cache_layout)(&K, cache, L);
    S.hs = K.hs;
    S.extra = K.extra;
    S.ms = K.ms;
    S.ln_hh = K.ln_hh;
    S.ln_c = K.ln_c;
    S.rstd = K.rstd;

    /* the operands, prepared for the rows of each per-step product (IndRNN
     * has none: its rows read u = W_hh itself) */
    int srows = step_rows(L, training), gt = gemm_threads(L);
    if (!elementwise_recurrence(L->cell))
        S.w_hh = FN(operand_prepare)(W->w_hh, R, 1, R, rec_w, srows, T, S.w_hh_room, gt);
    RT(fastrnn_params) folded;
    if (S.bias && W->b_ih) {
        /* IndRNN: both biases sit outside any product, so P = X W_ih^T + (b_ih + b_hh) */
        for (int j = 0; j < H; j++)
            S.bias[j] = W->b_ih[j] + W->b_hh[j];
        folded = *W;
        folded.b_ih = S.bias;
        folded.b_hh = NULL;
        W = &folded;
    }
    if (gru_rb)
        S.w_hn = FN(operand_prepare)(W->w_hh + (size_t)2 * H * H, H, 1, H, H, srows, T,
                                     S.w_hn_room, gt);
    if (L->P)
        S.w_hr = FN(operand_prepare)(W->w_hr, H, 1, H, L->P, srows, T, S.w_hr_room, gt);
    S.w_ih = FN(projection_operand)(W->w_ih, L, training, S.w_ih_room);

    for (int i = 0; i < B; i++) {
        int b = slot_row(order, i);
        for (int j = 0; j < R; j++)
            S.h[(size_t)i * R + j] = state0->h[(size_t)b * R + j];
        if (lstm)
            for (int j = 0; j < H; j++)
                S.c[(size_t)i * H + j] = state0->c[(size_t)b * H + j];
    }

    FN(fwd_loop) C = {y, &S, {0}, T, projection_by_slice(L, training), 1, NULL, x, W, L};
    if (training) {
        /* P = X @ W_ih.T + b_ih, all steps in memory order: the gates cache */
        size_t rows = (size_t)T * B;
        C.P.p = K.gates;
        C.P.pst = L->batch_first ? 1 : (size_t)B;
        C.P.psb = L->batch_first ? (size_t)T : 1;
        RT(fastrnn_params) unbiased = *W;   /* with layer norm, b_ih is LN's shift, after */
        if (L->layer_norm)
            unbiased.b_ih = NULL;
        if (S.xd) {
            FN(dropped_projection)(C.P.p, S.xd, x, &unbiased, L);
        } else {
            FN(fill_bias)(C.P.p, (int)rows, GH, GH, unbiased.b_ih);
            FN(operand_mul)(&S.w_ih, (int)rows, x, L->I, unbiased.b_ih != NULL, C.P.p, GH);
        }
        if (L->layer_norm)
            FN(normalize_projection)(C.P.p, (int)rows, K.ln_ih, K.rstd, W, GH);
    } else {
        C.P.p = S.p;
        C.P.pst = (size_t)B;
        C.P.psb = 1;
        C.chunk = infer_chunk_steps(L);
    }
    int threads = loop_threads(L, training);
    fastrnn_barrier team;
    C.members = unit_threads(L, training);
    if (threads > 1) {
        fastrnn_run_slices(threads, B, FN(forward_loop), &C);
    } else if (C.members < 2) {
        FN(forward_loop)(&C, 0, B);
    } else {
        /* a team, or (a recent stall, or the pool serves another call) every
         * member's share in turn in this thread: the same results either way */
        C.team = fastrnn_backing_off() ? NULL : &team;
        if (!C.team || !fastrnn_run_team(C.members, FN(forward_loop), &C, &team)) {
            C.team = NULL;
            FN(forward_loop)(&C, 0, C.members);
        }
    }

    for (int i = 0; i < B; i++) {
        int b = slot_row(order, i);
        for (int j = 0; j < R; j++)
            state_n->h[(size_t)b * R + j] = S.h[(size_t)i * R + j];
        if (lstm)
            for (int j = 0; j < H; j++)
                state_n->c[(size_t)b * H + j] = S.c[(size_t)i * H + j];
    }
    return FASTRNN_OK;
}

/* =========================================================== Backward */

/* Backward of dropped_recurrent for the n active slots:
 * dh[:n] (+)= sum_g (dP_rec[:n, g] @ W_hh[g]) * keep_h[g] * scale; with a
 * projection dh is overwritten, as in backward_step */
static void FN(dropped_recurrent_backward)(FN(bwd_buffers) *S, int n, const fastrnn_layer *L)
{
    int G = fastrnn_num_gates(L->cell), H = L->H, R = state_width(L), GH = G * H;
    if (S->dm)
        memset(S->dh, 0, (size_t)n * R * sizeof(real));
    for (int g = 0; g < product_blocks(L); g++) {
        const unsigned char *keep = L->drop_h + (size_t)g * L->B * R;
        /* dhd[:n] = dP_rec[:n, g] @ W_hh[g] */
        FN(gemm)(1, 0, 0, n, R, H, (real)1, S->drec + g * H, GH, S->w_hh_raw + (size_t)g * H * R,
                 R, (real)0, S->dhd, R);
        for (int i = 0; i < n; i++) {
            const unsigned char *k = keep + (size_t)slot_row(L->order, i) * R;
            real *dhi = S->dh + (size_t)i * R, *di = S->dhd + (size_t)i * R;
            for (int j = 0; j < R; j++)
                dhi[j] += k[j] ? di[j] * (real)L->scale_h : (real)0;
        }
    }
}

/* Layer normalization's part of a step's backward, for the n active slots:
 * drec holds the gradients of LN(h W_hh^T) * ln_hh + b_hh. The LSTM's input
 * side (the same) goes to dP, b_hh's and ln_hh's gradients accumulate, and
 * drec becomes the gradient of h W_hh^T itself, kept in dPh for dW_hh. */
static void FN(ln_recurrent_backward)(FN(bwd_buffers) *S, const FN(cache_tensors) *K,
                                      const RT(fastrnn_params) *W,
                                      const RT(fastrnn_params) *dW, int t, int n,
                                      const fastrnn_layer *L)
{
    int GH = fastrnn_num_gates(L->cell) * L->H;
    size_t bytes = (size_t)GH * sizeof(real);
    for (int i = 0; i < n; i++) {
        size_t row = mem_row(L, t, slot_row(L->order, i));
        real *dri = S->drec + (size_t)i * GH;
        if (L->cell == FASTRNN_LSTM)
            memcpy(S->dP + row * GH, dri, bytes);
        if (dW->b_hh)
            for (int j = 0; j < GH; j++)
                dW->b_hh[j] += dri[j];
        FN(layer_norm_backward_row)(dri, K->ln_hh + row * GH, W->ln_hh, K->rstd[row * 3 + 1],
                                    dW->ln_hh, GH);
        memcpy(S->dPh + row * GH, dri, bytes);
    }
}

/* One step at time t, the mirror of forward_step, for the n active slots:
 * dh gets y's gradient, the fused pass gives the pre-activation gradients,
 * and dh_{t-1} = dP_t W_hh + the direct terms. Inactive rows pass their
 * gradient through untouched and send nothing to the parameters or x. */
static void FN(backward_step)(FN(bwd_buffers) *S, const real *dy, const FN(cache_tensors) *K,
                              const RT(fastrnn_params) *W, const RT(fastrnn_params) *dW,
                              int t, int n, const fastrnn_layer *L)
{
    int B = L->B, H = L->H, R = state_width(L), GH = fastrnn_num_gates(L->cell) * H;
    int cell = L->cell, general = L->general;
    const int *order = L->order;
    real *dh = S->dh, *drec = S->drec, *dP = S->dP;

    for (int i = 0; i < B; i++) {
        size_t row = mem_row(L, t, slot_row(order, i));
        real *dhi = dh + (size_t)i * R;
        if (i < n && dy)
            for (int j = 0; j < R; j++)
                dhi[j] += dy[row * L->ldy + j];
        if (i < n && S->zdh) {
            /* backprop through zoneout: h_{t-1}'s direct share, set aside for
             * after the recurrent product; the cell sees the new value's share */
            FN(zoneout_backward_row)(dhi, S->zdh + (size_t)i * R,
                                     L->zone_h ? L->zone_h + row * R : NULL, L->p_h, R);
            if (S->zdc)
                FN(zoneout_backward_row)(S->dc + (size_t)i * H, S->zdc + (size_t)i * H,
                                         L->zone_c ? L->zone_c + row * H : NULL, L->p_c, H);
        }
        if (i >= n) {
            for (int j = 0; j < GH; j++)
                dP[row * GH + j] = (real)0;
            if (S->dPn_rec)
                for (int j = 0; j < H; j++)
                    S->dPn_rec[row * H + j] = (real)0;
            if (S->dPh)
                for (int j = 0; j < GH; j++)
                    S->dPh[row * GH + j] = (real)0;
        }
        if (S->dhs)
            for (int j = 0; j < R; j++)
                S->dhs[row * R + j] = i < n ? dhi[j] : (real)0;
    }
    if (S->dm) {
        /* backprop through h = m @ W_hr.T:  dm[:n] = dh[:n] @ W_hr */
        FN(operand_mul)(&S->w_hr, n, dh, R, 0, S->dm, H);
    }

    for (int i = 0; i < n; i++) {
        size_t row = mem_row(L, t, slot_row(order, i));
        real *dhi = dh + (size_t)i * R, *dri = drec + (size_t)i * GH;
        const real *gates = K->gates + row * GH, *h_prev = K->hs + row * R;
        switch (cell) {
        case FASTRNN_RNN_TANH:
        case FASTRNN_RNN_RELU:
            if (general)
                FN(rnn_general_backward_row)(dri, dhi, gates, H, L);
            else
                FN(rnn_backward_row)(dri, dhi, gates, H, cell == FASTRNN_RNN_RELU);
            break;
        case FASTRNN_INDRNN_TANH:
        case FASTRNN_INDRNN_RELU:
            FN(indrnn_backward_row)(dri, dhi, gates, S->u, H, cell == FASTRNN_INDRNN_RELU);
            break;
        case FASTRNN_LSTM: {
            real *dout = S->dm ? S->dm + (size_t)i * H : dhi, *dci = S->dc + (size_t)i * H;
            if (general)
                FN(lstm_general_backward_row)(dri, dout, dci, gates, K->extra + row * H, W->peep,
                                              dW->peep, H, L);
            else if (L->layer_norm)
                FN(lstm_ln_backward_row)(dri, dout, dci, gates, K->extra + row * H,
                                         K->ln_c + row * H, K->rstd[row * 3 + 2], W->ln_c,
                                         W->ln_cb, dW->ln_c, dW->ln_cb, H);
            else
                FN(lstm_backward_row)(dri, dout, dci, gates, K->extra + row * H, H, H);
            break;
        }
        case FASTRNN_GRU:
            if (general)
                FN(gru_general_backward_row)(dP + row * GH, dri, dhi, gates, h_prev,
                                             K->extra + row * H, H, L);
            else
                FN(gru_backward_row)(dP + row * GH, dri, dhi, gates, h_prev,
                                     K->extra + row * H, H, H);
            if (S->dPn_rec)
                for (int j = 0; j < H; j++)
                    S->dPn_rec[row * H + j] = dri[2 * H + j];
            break;
        case FASTRNN_GRU_RESET_BEFORE:
            if (general)
                FN(gru_rb_general_backward_zn_row)(dri, dhi, gates, h_prev, H, L);
            else
                FN(gru_rb_backward_zn_row)(dri, dhi, gates, h_prev, H);
            break;
        }
    }

    if (L->layer_norm)
        FN(ln_recurrent_backward)(S, K, W, dW, t, n, L);

    if (cell == FASTRNN_GRU_RESET_BEFORE) {
        /* drh[:n] = dn_pre[:n] @ W_hn */
        FN(operand_mul)(&S->w_hn, n, drec + 2 * H, GH, 0, S->drh, H);
        for (int i = 0; i < n; i++) {
            size_t row = mem_row(L, t, slot_row(order, i));
            real *dri = drec + (size_t)i * GH, *dhi = dh + (size_t)i * H;
            const real *gates = K->gates + row * GH, *h_prev = K->hs + row * H;
            if (S->dhd) {   /* rh = r * (h * keep_h[2] * scale): through the mask */
                const unsigned char *k = L->drop_h + ((size_t)2 * L->B + slot_row(order, i)) * H;
                real *drh = S->drh + (size_t)i * H;
                for (int j = 0; j < H; j++)
                    drh[j] = k[j] ? drh[j] * (real)L->scale_h : (real)0;
            }
            if (general)
                FN(gru_rb_general_backward_r_row)(dri, dhi, gates, h_prev,
                                                  S->drh + (size_t)i * H, H, L);
            else
                FN(gru_rb_backward_r_row)(dri, dhi, gates, h_prev, S->drh + (size_t)i * H, H);
        }
        /* dh[:n] += dP_rz[:n] @ W_hh[:2H] (each block through its mask, with dropout) */
        if (S->dhd)
            FN(dropped_recurrent_backward)(S, n, L);
        else
            FN(operand_mul)(&S->w_hh, n, drec, GH, 1, dh, H);
    } else if (S->dhd) {
        FN(dropped_recurrent_backward)(S, n, L);
    } else if (!elementwise_recurrence(cell)) {
        /* (IndRNN's row wrote all of dh_{t-1} = dP * u: no product)
         * dh[:n] (+)= dP_rec[:n] @ W_hh; with a projection h_{t-1} reaches
         * step t only through W_hh, so dh is overwritten */
        FN(operand_mul)(&S->w_hh, n, drec, GH, S->dm == NULL, dh, R);
    }
    if (S->zdh) {
        /* zoneout's direct terms: dh_{t-1} += keep * dh_t, dc_{t-1} += keep * dc_t */
        for (size_t k = 0; k < (size_t)n * R; k++)
            dh[k] += S->zdh[k];
        if (S->zdc)
            for (size_t k = 0; k < (size_t)n * H; k++)
                S->dc[k] += S->zdc[k];
    }

    if (cell != FASTRNN_GRU && !L->layer_norm) {
        /* the input side equals the recurrent side: keep it in memory order
         * (with layer norm, ln_recurrent_backward did, before the normalization) */
        for (int i = 0; i < n; i++) {
            size_t row = mem_row(L, t, slot_row(order, i));
            for (int j = 0; j < GH; j++)
                dP[row * GH + j] = drec[(size_t)i * GH + j];
        }
    }
}

/* The first half of a step of the unit-split backward loop for units
 * [u0, u1) of every slot, the mirror of unit_step: dh gets y's gradient, and
 * the fused pass gives the step's pre-activation gradients of those units
 * (into drec, which alternates with a second buffer between steps, so no
 * member overwrites what another still reads). Then the members meet, and
 * each adds drec @ W_hh[:, units] to dh_{t-1}[:, units]. */
static void FN(unit_backward_gates)(FN(bwd_buffers) *S, const real *dy,
                                    const FN(cache_tensors) *K, real *drec, int t, int n,
                                    int u0, int u1, const fastrnn_layer *L)
{
    int B = L->B, H = L->H, G = fastrnn_num_gates(L->cell), GH = G * H, w = u1 - u0;
    int cell = L->cell;
    size_t units = (size_t)w * sizeof(real);

    for (int i = 0; i < B; i++) {
        size_t row = mem_row(L, t, slot_row(L->order, i));
        real *dhi = S->dh + (size_t)i * H + u0;
        if (i < n) {
            if (dy)
                for (int j = 0; j < w; j++)
                    dhi[j] += dy[row * L->ldy + u0 + j];
            if (S->zdh) {   /* backprop through zoneout, as backward_step */
                FN(zoneout_backward_row)(dhi, S->zdh + (size_t)i * H + u0,
                                         L->zone_h ? L->zone_h + row * H + u0 : NULL, L->p_h, w);
                if (S->zdc)
                    FN(zoneout_backward_row)(S->dc + (size_t)i * H + u0,
                                             S->zdc + (size_t)i * H + u0,
                                             L->zone_c ? L->zone_c + row * H + u0 : NULL,
                                             L->p_c, w);
            }
            continue;
        }
        for (int g = 0; g < G; g++)
            memset(S->dP + row * GH + g * H + u0, 0, units);
        if (S->dPn_rec)
            memset(S->dPn_rec + row * H + u0, 0, units);
    }
    for (int i = 0; i < n; i++) {
        size_t row = mem_row(L, t, slot_row(L->order, i));
        real *dhi = S->dh + (size_t)i * H + u0, *dri = drec + (size_t)i * GH + u0;
        const real *gates = K->gates + row * GH + u0;
        if (cell == FASTRNN_LSTM) {
            FN(lstm_backward_row)(dri, dhi, S->dc + (size_t)i * H + u0, gates,
                                  K->extra + row * H + u0, w, H);
        } else if (cell == FASTRNN_GRU) {
            FN(gru_backward_row)(S->dP + row * GH + u0, dri, dhi, gates, K->hs + row * H + u0,
                                 K->extra + row * H + u0, w, H);
            memcpy(S->dPn_rec + row * H + u0, dri + 2 * H, units);
            continue;
        } else {
            FN(rnn_backward_row)(dri, dhi, gates, w, cell == FASTRNN_RNN_RELU);
        }
        for (int g = 0; g < G; g++)   /* the input side equals the recurrent side */
            memcpy(S->dP + row * GH + g * H + u0, dri + g * H, units);
    }
}

/* The second half of the step, after the members meet: dh_{t-1}[:, units]
 * += drec @ W_hh[:, units], and zoneout's direct terms of those units */
static void FN(unit_backward_product)(FN(bwd_buffers) *S, const real *drec, int n, int u0,
                                      int u1, const fastrnn_layer *L)
{
    int H = L->H, GH = fastrnn_num_gates(L->cell) * H;
    FN(operand_mul_cols)(&S->w_hh, n, drec, GH, 1, S->dh, H, u0, u1);
    if (S->zdh) {
        for (int i = 0; i < n; i++)
            for (int j = u0; j < u1; j++) {
                S->dh[(size_t)i * H + j] += S->zdh[(size_t)i * H + j];
                if (S->zdc)
                    S->dc[(size_t)i * H + j] += S->zdc[(size_t)i * H + j];
            }
    }
}

/* What the unit-split backward loop reads and writes (shared by its members) */
typedef struct {
    FN(bwd_buffers) *S;
    const real *dy;
    const FN(cache_tensors) *K;
    fastrnn_barrier *team;    /* NULL: the caller does every member's share */
    const fastrnn_layer *L;
} FN(bwd_loop);

/* The whole backward time loop for member k of n (its units of every slot),
 * or for every member in turn when there is no team or it disbands */
static void FN(unit_backward_loop)(void *arg, int k, int n)
{
    FN(bwd_loop) *C = arg;
    const fastrnn_layer *L = C->L;
    int T = L->T, H = L->H, solo = C->team == NULL;
    int u0, u1;
    real *drec = C->S->drec, *drec_next = C->S->drec2;
#define MEMBERS_DO(stmt)                                       \
    for (int j = solo ? 0 : k; j < (solo ? n : k + 1); j++) {  \
        unit_range(H, j, n, &u0, &u1);                         \
        stmt;                                                  \
    }
    for (int s = 0; s < T; s++) {
        int t = L->reverse ? s : T - 1 - s;   /* the forward's order, reversed */
        int active = active_slots(L->lengths, L->order, L->B, t);
        MEMBERS_DO(FN(unit_backward_gates)(C->S, C->dy, C->K, drec, t, active, u0, u1, L))
        if (!solo && fastrnn_barrier_wait(C->team)) {
            if (k != 0)
                return;   /* the caller does the rest */
            solo = 1;
        }
        MEMBERS_DO(FN(unit_backward_product)(C->S, drec, active, u0, u1, L))
        real *swap = drec;
        drec = drec_next;
        drec_next = swap;
    }
#undef MEMBERS_DO
}

/* Backward of dropped_projection: dX (+)= sum_g (dP[:, g] @ W_ih[g]) * keep_x[g]
 * * scale and dW_ih[g] += dP[:, g].T @ (X * keep_x[g] * scale) */
static void FN(dropped_input_gradients)(real *dx, const RT(fastrnn_params) *dW,
                                        const FN(bwd_buffers) *S, const real *x,
                                        const RT(fastrnn_params) *W, const fastrnn_layer *L)
{
    int G = fastrnn_num_gates(L->cell), H = L->H, I = L->I, GH = G * H, rows = L->T * L->B;
    int threads = gemm_threads(L);
    if (!L->accumulate_dx)
        memset(dx, 0, (size_t)rows * I * sizeof(real));
    for (int g = 0; g < G; g++) {
        const unsigned char *keep = L->drop_x + (size_t)g * L->B * I;
        const real *dPg = S->dP + g * H, *w = W->w_ih + (size_t)g * H * I;
        /* dW_ih[g] += dP[:, g].T @ XD */
        FN(mask_mem_rows)(S->ad, x, keep, I, L->scale_x, L);
        FN(gemm)(threads, 1, 0, H, I, rows, (real)1, dPg, GH, S->ad, I, (real)1,
                 dW->w_ih + (size_t)g * H * I, I);
        /* AD = dP[:, g] @ W_ih[g];  dX += AD * keep_x[g] * scale */
        FN(gemm)(threads, 0, 0, rows, I, H, (real)1, dPg, GH, w, I, (real)0, S->ad, I);
        for (size_t r = 0; r < (size_t)rows; r++) {
            size_t b = L->batch_first ? r / (size_t)L->T : r % (size_t)L->B;
            const unsigned char *k = keep + b * I;
            for (int j = 0; j < I; j++)
                dx[r * I + j] += k[j] ? S->ad[r * I + j] * (real)L->scale_x : (real)0;
        }
    }
}

/* dW_hh[g] (H, R) += dP_g.T @ (HS * keep_h[g] * scale), recurrent dropout's
 * weight gradient of gate block g, whose pre-activation gradients dP_g are
 * (T*B, H) with row stride ld */
static void FN(dropped_hh_gradient)(real *dw, const real *dPg, int ld, int g,
                                    const FN(bwd_buffers) *S, const real *hs,
                                    const fastrnn_layer *L)
{
    int R = state_width(L), rows = L->T * L->B;
    FN(mask_mem_rows)(S->ad, hs, L->drop_h + (size_t)g * L->B * R, R, L->scale_h, L);
    FN(gemm)(gemm_threads(L), 1, 0, L->H, R, rows, (real)1, dPg, ld, S->ad, R, (real)1, dw, R);
}

/* After the loop, the GEMMs over all steps: dX, and the parameter gradients
 * (accumulated), the mirror of the forward's input projection */
static void FN(weight_gradients)(real *dx, const RT(fastrnn_params) *dW,
                                 const FN(bwd_buffers) *S, const FN(cache_tensors) *K,
                                 const real *x, const RT(fastrnn_params) *W,
                                 const fastrnn_layer *L)
{
    int I = L->I, H = L->H, R = state_width(L), GH = fastrnn_num_gates(L->cell) * H;
    int rows = L->T * L->B;   /* fits an int: the bindings check T*B*widest */
    int threads = gemm_threads(L);
    const real *dP = S->dP, *hs = K->hs;

    if (dW->b_ih)
        FN(add_column_sums)(dW->b_ih, dP, (size_t)rows, GH, GH);
    if (L->layer_norm) {
        /* dP becomes the gradient of X W_ih^T (before the normalization) */
        for (size_t r = 0; r < (size_t)rows; r++)
            FN(layer_norm_backward_row)(S->dP + r * GH, K->ln_ih + r * GH, W->ln_ih,
                                        K->rstd[r * 3], dW->ln_ih, GH);
    }
    if (L->drop_x) {
        FN(dropped_input_gradients)(dx, dW, S, x, W, L);
    } else {
        /* dX = dP @ W_ih  (added to the other direction's when accumulating) */
        FN(gemm)(threads, 0, 0, rows, I, GH, (real)1, dP, GH, W->w_ih, I,
                 L->accumulate_dx ? (real)1 : (real)0, dx, I);
        /* dW_ih += dP.T @ X */
        FN(gemm)(threads, 1, 0, GH, I, rows, (real)1, dP, GH, x, I, (real)1, dW->w_ih, I);
    }
    if (S->dhs) {
        /* dW_hr += dHS.T @ MS */
        FN(gemm)(threads, 1, 0, R, H, rows, (real)1, S->dhs, R, K->ms, H, (real)1, dW->w_hr, H);
    }

    if (L->layer_norm) {
        /* dW_hh += dPh.T @ HS, per gate block with recurrent dropout (db_hh
         * accumulated in the loop, from the gradients after the normalization) */
        if (L->drop_h)
            for (int g = 0; g < fastrnn_num_gates(L->cell); g++)
                FN(dropped_hh_gradient)(dW->w_hh + (size_t)g * H * R, S->dPh + g * H, GH, g, S,
                                        hs, L);
        else
            FN(gemm)(threads, 1, 0, GH, R, rows, (real)1, S->dPh, GH, hs, R, (real)1,
                     dW->w_hh, R);
        return;
    }
    switch (L->cell) {
    case FASTRNN_GRU:
        if (L->drop_h) {
            for (int g = 0; g < 2; g++)
                FN(dropped_hh_gradient)(dW->w_hh + (size_t)g * H * H, dP + g * H, GH, g, S, hs, L);
            FN(dropped_hh_gradient)(dW->w_hh + (size_t)2 * H * H, S->dPn_rec, H, 2, S, hs, L);
        } else {
            /* dW_hh[:2H] += dP[:, :2H].T @ HS;  dW_hh[2H:] += dPn_rec.T @ HS */
            FN(gemm)(threads, 1, 0, 2 * H, H, rows, (real)1, dP, GH, hs, H, (real)1, dW->w_hh, H);
            FN(gemm)(threads, 1, 0, H, H, rows, (real)1, S->dPn_rec, H, hs, H, (real)1,
                     dW->w_hh + (size_t)2 * H * H, H);
        }
        if (dW->b_hh) {
            FN(add_column_sums)(dW->b_hh, dP, (size_t)rows, 2 * H, GH);
            FN(add_column_sums)(dW->b_hh + 2 * H, S->dPn_rec, (size_t)rows, H, H);
        }
        break;
    case FASTRNN_GRU_RESET_BEFORE:
        /* dW_hh[:2H] += dP[:, :2H].T @ HS;  dW_hh[2H:] += dP[:, 2H:].T @ (R*HS), the
         * cache's r * h (through its mask with recurrent dropout) */
        if (L->drop_h)
            for (int g = 0; g < 2; g++)
                FN(dropped_hh_gradient)(dW->w_hh + (size_t)g * H * H, dP + g * H, GH, g, S, hs, L);
        else
            FN(gemm)(threads, 1, 0, 2 * H, H, rows, (real)1, dP, GH, hs, H, (real)1, dW->w_hh, H);
        FN(gemm)(threads, 1, 0, H, H, rows, (real)1, dP + 2 * H, GH, K->extra, H, (real)1,
                 dW->w_hh + (size_t)2 * H * H, H);
        if (dW->b_hh)
            FN(add_column_sums)(dW->b_hh, dP, (size_t)rows, GH, GH);
        break;
    case FASTRNN_INDRNN_TANH:
    case FASTRNN_INDRNN_RELU:
        /* du += (dP * HS).sum(0);  db_hh += dP.sum(0) */
        FN(add_column_dots)(dW->w_hh, dP, hs, (size_t)rows, H);
        if (dW->b_hh)
            FN(add_column_sums)(dW->b_hh, dP, (size_t)rows, H, H);
        break;
    default:
        if (L->drop_h) {
            for (int g = 0; g < fastrnn_num_gates(L->cell); g++)
                FN(dropped_hh_gradient)(dW->w_hh + (size_t)g * H * R, dP + g * H, GH, g, S, hs, L);
        } else {
            /* dW_hh += dP.T @ HS */
            FN(gemm)(threads, 1, 0, GH, R, rows, (real)1, dP, GH, hs, R, (real)1, dW->w_hh, R);
        }
        if (dW->b_hh)
            FN(add_column_sums)(dW->b_hh, dP, (size_t)rows, GH, GH);
        break;
    }
}

RT(fastrnn_backward_fn) FN(fastrnn_backward);   /* the API's type (fastrnn.h) */

int FN(fastrnn_backward)(real *dx, RT(fastrnn_state) *dstate0, const RT(fastrnn_params) *dW,
                         real *work, const real *dy, const RT(fastrnn_state) *dstate_n,
                         const real *cache, const real *x, const RT(fastrnn_params) *W,
                         const fastrnn_layer *L)
{
    int G = fastrnn_num_gates(L->cell);
    if (!layer_ok(L, G) || !FN(params_ok)(W, L) || !dW->w_ih || !dW->w_hh
        || (L->P && !dW->w_hr) || (W->peep && !dW->peep)
        || (W->ln_ih && (!dW->ln_ih || !dW->ln_hh)) || (W->ln_c && (!dW->ln_c || !dW->ln_cb)))
        return FASTRNN_ERR_ARGUMENT;
    if (cache == NULL)
        return FASTRNN_ERR_NO_CACHE;
    int T = L->T, B = L->B, H = L->H, R = state_width(L), GH = G * H;
    int lstm = L->cell == FASTRNN_LSTM, gru_rb = L->cell == FASTRNN_GRU_RESET_BEFORE;
    const int *order = L->order;
    const real *dh_n = dstate_n ? dstate_n->h : NULL, *dc_n = dstate_n ? dstate_n->c : NULL;

    FN(cache_tensors) K;
    FN(cache_layout)(&K, (real *)cache, L);   /* read only */
    FN(bwd_buffers) S = {0};   /* u stays NULL but for IndRNN */
    FN(backward_layout)(&S, work, L);
    S.w_hh_raw = W->w_hh;
    int gt = gemm_threads(L);
    if (elementwise_recurrence(L->cell)) {
        S.u = W->w_hh;
    } else if (gru_rb) {
        S.w_hh = FN(operand_prepare)(W->w_hh, H, 0, 2 * H, H, B, T, S.w_hh_room, gt);
        S.w_hn = FN(operand_prepare)(W->w_hh + (size_t)2 * H * H, H, 0, H, H, B, T,
                                     S.w_hn_room, gt);
    } else {
        S.w_hh = FN(operand_prepare)(W->w_hh, R, 0, GH, R, B, T, S.w_hh_room, gt);
    }
    if (L->P)
        S.w_hr = FN(operand_prepare)(W->w_hr, H, 0, L->P, H, B, T, S.w_hr_room, gt);

    for (int i = 0; i < B; i++) {
        int b = slot_row(order, i);
        for (int j = 0; j < R; j++)
            S.dh[(size_t)i * R + j] = dh_n ? dh_n[(size_t)b * R + j] : (real)0;
        if (lstm)
            for (int j = 0; j < H; j++)
                S.dc[(size_t)i * H + j] = dc_n ? dc_n[(size_t)b * H + j] : (real)0;
    }

    int members = unit_threads(L, 1);
    fastrnn_barrier team;
    FN(bwd_loop) C = {&S, dy, &K, fastrnn_backing_off() ? NULL : &team, L};
    if (members > 1) {
        /* a team, or every member's share in turn: the same results either way */
        if (!C.team || !fastrnn_run_team(members, FN(unit_backward_loop), &C, &team)) {
            C.team = NULL;
            FN(unit_backward_loop)(&C, 0, members);
        }
    } else {
        for (int s = 0; s < T; s++) {
            int t = L->reverse ? s : T - 1 - s;   /* the forward's order, reversed */
            int n = active_slots(L->lengths, order, B, t);
            FN(backward_step)(&S, dy, &K, W, dW, t, n, L);
        }
    }

    for (int i = 0; i < B; i++) {
        int b = slot_row(order, i);
        for (int j = 0; j < R; j++)
            dstate0->h[(size_t)b * R + j] = S.dh[(size_t)i * R + j];
        if (lstm)
            for (int j = 0; j < H; j++)
                dstate0->c[(size_t)b * H + j] = S.dc[(size_t)i * H + j];
    }
    FN(weight_gradients)(dx, dW, &S, &K, x, W, L);
    return FASTRNN_OK;
}
