/* layer_impl.h -- the time loop of one layer-direction, forward and
 * backward (BPTT), written once over `real`.
 *
 * Forward: P = X W_ih^T + b_ih for many steps in one GEMM (all T when
 * training, where P becomes the gates cache; a bounded chunk of steps in
 * inference), then per step one GEMM R = h W_hh^T + b_hh over the active
 * slots and one fused elementwise pass per row.
 * Backward: per step (reversed) the fused pass gives the pre-activation
 * gradients dP_t and dh_{t-1} = dP_t W_hh + direct terms; after the loop
 * three large GEMMs give dX, dW_ih and dW_hh. */

/* ============================================================ Forward */

/* Where P (the input projection) lives: row (t, b) is (t - t0)*pst + b*psb,
 * or with by_slot (threaded inference, one step at a time) row i of slot i. */
typedef struct {
    real *p;     /* (rows, G*H) */
    int t0;      /* first step held */
    size_t pst;  /* row stride of t */
    size_t psb;  /* row stride of b */
    int by_slot;
} FN(proj);

/* P's gates of step t, batch row b held by slot i */
static inline real *FN(proj_gates)(const FN(proj) *P, int t, int b, int i, int GH)
{
    if (P->by_slot)
        return P->p + (size_t)i * GH;
    return P->p + (size_t)(t - P->t0) * P->pst * GH + (size_t)b * P->psb * GH;
}

/* W_ih^T (I, G*H), the operand of the input projection: dot products for one
 * or two rows, the packed kernel for small GEMMs (W_ih packed into buf), else
 * BLAS on W_ih itself */
static FN(operand) FN(projection_operand)(const real *w_ih, const fastrnn_layer *L,
                                          int training, real *buf)
{
    int I = L->I, GH = fastrnn_num_gates(L->cell) * L->H;
    FN(operand) op = {OP_BLAS, I, GH, w_ih, I, 1};
    if (projection_rows(L, training) <= FASTRNN_SMALL_ROWS) {
        op.kind = OP_NT;
    } else if (projection_packed(L, training)) {
        op.kind = OP_PACKED;
        FN(pack_tiles)(buf, w_ih, I, GH, 1, (size_t)I);
        op.p = buf;
    }
    return op;
}

/* P rows of steps [t0, t1) = X W_ih^T + b_ih (inference chunk, time-major) */
static void FN(project_chunk)(FN(proj) *P, const real *x, const FN(operand) *w_ih,
                              const real *b_ih, int t0, int t1, const fastrnn_layer *L)
{
    int B = L->B, I = L->I, GH = fastrnn_num_gates(L->cell) * L->H;
    P->t0 = t0;
    FN(fill_bias)(P->p, (t1 - t0) * B, GH, GH, b_ih);
    if (!L->batch_first || B == 1) {
        /* P[t0:t1] = X[t0:t1] @ W_ih.T  (contiguous rows) */
        FN(operand_mul)(w_ih, (t1 - t0) * B, x + (size_t)t0 * B * I, I, b_ih != NULL,
                        P->p, GH);
    } else {
        /* batch-first: P[t] = X[:, t] @ W_ih.T, rows b strided by T */
        for (int t = t0; t < t1; t++)
            FN(operand_mul)(w_ih, B, x + (size_t)t * I, L->T * I, b_ih != NULL,
                            P->p + (size_t)(t - t0) * B * GH, GH);
    }
}

/* The buffers of one forward call. Slot-ordered (row i = batch row order[i]). */
typedef struct {
    real *h;      /* (B, R) state */
    real *c;      /* (B, H) LSTM cell state, else NULL */
    real *m;      /* (B, H) o * tanh(c) before the projection W_hr, else NULL */
    real *rec;    /* (B, G*H) recurrent pre-activations h W_hh^T + b_hh */
    real *rh;     /* (B, H) r * h, GRU reset before, else NULL */
    /* training cache in memory order, NULL in inference */
    real *hs;     /* (T*B, R) state entering each step */
    real *extra;  /* (T*B, H) LSTM c_{t-1}, GRU n-term or r*h, else NULL */
    real *ms;     /* (T*B, H) m_t with a projection, else NULL */
    /* the per-step operands (gemm.h), prepared once per call */
    FN(operand) w_hh;  /* W_hh^T (R, G*H); GRU reset before: its r, z blocks (R, 2H) */
    FN(operand) w_hn;  /* GRU reset before: W_hn^T (H, H) */
    FN(operand) w_hr;  /* projection: W_hr^T (H, P) */
} FN(fwd_buffers);

/* The active slots of [s0, s1) when the first n of all slots are active: [s0, end) */
static inline int slice_end(int n, int s0, int s1)
{
    return n < s0 ? s0 : (n > s1 ? s1 : n);
}

/* One step at time t for slots [s0, s1), of which those below n are active:
 * recurrent GEMM + fused pass. Slices touch disjoint rows (threads). */
static void FN(forward_step)(real *y, FN(fwd_buffers) *S, const FN(proj) *P,
                             const real *b_hh, const real *peep, const int *order, int t,
                             int n, int s0, int s1, const fastrnn_layer *L)
{
    int H = L->H, R = state_width(L), GH = fastrnn_num_gates(L->cell) * H;
    int cell = L->cell, training = S->hs != NULL, general = L->general;
    int rec_w = cell == FASTRNN_GRU_RESET_BEFORE ? 2 * H : GH;  /* r, z only */
    int e = slice_end(n, s0, s1);

    /* rec[s0:e] = h[s0:e] @ W_hh.T + b_hh  (GRU reset before: r and z blocks) */
    FN(fill_bias)(S->rec + (size_t)s0 * GH, e - s0, rec_w, GH, b_hh);
    FN(operand_mul)(&S->w_hh, e - s0, S->h + (size_t)s0 * R, R, b_hh != NULL,
                    S->rec + (size_t)s0 * GH, GH);

    for (int i = s0; i < e; i++) {
        int b = slot_row(order, i);
        size_t row = mem_row(L, t, b);
        real *gates = FN(proj_gates)(P, t, b, i, GH);
        real *hi = S->h + (size_t)i * R, *ri = S->rec + (size_t)i * GH;
        real *ci = S->c ? S->c + (size_t)i * H : NULL;
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
        case FASTRNN_LSTM: {
            /* with a projection the row writes m = o * h(c), projected below */
            real *out = S->m ? S->m + (size_t)i * H : hi;
            if (general)
                FN(lstm_general_forward_row)(gates, out, ci, ri, peep, H, L);
            else
                FN(lstm_forward_row)(gates, out, ci, ri, H);
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
                FN(gru_forward_row)(gates, hi, ri, H);
            break;
        case FASTRNN_GRU_RESET_BEFORE:
            if (general)
                FN(gru_rb_general_forward_gates_row)(gates, S->rh + (size_t)i * H, hi, ri, H, L);
            else
                FN(gru_rb_forward_gates_row)(gates, S->rh + (size_t)i * H, hi, ri, H);
            if (training)
                for (int j = 0; j < H; j++)
                    S->extra[row * H + j] = S->rh[(size_t)i * H + j];
            break;
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

    /* y[t, b] = h_t for active rows, zeros for the rest */
    for (int i = s0; i < s1; i++) {
        int b = slot_row(order, i);
        size_t row = mem_row(L, t, b);
        real *yrow = y + row * L->ldy;
        for (int j = 0; j < R; j++)
            yrow[j] = i < e ? S->h[(size_t)i * R + j] : (real)0;
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

/* What the time loop of one forward call reads and writes (shared by its
 * threads, each of which owns a slice of the slots) */
typedef struct {
    real *y;
    FN(fwd_buffers) *S;
    FN(proj) P;               /* the cache, or the inference chunk (one thread) */
    int chunk;                /* steps per projection chunk */
    real *slot_p, *xg;        /* threaded inference: P rows (B, GH), gathered x (B, I) */
    const real *x, *b_ih, *b_hh, *peep;
    const FN(operand) *w_in;
    const int *lengths, *order;
    const fastrnn_layer *L;
} FN(fwd_loop);

/* slot_p[s0:e] = X rows of step t for slots [s0, e) @ W_ih^T + b_ih */
static void FN(project_slots)(const FN(fwd_loop) *C, int t, int s0, int e)
{
    const fastrnn_layer *L = C->L;
    int I = L->I, GH = fastrnn_num_gates(L->cell) * L->H;
    real *dst = C->slot_p + (size_t)s0 * GH;
    const real *a;
    int lda = I;
    if (e <= s0)
        return;
    if (!C->order) {   /* slots are batch rows: strided rows of x */
        a = C->x + mem_row(L, t, s0) * I;
        lda = L->batch_first ? L->T * I : I;
    } else {           /* sorted slots: gather their rows */
        for (int i = s0; i < e; i++)
            memcpy(C->xg + (size_t)i * I, C->x + mem_row(L, t, C->order[i]) * I,
                   (size_t)I * sizeof(real));
        a = C->xg + (size_t)s0 * I;
    }
    FN(fill_bias)(dst, e - s0, GH, GH, C->b_ih);
    FN(operand_mul)(C->w_in, e - s0, a, lda, C->b_ih != NULL, dst, GH);
}

/* The whole time loop for slots [s0, s1) */
static void FN(forward_loop)(void *arg, int s0, int s1)
{
    FN(fwd_loop) *C = arg;
    const fastrnn_layer *L = C->L;
    int T = L->T, B = L->B;
    if (C->slot_p) {
        /* threaded inference: each slice projects its own rows step by step */
        FN(proj) P = {C->slot_p, 0, 0, 0, 1};
        for (int s = 0; s < T; s++) {
            int t = L->reverse ? T - 1 - s : s;
            int n = active_slots(C->lengths, C->order, B, t);
            FN(project_slots)(C, t, s0, slice_end(n, s0, s1));
            FN(forward_step)(C->y, C->S, &P, C->b_hh, C->peep, C->order, t, n, s0, s1, L);
        }
        return;
    }
    FN(proj) P = C->P;
    int chunk = C->chunk, nchunks = (T + chunk - 1) / chunk;
    for (int k = 0; k < nchunks; k++) {
        int t0 = (L->reverse ? nchunks - 1 - k : k) * chunk;
        int t1 = t0 + chunk < T ? t0 + chunk : T;
        if (!C->S->hs)   /* inference, one thread (s0 = 0, s1 = B) */
            FN(project_chunk)(&P, C->x, C->w_in, C->b_ih, t0, t1, L);
        for (int s = 0; s < t1 - t0; s++) {
            int t = L->reverse ? t1 - 1 - s : t0 + s;
            int n = active_slots(C->lengths, C->order, B, t);
            FN(forward_step)(C->y, C->S, &P, C->b_hh, C->peep, C->order, t, n, s0, s1, L);
        }
    }
}

int FN(fastrnn_forward)(real *y, real *h_n, real *c_n, real *cache, real *work,
                        const real *x, const real *h0, const real *c0,
                        const real *w_ih, const real *w_hh,
                        const real *b_ih, const real *b_hh, const real *w_hr,
                        const real *peep,
                        const int *lengths, const int *order, const fastrnn_layer *L)
{
    int G = fastrnn_num_gates(L->cell);
    if (!layer_ok(L, G) || (lengths && !order) || (L->P && !w_hr)
        || (peep && (L->cell != FASTRNN_LSTM || !L->general)))
        return FASTRNN_ERR_ARGUMENT;
    int T = L->T, B = L->B, H = L->H, R = state_width(L), GH = G * H;
    int lstm = L->cell == FASTRNN_LSTM, training = cache != NULL;
    size_t rows = (size_t)T * B;

    /* work: h (B,R) | rec (B,GH) | c (B,H) LSTM | rh (B,H) GRU-RB | m (B,H) projection
     *       | the operands (when operand_buffered): W_hh, W_hn GRU-RB, W_hr
     *       | W_ih packed (when projection_packed)
     *       | inference: P rows (B,GH), x rows (B,I) threaded, else P chunk */
    FN(fwd_buffers) S = {0};
    int gru_rb = L->cell == FASTRNN_GRU_RESET_BEFORE, rec_w = gru_rb ? 2 * H : GH;
    S.h = work;
    S.rec = S.h + (size_t)B * R;
    real *next = S.rec + (size_t)B * GH;
    if (lstm) { S.c = next; next += (size_t)B * H; }
    if (gru_rb) { S.rh = next; next += (size_t)B * H; }
    if (L->P) { S.m = next; next += (size_t)B * H; }
    int threads = loop_threads(L, training), srows = step_rows(L, training);
    int buffered = operand_buffered(L, training);
    S.w_hh = FN(operand_prepare)(w_hh, R, 1, R, rec_w, srows, T, buffered ? next : NULL);
    next += buffered ? operand_size(R, rec_w) : 0;
    if (gru_rb) {
        S.w_hn = FN(operand_prepare)(w_hh + (size_t)2 * H * H, H, 1, H, H, srows, T,
                                     buffered ? next : NULL);
        next += buffered ? operand_size(H, H) : 0;
    }
    if (L->P) {
        S.w_hr = FN(operand_prepare)(w_hr, H, 1, H, L->P, srows, T, buffered ? next : NULL);
        next += buffered ? operand_size(H, L->P) : 0;
    }
    FN(operand) w_in = FN(projection_operand)(w_ih, L, training, next);
    next += projection_packed(L, training) ? operand_size(L->I, GH) : 0;

    /* cache: gates (rows,GH) | hs (rows,R) | cs or GRU extra (rows,H) | ms (rows,H) P */
    FN(proj) P = {0};
    int chunk;
    if (training) {
        S.hs = cache + rows * GH;
        if (has_extra_cache(L->cell))
            S.extra = S.hs + rows * R;
        if (L->P)
            S.ms = S.extra + rows * H;
        P.p = cache;
        P.pst = L->batch_first ? 1 : (size_t)B;
        P.psb = L->batch_first ? (size_t)T : 1;
        chunk = T;
    } else {
        P.p = next;
        P.pst = (size_t)B;
        P.psb = 1;
        chunk = infer_chunk_steps(L);
    }

    for (int i = 0; i < B; i++) {
        int b = slot_row(order, i);
        for (int j = 0; j < R; j++)
            S.h[(size_t)i * R + j] = h0[(size_t)b * R + j];
        if (lstm)
            for (int j = 0; j < H; j++)
                S.c[(size_t)i * H + j] = c0[(size_t)b * H + j];
    }

    if (training) {
        /* P = X @ W_ih.T + b_ih, all steps in memory order (one chunk) */
        FN(fill_bias)(P.p, (int)rows, GH, GH, b_ih);
        FN(operand_mul)(&w_in, (int)rows, x, L->I, b_ih != NULL, P.p, GH);
        P.t0 = 0;
    }
    FN(fwd_loop) C = {y, &S, P, chunk, NULL, NULL, x, b_ih, b_hh, peep, &w_in, lengths, order, L};
    if (threads > 1 && !training) {
        C.slot_p = next;
        C.xg = next + (size_t)B * GH;
    }
    if (threads > 1)
        fastrnn_run_slices(threads, B, FN(forward_loop), &C);
    else
        FN(forward_loop)(&C, 0, B);

    for (int i = 0; i < B; i++) {
        int b = slot_row(order, i);
        for (int j = 0; j < R; j++)
            h_n[(size_t)b * R + j] = S.h[(size_t)i * R + j];
        if (lstm)
            for (int j = 0; j < H; j++)
                c_n[(size_t)b * H + j] = S.c[(size_t)i * H + j];
    }
    return FASTRNN_OK;
}

/* =========================================================== Backward */

int FN(fastrnn_backward)(real *dx, real *dh0, real *dc0,
                         real *dw_ih, real *dw_hh, real *db_ih, real *db_hh, real *dw_hr,
                         real *dpeep, real *work, int accumulate_dx,
                         const real *dy, const real *dh_n, const real *dc_n,
                         const real *cache, const real *x,
                         const real *w_ih, const real *w_hh, const real *w_hr,
                         const real *peep,
                         const int *lengths, const int *order, const fastrnn_layer *L)
{
    int G = fastrnn_num_gates(L->cell);
    if (!layer_ok(L, G) || (lengths && !order) || (L->P && (!w_hr || !dw_hr))
        || (peep && (L->cell != FASTRNN_LSTM || !L->general)))
        return FASTRNN_ERR_ARGUMENT;
    if (cache == NULL)
        return FASTRNN_ERR_NO_CACHE;
    int T = L->T, B = L->B, I = L->I, H = L->H, R = state_width(L), GH = G * H;
    int cell = L->cell, lstm = cell == FASTRNN_LSTM, general = L->general;
    size_t rows = (size_t)T * B;

    /* cache: gates (rows,GH) | hs (rows,R) | extra (rows,H) | ms (rows,H) P */
    const real *gates_all = cache, *hs = cache + rows * GH, *extra = hs + rows * R;
    const real *ms = extra + rows * H;

    /* work: dh (B,R) | drec (B,GH) slots | dP (rows,GH) memory order
     *       | dc (B,H) LSTM | dPn_rec (rows,H) GRU | drh (B,H) GRU-RB
     *       | dm (B,H), dhs (rows,P) projection
     *       | the operands (when operand_buffered): W_hh (or GRU-RB's
     *         W_hh[:2H] and W_hn), W_hr */
    real *dh = work, *drec = dh + (size_t)B * R, *dP = drec + (size_t)B * GH;
    real *next = dP + rows * GH, *dc = NULL, *dPn_rec = NULL, *drh = NULL;
    real *dm = NULL, *dhs = NULL;
    if (lstm) { dc = next; next += (size_t)B * H; }
    if (cell == FASTRNN_GRU) { dPn_rec = next; next += rows * H; }
    if (cell == FASTRNN_GRU_RESET_BEFORE) { drh = next; next += (size_t)B * H; }
    if (L->P) { dm = next; dhs = dm + (size_t)B * H; next = dhs + rows * L->P; }

    /* the per-step operands, in their natural (K, N) layout: dh = dP W_hh */
    int buffered = operand_buffered(L, 1);   /* training: one thread, all B rows */
    FN(operand) op_hh, op_hn = {0}, op_hr = {0};
    if (cell == FASTRNN_GRU_RESET_BEFORE) {
        op_hh = FN(operand_prepare)(w_hh, H, 0, 2 * H, H, B, T, buffered ? next : NULL);
        next += buffered ? operand_size(2 * H, H) : 0;
        op_hn = FN(operand_prepare)(w_hh + (size_t)2 * H * H, H, 0, H, H, B, T,
                                    buffered ? next : NULL);
        next += buffered ? operand_size(H, H) : 0;
    } else {
        op_hh = FN(operand_prepare)(w_hh, R, 0, GH, R, B, T, buffered ? next : NULL);
        next += buffered ? operand_size(GH, R) : 0;
    }
    if (L->P)
        op_hr = FN(operand_prepare)(w_hr, H, 0, L->P, H, B, T, buffered ? next : NULL);

    for (int i = 0; i < B; i++) {
        int b = slot_row(order, i);
        for (int j = 0; j < R; j++)
            dh[(size_t)i * R + j] = dh_n ? dh_n[(size_t)b * R + j] : (real)0;
        if (lstm)
            for (int j = 0; j < H; j++)
                dc[(size_t)i * H + j] = dc_n ? dc_n[(size_t)b * H + j] : (real)0;
    }

    for (int s = 0; s < T; s++) {
        /* reverse of the forward's order */
        int t = L->reverse ? s : T - 1 - s;
        int n = active_slots(lengths, order, B, t);

        /* dh of the active rows gets y's gradient; inactive rows pass theirs
         * through untouched and send nothing to the parameters or x */
        for (int i = 0; i < B; i++) {
            size_t row = mem_row(L, t, slot_row(order, i));
            real *dhi = dh + (size_t)i * R;
            if (i < n && dy)
                for (int j = 0; j < R; j++)
                    dhi[j] += dy[row * L->ldy + j];
            if (i >= n) {
                for (int j = 0; j < GH; j++)
                    dP[row * GH + j] = (real)0;
                if (dPn_rec)
                    for (int j = 0; j < H; j++)
                        dPn_rec[row * H + j] = (real)0;
            }
            if (dhs)
                for (int j = 0; j < R; j++)
                    dhs[row * R + j] = i < n ? dhi[j] : (real)0;
        }
        if (dm) {
            /* backprop through h = m @ W_hr.T:  dm[:n] = dh[:n] @ W_hr */
            FN(operand_mul)(&op_hr, n, dh, R, 0, dm, H);
        }

        for (int i = 0; i < n; i++) {
            size_t row = mem_row(L, t, slot_row(order, i));
            real *dhi = dh + (size_t)i * R, *dri = drec + (size_t)i * GH;
            const real *gates = gates_all + row * GH, *h_prev = hs + row * R;
            switch (cell) {
            case FASTRNN_RNN_TANH:
            case FASTRNN_RNN_RELU:
                if (general)
                    FN(rnn_general_backward_row)(dri, dhi, gates, H, L);
                else
                    FN(rnn_backward_row)(dri, dhi, gates, H, cell == FASTRNN_RNN_RELU);
                break;
            case FASTRNN_LSTM: {
                real *dout = dm ? dm + (size_t)i * H : dhi, *dci = dc + (size_t)i * H;
                if (general)
                    FN(lstm_general_backward_row)(dri, dout, dci, gates, extra + row * H, peep,
                                                  dpeep, H, L);
                else
                    FN(lstm_backward_row)(dri, dout, dci, gates, extra + row * H, H);
                break;
            }
            case FASTRNN_GRU:
                if (general)
                    FN(gru_general_backward_row)(dP + row * GH, dri, dhi, gates, h_prev,
                                                 extra + row * H, H, L);
                else
                    FN(gru_backward_row)(dP + row * GH, dri, dhi, gates, h_prev,
                                         extra + row * H, H);
                for (int j = 0; j < H; j++)
                    dPn_rec[row * H + j] = dri[2 * H + j];
                break;
            case FASTRNN_GRU_RESET_BEFORE:
                if (general)
                    FN(gru_rb_general_backward_zn_row)(dri, dhi, gates, h_prev, H, L);
                else
                    FN(gru_rb_backward_zn_row)(dri, dhi, gates, h_prev, H);
                break;
            }
        }

        if (cell == FASTRNN_GRU_RESET_BEFORE) {
            /* drh[:n] = dn_pre[:n] @ W_hn */
            FN(operand_mul)(&op_hn, n, drec + 2 * H, GH, 0, drh, H);
            for (int i = 0; i < n; i++) {
                size_t row = mem_row(L, t, slot_row(order, i));
                real *dri = drec + (size_t)i * GH, *dhi = dh + (size_t)i * H;
                const real *gates = gates_all + row * GH, *h_prev = hs + row * H;
                if (general)
                    FN(gru_rb_general_backward_r_row)(dri, dhi, gates, h_prev,
                                                      drh + (size_t)i * H, H, L);
                else
                    FN(gru_rb_backward_r_row)(dri, dhi, gates, h_prev, drh + (size_t)i * H, H);
            }
            /* dh[:n] += dP_rz[:n] @ W_hh[:2H] */
            FN(operand_mul)(&op_hh, n, drec, GH, 1, dh, H);
        } else {
            /* dh[:n] (+)= dP_rec[:n] @ W_hh; with a projection h_{t-1} reaches
             * step t only through W_hh, so dh is overwritten */
            FN(operand_mul)(&op_hh, n, drec, GH, dm == NULL, dh, R);
        }

        if (cell != FASTRNN_GRU) {
            /* the input side equals the recurrent side: keep it in memory order */
            for (int i = 0; i < n; i++) {
                size_t row = mem_row(L, t, slot_row(order, i));
                for (int j = 0; j < GH; j++)
                    dP[row * GH + j] = drec[(size_t)i * GH + j];
            }
        }
    }

    for (int i = 0; i < B; i++) {
        int b = slot_row(order, i);
        for (int j = 0; j < R; j++)
            dh0[(size_t)b * R + j] = dh[(size_t)i * R + j];
        if (lstm)
            for (int j = 0; j < H; j++)
                dc0[(size_t)b * H + j] = dc[(size_t)i * H + j];
    }

    /* dX = dP @ W_ih  (added to the other direction's when accumulating) */
    FN(gemm)(0, 0, (int)rows, I, GH, (real)1, dP, GH, w_ih, I,
             accumulate_dx ? (real)1 : (real)0, dx, I);
    /* dW_ih += dP.T @ X */
    FN(gemm)(1, 0, GH, I, (int)rows, (real)1, dP, GH, x, I, (real)1, dw_ih, I);
    if (db_ih)
        FN(add_column_sums)(db_ih, dP, rows, GH, GH);
    if (dhs) {
        /* dW_hr += dHS.T @ MS */
        FN(gemm)(1, 0, R, H, (int)rows, (real)1, dhs, R, ms, H, (real)1, dw_hr, H);
    }

    switch (cell) {
    case FASTRNN_GRU:
        /* dW_hh[:2H] += dP[:, :2H].T @ HS;  dW_hh[2H:] += dPn_rec.T @ HS */
        FN(gemm)(1, 0, 2 * H, H, (int)rows, (real)1, dP, GH, hs, H, (real)1, dw_hh, H);
        FN(gemm)(1, 0, H, H, (int)rows, (real)1, dPn_rec, H, hs, H, (real)1,
                 dw_hh + (size_t)2 * H * H, H);
        if (db_hh) {
            FN(add_column_sums)(db_hh, dP, rows, 2 * H, GH);
            FN(add_column_sums)(db_hh + 2 * H, dPn_rec, rows, H, H);
        }
        break;
    case FASTRNN_GRU_RESET_BEFORE:
        /* dW_hh[:2H] += dP[:, :2H].T @ HS;  dW_hh[2H:] += dP[:, 2H:].T @ (R*HS) */
        FN(gemm)(1, 0, 2 * H, H, (int)rows, (real)1, dP, GH, hs, H, (real)1, dw_hh, H);
        FN(gemm)(1, 0, H, H, (int)rows, (real)1, dP + 2 * H, GH, extra, H, (real)1,
                 dw_hh + (size_t)2 * H * H, H);
        if (db_hh)
            FN(add_column_sums)(db_hh, dP, rows, GH, GH);
        break;
    default:
        /* dW_hh += dP.T @ HS */
        FN(gemm)(1, 0, GH, R, (int)rows, (real)1, dP, GH, hs, R, (real)1, dw_hh, R);
        if (db_hh)
            FN(add_column_sums)(db_hh, dP, rows, GH, GH);
        break;
    }
    return FASTRNN_OK;
}
