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

/* Where P (the input projection) lives: row (t, b) is (t - t0)*pst + b*psb. */
typedef struct {
    real *p;     /* (rows, G*H) */
    int t0;      /* first step held */
    size_t pst;  /* row stride of t */
    size_t psb;  /* row stride of b */
} FN(proj);

/* P rows of steps [t0, t1) = X W_ih^T + b_ih (inference chunk, time-major) */
static void FN(project_chunk)(FN(proj) *P, const real *x, const real *w_ih,
                              const real *b_ih, int t0, int t1, const fastrnn_layer *L)
{
    int B = L->B, I = L->I, GH = fastrnn_num_gates(L->cell) * L->H;
    real beta = b_ih ? (real)1 : (real)0;
    P->t0 = t0;
    FN(fill_rows)(P->p, (t1 - t0) * B, GH, GH, b_ih);
    if (!L->batch_first || B == 1) {
        /* P[t0:t1] = X[t0:t1] @ W_ih.T  (contiguous rows) */
        FN(gemm)(0, 1, (t1 - t0) * B, GH, I, (real)1, x + (size_t)t0 * B * I, I,
                 w_ih, I, beta, P->p, GH);
    } else {
        /* batch-first: P[t] = X[:, t] @ W_ih.T, rows b strided by T */
        for (int t = t0; t < t1; t++)
            FN(gemm)(0, 1, B, GH, I, (real)1, x + (size_t)t * I, L->T * I,
                     w_ih, I, beta, P->p + (size_t)(t - t0) * B * GH, GH);
    }
}

/* One step at time t for the n active slots: recurrent GEMM + fused pass.
 * h, c (B, H) slot-ordered state; rec (B, G*H) scratch; rh (B, H) scratch
 * (GRU reset before). cache (NULL in inference) gets hs/cs/extra rows. */
static void FN(forward_step)(real *y, real *h, real *c, real *rec, real *rh,
                             real *cache_hs, real *cache_extra, const FN(proj) *P,
                             const real *w_hh, const real *b_hh, const int *order,
                             int t, int n, const fastrnn_layer *L)
{
    int B = L->B, H = L->H, GH = fastrnn_num_gates(L->cell) * H;
    int cell = L->cell, training = cache_hs != NULL;
    int rec_w = cell == FASTRNN_GRU_RESET_BEFORE ? 2 * H : GH;  /* r, z only */
    real beta = b_hh ? (real)1 : (real)0;

    /* rec[:n] = h[:n] @ W_hh.T + b_hh  (GRU reset before: r and z blocks) */
    FN(fill_rows)(rec, n, rec_w, GH, b_hh);
    FN(gemm)(0, 1, n, rec_w, H, (real)1, h, H, w_hh, H, beta, rec, GH);

    for (int i = 0; i < n; i++) {
        int b = slot_row(order, i);
        size_t row = mem_row(L, t, b);
        real *gates = P->p + (size_t)(t - P->t0) * P->pst * GH + (size_t)b * P->psb * GH;
        real *hi = h + (size_t)i * H, *ri = rec + (size_t)i * GH;
        if (training) {
            for (int j = 0; j < H; j++)
                cache_hs[row * H + j] = hi[j];
            if (cell == FASTRNN_LSTM)
                for (int j = 0; j < H; j++)
                    cache_extra[row * H + j] = c[(size_t)i * H + j];
        }
        switch (cell) {
        case FASTRNN_RNN_TANH:
        case FASTRNN_RNN_RELU:
            FN(rnn_forward_row)(gates, hi, ri, H, cell == FASTRNN_RNN_RELU);
            break;
        case FASTRNN_LSTM:
            FN(lstm_forward_row)(gates, hi, c + (size_t)i * H, ri, H);
            break;
        case FASTRNN_GRU:
            if (training)
                for (int j = 0; j < H; j++)
                    cache_extra[row * H + j] = ri[2 * H + j];
            FN(gru_forward_row)(gates, hi, ri, H);
            break;
        case FASTRNN_GRU_RESET_BEFORE:
            FN(gru_rb_forward_gates_row)(gates, rh + (size_t)i * H, hi, ri, H);
            if (training)
                for (int j = 0; j < H; j++)
                    cache_extra[row * H + j] = rh[(size_t)i * H + j];
            break;
        }
    }

    if (cell == FASTRNN_GRU_RESET_BEFORE) {
        /* rec[:n, 2H:] = (r*h)[:n] @ W_hn.T + b_hn */
        FN(fill_rows)(rec + 2 * H, n, H, GH, b_hh ? b_hh + 2 * H : NULL);
        FN(gemm)(0, 1, n, H, H, (real)1, rh, H, w_hh + (size_t)2 * H * H, H, beta,
                 rec + 2 * H, GH);
        for (int i = 0; i < n; i++) {
            int b = slot_row(order, i);
            real *gates = P->p + (size_t)(t - P->t0) * P->pst * GH + (size_t)b * P->psb * GH;
            FN(gru_rb_forward_output_row)(gates, h + (size_t)i * H, rec + (size_t)i * GH + 2 * H, H);
        }
    }

    /* y[t, b] = h_t for active rows, zeros for the rest */
    for (int i = 0; i < B; i++) {
        int b = slot_row(order, i);
        size_t row = mem_row(L, t, b);
        real *yrow = y + row * L->ldy;
        for (int j = 0; j < H; j++)
            yrow[j] = i < n ? h[(size_t)i * H + j] : (real)0;
        if (training && i >= n) {
            /* inactive rows take part in the weight GEMMs with dP = 0: keep them finite */
            for (int j = 0; j < H; j++)
                cache_hs[row * H + j] = (real)0;
            if (cache_extra)
                for (int j = 0; j < H; j++)
                    cache_extra[row * H + j] = (real)0;
        }
    }
}

int FN(fastrnn_forward)(real *y, real *h_n, real *c_n, real *cache, real *work,
                        const real *x, const real *h0, const real *c0,
                        const real *w_ih, const real *w_hh,
                        const real *b_ih, const real *b_hh,
                        const int *lengths, const int *order, const fastrnn_layer *L)
{
    int G = fastrnn_num_gates(L->cell);
    if (G == 0 || L->T < 1 || L->B < 1 || L->I < 1 || L->H < 1 || L->ldy < L->H
        || (lengths && !order))
        return FASTRNN_ERR_ARGUMENT;
    int T = L->T, B = L->B, H = L->H, GH = G * H;
    int lstm = L->cell == FASTRNN_LSTM, training = cache != NULL;
    size_t rows = (size_t)T * B;

    /* work: h (B,H) | rec (B,GH) | c (B,H) LSTM | rh (B,H) GRU-RB | P chunk */
    real *h = work, *rec = h + (size_t)B * H, *next = rec + (size_t)B * GH;
    real *c = NULL, *rh = NULL;
    if (lstm) { c = next; next += (size_t)B * H; }
    if (L->cell == FASTRNN_GRU_RESET_BEFORE) { rh = next; next += (size_t)B * H; }

    /* cache: gates (rows,GH) | hs (rows,H) | cs or GRU extra (rows,H) */
    real *cache_hs = NULL, *cache_extra = NULL;
    FN(proj) P;
    int chunk;
    if (training) {
        cache_hs = cache + rows * GH;
        if (lstm || G == 3)
            cache_extra = cache_hs + rows * H;
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
        for (int j = 0; j < H; j++) {
            h[(size_t)i * H + j] = h0[(size_t)b * H + j];
            if (lstm)
                c[(size_t)i * H + j] = c0[(size_t)b * H + j];
        }
    }

    int nchunks = (T + chunk - 1) / chunk;
    for (int k = 0; k < nchunks; k++) {
        int t0 = (L->reverse ? nchunks - 1 - k : k) * chunk;
        int t1 = t0 + chunk < T ? t0 + chunk : T;
        if (training) {
            /* P = X @ W_ih.T + b_ih, all steps in memory order */
            FN(fill_rows)(P.p, (int)rows, GH, GH, b_ih);
            FN(gemm)(0, 1, (int)rows, GH, L->I, (real)1, x, L->I, w_ih, L->I,
                     b_ih ? (real)1 : (real)0, P.p, GH);
            P.t0 = 0;
        } else {
            FN(project_chunk)(&P, x, w_ih, b_ih, t0, t1, L);
        }
        for (int s = 0; s < t1 - t0; s++) {
            int t = L->reverse ? t1 - 1 - s : t0 + s;
            int n = active_slots(lengths, order, B, t);
            FN(forward_step)(y, h, c, rec, rh, cache_hs, cache_extra, &P, w_hh, b_hh,
                             order, t, n, L);
        }
    }

    for (int i = 0; i < B; i++) {
        int b = slot_row(order, i);
        for (int j = 0; j < H; j++) {
            h_n[(size_t)b * H + j] = h[(size_t)i * H + j];
            if (lstm)
                c_n[(size_t)b * H + j] = c[(size_t)i * H + j];
        }
    }
    return FASTRNN_OK;
}

/* =========================================================== Backward */

int FN(fastrnn_backward)(real *dx, real *dh0, real *dc0,
                         real *dw_ih, real *dw_hh, real *db_ih, real *db_hh,
                         real *work, int accumulate_dx,
                         const real *dy, const real *dh_n, const real *dc_n,
                         const real *cache, const real *x,
                         const real *w_ih, const real *w_hh,
                         const int *lengths, const int *order, const fastrnn_layer *L)
{
    int G = fastrnn_num_gates(L->cell);
    if (G == 0 || L->T < 1 || L->B < 1 || L->I < 1 || L->H < 1 || L->ldy < L->H
        || (lengths && !order))
        return FASTRNN_ERR_ARGUMENT;
    if (cache == NULL)
        return FASTRNN_ERR_NO_CACHE;
    int T = L->T, B = L->B, I = L->I, H = L->H, GH = G * H, cell = L->cell;
    int lstm = cell == FASTRNN_LSTM;
    size_t rows = (size_t)T * B;

    const real *gates_all = cache, *hs = cache + rows * GH, *extra = hs + rows * H;

    /* work: dh (B,H) | drec (B,GH) slots | dP (rows,GH) memory order
     *       | dc (B,H) LSTM | dPn_rec (rows,H) GRU | drh (B,H) GRU-RB */
    real *dh = work, *drec = dh + (size_t)B * H, *dP = drec + (size_t)B * GH;
    real *next = dP + rows * GH, *dc = NULL, *dPn_rec = NULL, *drh = NULL;
    if (lstm) { dc = next; next += (size_t)B * H; }
    if (cell == FASTRNN_GRU) { dPn_rec = next; next += rows * H; }
    if (cell == FASTRNN_GRU_RESET_BEFORE) { drh = next; next += (size_t)B * H; }

    for (int i = 0; i < B; i++) {
        int b = slot_row(order, i);
        for (int j = 0; j < H; j++) {
            dh[(size_t)i * H + j] = dh_n ? dh_n[(size_t)b * H + j] : (real)0;
            if (lstm)
                dc[(size_t)i * H + j] = dc_n ? dc_n[(size_t)b * H + j] : (real)0;
        }
    }

    for (int s = 0; s < T; s++) {
        /* reverse of the forward's order */
        int t = L->reverse ? s : T - 1 - s;
        int n = active_slots(lengths, order, B, t);
        for (int i = 0; i < B; i++) {
            int b = slot_row(order, i);
            size_t row = mem_row(L, t, b);
            real *dpre = dP + row * GH;
            if (i >= n) {
                /* inactive: no gradient reaches the parameters or x */
                for (int j = 0; j < GH; j++)
                    dpre[j] = (real)0;
                if (dPn_rec)
                    for (int j = 0; j < H; j++)
                        dPn_rec[row * H + j] = (real)0;
                continue;
            }
            real *dhi = dh + (size_t)i * H, *dri = drec + (size_t)i * GH;
            const real *gates = gates_all + row * GH, *h_prev = hs + row * H;
            if (dy)
                for (int j = 0; j < H; j++)
                    dhi[j] += dy[row * L->ldy + j];
            switch (cell) {
            case FASTRNN_RNN_TANH:
            case FASTRNN_RNN_RELU:
                FN(rnn_backward_row)(dri, dhi, gates, H, cell == FASTRNN_RNN_RELU);
                break;
            case FASTRNN_LSTM:
                FN(lstm_backward_row)(dri, dhi, dc + (size_t)i * H, gates, extra + row * H, H);
                break;
            case FASTRNN_GRU:
                FN(gru_backward_row)(dpre, dri, dhi, gates, h_prev, extra + row * H, H);
                for (int j = 0; j < H; j++)
                    dPn_rec[row * H + j] = dri[2 * H + j];
                break;
            case FASTRNN_GRU_RESET_BEFORE:
                FN(gru_rb_backward_zn_row)(dri, dhi, gates, h_prev, H);
                break;
            }
        }

        if (cell == FASTRNN_GRU_RESET_BEFORE) {
            /* drh[:n] = dn_pre[:n] @ W_hn */
            FN(gemm)(0, 0, n, H, H, (real)1, drec + 2 * H, GH, w_hh + (size_t)2 * H * H, H,
                     (real)0, drh, H);
            for (int i = 0; i < n; i++) {
                size_t row = mem_row(L, t, slot_row(order, i));
                FN(gru_rb_backward_r_row)(drec + (size_t)i * GH, dh + (size_t)i * H,
                                          gates_all + row * GH, hs + row * H,
                                          drh + (size_t)i * H, H);
            }
            /* dh[:n] += dP_rz[:n] @ W_hh[:2H] */
            FN(gemm)(0, 0, n, H, 2 * H, (real)1, drec, GH, w_hh, H, (real)1, dh, H);
        } else {
            /* dh[:n] += dP_rec[:n] @ W_hh */
            FN(gemm)(0, 0, n, H, GH, (real)1, drec, GH, w_hh, H, (real)1, dh, H);
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
        for (int j = 0; j < H; j++) {
            dh0[(size_t)b * H + j] = dh[(size_t)i * H + j];
            if (lstm)
                dc0[(size_t)b * H + j] = dc[(size_t)i * H + j];
        }
    }

    /* dX = dP @ W_ih  (added to the other direction's when accumulating) */
    FN(gemm)(0, 0, (int)rows, I, GH, (real)1, dP, GH, w_ih, I,
             accumulate_dx ? (real)1 : (real)0, dx, I);
    /* dW_ih += dP.T @ X */
    FN(gemm)(1, 0, GH, I, (int)rows, (real)1, dP, GH, x, I, (real)1, dw_ih, I);
    if (db_ih)
        FN(add_column_sums)(db_ih, dP, rows, GH, GH);

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
        FN(gemm)(1, 0, GH, H, (int)rows, (real)1, dP, GH, hs, H, (real)1, dw_hh, H);
        if (db_hh)
            FN(add_column_sums)(db_hh, dP, rows, GH, GH);
        break;
    }
    return FASTRNN_OK;
}
