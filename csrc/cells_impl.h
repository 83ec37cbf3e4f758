/* cells_impl.h -- the fused elementwise part of one time step for one batch
 * row, forward and backward side by side, written once over `real`.
 *
 * The matrix products are done by the caller (layer_impl.h):
 *   gates  (G*H)  in: x W_ih^T + b_ih for this row; out: post-activation gates
 *                 (kept as the training cache)
 *   rec    (G*H)  h_{t-1} W_hh^T + b_hh for this row
 * Backward gets the gates back and produces the pre-activation gradients
 * dpre (G*H); the caller adds dpre W_hh to dh and runs the weight GEMMs.
 * Row buffers never alias (restrict), so every row loop vectorizes.
 * On return, dh and dc hold the direct part of the gradient of h_{t-1} and
 * c_{t-1} (everything but the dpre W_hh term). */

/* ---------------------------------------------------------------- RNN */

/* h = act(gates + rec), act = tanh or relu */
static void FN(rnn_forward_row)(real *restrict gates, real *restrict h, const real *restrict rec, int H, int relu)
{
    for (int j = 0; j < H; j++) {
        real v = gates[j] + rec[j];
        h[j] = gates[j] = relu ? FN(relu)(v) : TANH(v);
    }
}

/* dh (H) in: dL/dh_t; out: 0 (h_{t-1} reaches h_t only through W_hh)
 * gates (H): h_t */
static void FN(rnn_backward_row)(real *restrict dpre, real *restrict dh, const real *restrict gates, int H, int relu)
{
    for (int j = 0; j < H; j++) {
        /* backprop through act: h = act(v) */
        dpre[j] = dh[j] * (relu ? FN(drelu)(gates[j]) : FN(dtanh)(gates[j]));
        dh[j] = (real)0;
    }
}

/* --------------------------------------------------------------- LSTM */

/* gates (4H) out: i, f, g, o; c (H) in: c_{t-1}, out: c_t; h (H) out: h_t */
static void FN(lstm_forward_row)(real *restrict gates, real *restrict h, real *restrict c, const real *restrict rec, int H)
{
    real *gi = gates, *gf = gates + H, *gg = gates + 2 * H, *go = gates + 3 * H;
    const real *ri = rec, *rf = rec + H, *rg = rec + 2 * H, *ro = rec + 3 * H;
    for (int j = 0; j < H; j++) {
        real i = FN(sigmoid)(gi[j] + ri[j]);
        real f = FN(sigmoid)(gf[j] + rf[j]);
        real g = TANH(gg[j] + rg[j]);
        real o = FN(sigmoid)(go[j] + ro[j]);
        c[j] = f * c[j] + i * g;
        h[j] = o * TANH(c[j]);
        gi[j] = i; gf[j] = f; gg[j] = g; go[j] = o;
    }
}

/* dh (H) in: dL/dh_t, out: 0; dc (H) in: dL/dc_t (from step t+1), out: dL/dc_{t-1}
 * gates (4H): i, f, g, o; c_prev (H): c_{t-1} */
static void FN(lstm_backward_row)(real *restrict dpre, real *restrict dh, real *restrict dc, const real *restrict gates,
                                  const real *restrict c_prev, int H)
{
    const real *gi = gates, *gf = gates + H, *gg = gates + 2 * H, *go = gates + 3 * H;
    real *di = dpre, *df = dpre + H, *dg = dpre + 2 * H, *dout = dpre + 3 * H;
    for (int j = 0; j < H; j++) {
        real i = gi[j], f = gf[j], g = gg[j], o = go[j];
        /* recompute tanh(c_t) from c_t = f*c_{t-1} + i*g */
        real tc = TANH(f * c_prev[j] + i * g);
        /* backprop through h = o * tanh(c) */
        real dct = dc[j] + dh[j] * o * FN(dtanh)(tc);
        /* backprop through c = f*c_prev + i*g, then through each gate's activation */
        di[j] = dct * g * FN(dsigmoid)(i);
        df[j] = dct * c_prev[j] * FN(dsigmoid)(f);
        dg[j] = dct * i * FN(dtanh)(g);
        dout[j] = dh[j] * tc * FN(dsigmoid)(o);
        dc[j] = dct * f;
        dh[j] = (real)0;
    }
}

/* ---------------------------------------------------------------- GRU */

/* Reset after (PyTorch): gates (3H) out: r, z, n; rec (3H) includes b_hh, so
 * rec_n = h W_hn^T + b_hn is kept by the caller for backward.
 * h = (1 - z) * n + z * h_{t-1} */
static void FN(gru_forward_row)(real *restrict gates, real *restrict h, const real *restrict rec, int H)
{
    real *gr = gates, *gz = gates + H, *gn = gates + 2 * H;
    const real *rr = rec, *rz = rec + H, *rn = rec + 2 * H;
    for (int j = 0; j < H; j++) {
        real r = FN(sigmoid)(gr[j] + rr[j]);
        real z = FN(sigmoid)(gz[j] + rz[j]);
        real n = TANH(gn[j] + r * rn[j]);
        h[j] = ((real)1 - z) * n + z * h[j];
        gr[j] = r; gz[j] = z; gn[j] = n;
    }
}

/* dpre (3H): input-side pre-activation gradients (for dx, dW_ih, db_ih);
 * dpre_rec (3H): recurrent side (for dh_{t-1}, dW_hh, db_hh), which differs
 * in the n block because r multiplies the recurrent n-term.
 * dh (H) in: dL/dh_t, out: z * dL/dh_t; rec_n (H): h_{t-1} W_hn^T + b_hn */
static void FN(gru_backward_row)(real *restrict dpre, real *restrict dpre_rec, real *restrict dh, const real *restrict gates,
                                 const real *restrict h_prev, const real *restrict rec_n, int H)
{
    const real *gr = gates, *gz = gates + H, *gn = gates + 2 * H;
    for (int j = 0; j < H; j++) {
        real r = gr[j], z = gz[j], n = gn[j];
        /* backprop through h = (1-z)*n + z*h_prev */
        real dn = dh[j] * ((real)1 - z);
        real dz = dh[j] * (h_prev[j] - n);
        /* backprop through n = tanh(xn + r*rec_n) */
        real dn_pre = dn * FN(dtanh)(n);
        real dr = dn_pre * rec_n[j];
        /* backprop through the sigmoids of r and z */
        dpre[j] = dpre_rec[j] = dr * FN(dsigmoid)(r);
        dpre[H + j] = dpre_rec[H + j] = dz * FN(dsigmoid)(z);
        dpre[2 * H + j] = dn_pre;
        dpre_rec[2 * H + j] = dn_pre * r;
        dh[j] = dh[j] * z;
    }
}

/* Reset before: two passes around the product (r*h) W_hn^T.
 * Pass 1: gates (3H) r, z out; rh (H) out: r * h_{t-1} */
static void FN(gru_rb_forward_gates_row)(real *restrict gates, real *restrict rh, const real *restrict h,
                                         const real *restrict rec, int H)
{
    for (int j = 0; j < H; j++) {
        real r = FN(sigmoid)(gates[j] + rec[j]);
        gates[H + j] = FN(sigmoid)(gates[H + j] + rec[H + j]);
        gates[j] = r;
        rh[j] = r * h[j];
    }
}

/* Pass 2: rec_n (H) = (r*h) W_hn^T + b_hn; gates n out; h = (1-z)*n + z*h */
static void FN(gru_rb_forward_output_row)(real *restrict gates, real *restrict h, const real *restrict rec_n, int H)
{
    const real *gz = gates + H;
    real *gn = gates + 2 * H;
    for (int j = 0; j < H; j++) {
        real n = TANH(gn[j] + rec_n[j]);
        h[j] = ((real)1 - gz[j]) * n + gz[j] * h[j];
        gn[j] = n;
    }
}

/* Pass 1 of backward: dpre z and n blocks; dh (H) in: dL/dh_t, out: z*dL/dh_t */
static void FN(gru_rb_backward_zn_row)(real *restrict dpre, real *restrict dh, const real *restrict gates,
                                       const real *restrict h_prev, int H)
{
    const real *gz = gates + H, *gn = gates + 2 * H;
    for (int j = 0; j < H; j++) {
        real z = gz[j], n = gn[j];
        /* backprop through h = (1-z)*n + z*h_prev, then the activations */
        dpre[H + j] = dh[j] * (h_prev[j] - n) * FN(dsigmoid)(z);
        dpre[2 * H + j] = dh[j] * ((real)1 - z) * FN(dtanh)(n);
        dh[j] = dh[j] * z;
    }
}

/* Pass 2: drh (H) = dn_pre W_hn, the gradient of r*h_{t-1};
 * dpre r block out; dh += r * drh */
static void FN(gru_rb_backward_r_row)(real *restrict dpre, real *restrict dh, const real *restrict gates,
                                      const real *restrict h_prev, const real *restrict drh, int H)
{
    for (int j = 0; j < H; j++) {
        real r = gates[j];
        /* backprop through rh = r * h_prev */
        dpre[j] = drh[j] * h_prev[j] * FN(dsigmoid)(r);
        dh[j] += drh[j] * r;
    }
}
