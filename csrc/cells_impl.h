/* cells_impl.h -- the fused elementwise part of one time step for one batch
 * row, forward and backward side by side, written once over `real`.
 *
 * The matrix products are done by the caller (layer_impl.h):
 *   gates  (G*H)  in: x W_ih^T + b_ih for this row; out: post-activation gates
 *                 (kept as the training cache)
 *   rec    (G*H)  h_{t-1} W_hh^T + b_hh for this row
 * Backward gets the gates back and produces the pre-activation gradients
 * dpre (G*H); the caller adds dpre W_hh to dh and runs the weight GEMMs.
 * IndRNN has no recurrent product: its rows take u (H) instead of rec.
 * Row buffers never alias (restrict), so every row loop vectorizes.
 * On return, dh and dc hold the direct part of the gradient of h_{t-1} and
 * c_{t-1} (everything but the dpre W_hh term). */
/* Macro contract: real, FN(name) and TANH as activations.h, which comes first. */
#if !defined(real) || !defined(FN) || !defined(TANH)
#error "cells_impl.h needs real, FN and TANH: include it through kernels_f32.c or kernels_f64.c"
#endif


/* ---------------------------------------------------------------- RNN */

/* h = act(gates + rec), act = tanh or relu. One loop per activation: with
 * the choice inside, GCC computed both and blended (relu paid for a tanh). */
static void FN(rnn_forward_row)(real *restrict gates, real *restrict h, const real *restrict rec, int H, int relu)
{
    if (relu) {
        for (int j = 0; j < H; j++)
            h[j] = gates[j] = FN(relu)(gates[j] + rec[j]);
    } else {
        for (int j = 0; j < H; j++)
            h[j] = gates[j] = TANH(gates[j] + rec[j]);
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

/* ------------------------------------------------------------- IndRNN */

/* h = act(gates + u * h_{t-1}), act = tanh or relu; gates (H) hold
 * x W_ih^T + b_ih + b_hh (the caller folds both biases into the projection)
 * and get h_t; h (H) in: h_{t-1}, out: h_t; y (H) the output row, also h_t
 * (written here: one sweep instead of a second one copying h); u (H) the
 * recurrent weights. No GEMM: the recurrence is elementwise, so each unit
 * depends on its own past only.
 * One loop per activation: with the choice inside, GCC computed both and
 * blended, and relu paid for a vector tanh (half the loop's time). */
static void FN(indrnn_forward_row)(real *restrict gates, real *restrict h, real *restrict y,
                                   const real *restrict u, int H, int relu)
{
    if (relu) {
        for (int j = 0; j < H; j++)
            y[j] = h[j] = gates[j] = FN(relu)(gates[j] + u[j] * h[j]);
    } else {
        for (int j = 0; j < H; j++)
            y[j] = h[j] = gates[j] = TANH(gates[j] + u[j] * h[j]);
    }
}

/* dh (H) in: dL/dh_t; out: the whole of dL/dh_{t-1} (no dpre W_hh term follows)
 * gates (H): h_t; u (H) */
static void FN(indrnn_backward_row)(real *restrict dpre, real *restrict dh, const real *restrict gates,
                                    const real *restrict u, int H, int relu)
{
    for (int j = 0; j < H; j++) {
        /* backprop through act: h = act(v) */
        dpre[j] = dh[j] * (relu ? FN(drelu)(gates[j]) : FN(dtanh)(gates[j]));
        /* backprop through v = ... + u * h_{t-1} */
        dh[j] = dpre[j] * u[j];
    }
}

/* --------------------------------------------------------------- LSTM */

/* gates (4H) out: i, f, g, o; c (H) in: c_{t-1}, out: c_t; h (H) out: h_t.
 * Units [0, n) of gate blocks H apart (n < H: a thread's share of the units) */
static void FN(lstm_forward_row)(real *restrict gates, real *restrict h, real *restrict c, const real *restrict rec,
                                 int n, int H)
{
    real *gi = gates, *gf = gates + H, *gg = gates + 2 * H, *go = gates + 3 * H;
    const real *ri = rec, *rf = rec + H, *rg = rec + 2 * H, *ro = rec + 3 * H;
    for (int j = 0; j < n; j++) {
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
 * gates (4H): i, f, g, o; c_prev (H): c_{t-1}. Units [0, n) of gate blocks H apart */
static void FN(lstm_backward_row)(real *restrict dpre, real *restrict dh, real *restrict dc, const real *restrict gates,
                                  const real *restrict c_prev, int n, int H)
{
    const real *gi = gates, *gf = gates + H, *gg = gates + 2 * H, *go = gates + 3 * H;
    real *di = dpre, *df = dpre + H, *dg = dpre + 2 * H, *dout = dpre + 3 * H;
    for (int j = 0; j < n; j++) {
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
 * h = (1 - z) * n + z * h_{t-1}, units [0, units) of gate blocks H apart */
static void FN(gru_forward_row)(real *restrict gates, real *restrict h, const real *restrict rec, int units,
                                int H)
{
    real *gr = gates, *gz = gates + H, *gn = gates + 2 * H;
    const real *rr = rec, *rz = rec + H, *rn = rec + 2 * H;
    for (int j = 0; j < units; j++) {
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
                                 const real *restrict h_prev, const real *restrict rec_n, int units,
                                 int H)
{
    const real *gr = gates, *gz = gates + H, *gn = gates + 2 * H;
    for (int j = 0; j < units; j++) {
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

/* ------------------------------------------------------------ Zoneout */

/* v (n) in: the step's new values; out: zoned out (Krueger et al. 2016).
 * With keep (n) a mask: v = keep ? prev : v; without, the expectation
 * v = p * prev + (1 - p) * v (p = 0: unchanged). prev (n): the step's input state */
static void FN(zoneout_row)(real *restrict v, const real *restrict prev,
                            const unsigned char *restrict keep, double p, int n)
{
    if (keep) {
        for (int j = 0; j < n; j++)
            v[j] = keep[j] ? prev[j] : v[j];
    } else if (p > 0) {
        real a = (real)p, b = (real)(1 - p);
        for (int j = 0; j < n; j++)
            v[j] = a * prev[j] + b * v[j];
    }
}

/* Backward of zoneout_row: d (n) in: dL/dv_t, out: the new value's share;
 * dprev (n) out: the direct gradient of prev */
static void FN(zoneout_backward_row)(real *restrict d, real *restrict dprev,
                                     const unsigned char *restrict keep, double p, int n)
{
    if (keep) {
        for (int j = 0; j < n; j++) {
            dprev[j] = keep[j] ? d[j] : (real)0;
            d[j] = keep[j] ? (real)0 : d[j];
        }
    } else {
        real a = (real)p, b = (real)(1 - p);
        for (int j = 0; j < n; j++) {
            dprev[j] = a * d[j];
            d[j] = b * d[j];
        }
    }
}

/* ------------------------------------------------ Layer normalization
 * (Ba et al. 2016) of one row over n columns: x^ = (a - mean) * rstd with
 * rstd = 1 / sqrt(var + FASTRNN_LN_EPS), the biased variance (two passes:
 * no cancellation), then x^ * gain + shift. The row sums run on four vector
 * accumulators: a scalar sum is a chain of dependent adds (GCC may not
 * reorder them without -ffast-math), which cost more than the step's gate
 * math at H = 256. */

/* The sum over j < n of a[j] * (b ? b[j] : 1) - m, squared when sq */
static real FN(row_reduce)(const real *restrict a, const real *restrict b, real m, int sq,
                           int n)
{
    vreal acc[4] = {{0}, {0}, {0}, {0}}, vm = (vreal){0} + m;
    int j = 0;
    for (; j + 4 * VL <= n; j += 4 * VL)
        for (int k = 0; k < 4; k++) {
            vreal v = FN(vload)(a + j + k * VL);
            if (b)
                v *= FN(vload)(b + j + k * VL);
            v -= vm;
            acc[k] += sq ? v * v : v;
        }
    acc[0] += acc[1] + acc[2] + acc[3];
    real total = 0;
    for (int k = 0; k < VL; k++)
        total += acc[0][k];
    for (; j < n; j++) {
        real v = a[j] * (b ? b[j] : (real)1) - m;
        total += sq ? v * v : v;
    }
    return total;
}

/* rstd of a (n), and its mean in *mean */
static real FN(row_moments)(const real *restrict a, int n, real *mean)
{
    *mean = FN(row_reduce)(a, NULL, 0, 0, n) / (real)n;
    real var = FN(row_reduce)(a, NULL, *mean, 1, n) / (real)n;
    return (real)1 / (real)sqrt((double)var + FASTRNN_LN_EPS);
}

/* a (n) in: the row, out: x^ * gain + shift (shift NULL: none); xn (n) out:
 * x^, or NULL (inference). Returns rstd. */
static real FN(layer_norm_row)(real *restrict a, real *restrict xn, const real *restrict gain,
                               const real *restrict shift, int n)
{
    real mean, rstd = FN(row_moments)(a, n, &mean);
    if (xn)
        for (int j = 0; j < n; j++)
            xn[j] = (a[j] - mean) * rstd;
    if (shift)
        for (int j = 0; j < n; j++)
            a[j] = (a[j] - mean) * rstd * gain[j] + shift[j];
    else
        for (int j = 0; j < n; j++)
            a[j] = (a[j] - mean) * rstd * gain[j];
    return rstd;
}

/* Backward of layer_norm_row: d (n) in: the gradient of its output, out:
 * the gradient of its input a; dgain (n) += d * x^ (NULL: not wanted). The
 * shift's gradient is d itself, summed by the caller. */
static void FN(layer_norm_backward_row)(real *restrict d, const real *restrict xn,
                                        const real *restrict gain, real rstd,
                                        real *restrict dgain, int n)
{
    if (dgain)
        for (int j = 0; j < n; j++)
            dgain[j] += d[j] * xn[j];
    for (int j = 0; j < n; j++)
        d[j] *= gain[j];              /* the gradient of x^ */
    /* through the mean and the variance */
    real m1 = FN(row_reduce)(d, NULL, 0, 0, n) / (real)n;
    real m2 = FN(row_reduce)(d, xn, 0, 0, n) / (real)n;
    for (int j = 0; j < n; j++)
        d[j] = rstd * (d[j] - m1 - xn[j] * m2);
}

/* The LSTM with a normalized cell state: as lstm_forward_row, then
 * h = o * tanh(LN(c_t) * gain + shift). cn (H) out: LN's x^ of c_t, or NULL
 * (inference). Returns LN's rstd. gain, shift (H). */
static real FN(lstm_ln_forward_row)(real *restrict gates, real *restrict h, real *restrict c,
                                    const real *restrict rec, const real *restrict gain,
                                    const real *restrict shift, real *restrict cn, int H)
{
    real *gi = gates, *gf = gates + H, *gg = gates + 2 * H, *go = gates + 3 * H;
    const real *ri = rec, *rf = rec + H, *rg = rec + 2 * H, *ro = rec + 3 * H;
    for (int j = 0; j < H; j++) {
        real i = FN(sigmoid)(gi[j] + ri[j]);
        real f = FN(sigmoid)(gf[j] + rf[j]);
        real g = TANH(gg[j] + rg[j]);
        gi[j] = i; gf[j] = f; gg[j] = g; go[j] = FN(sigmoid)(go[j] + ro[j]);
        c[j] = f * c[j] + i * g;
    }
    real mean, rstd = FN(row_moments)(c, H, &mean);
    for (int j = 0; j < H; j++)
        h[j] = go[j] * TANH((c[j] - mean) * rstd * gain[j] + shift[j]);
    if (cn)
        for (int j = 0; j < H; j++)
            cn[j] = (c[j] - mean) * rstd;
    return rstd;
}

/* Backward of lstm_ln_forward_row: as lstm_backward_row, with c_t reaching h
 * through its normalization. cn (H): x^ of c_t; rstd its LN's; gain, shift
 * (H) and their gradients dgain, dshift (H, +=). */
static void FN(lstm_ln_backward_row)(real *restrict dpre, real *restrict dh, real *restrict dc,
                                     const real *restrict gates, const real *restrict c_prev,
                                     const real *restrict cn, real rstd,
                                     const real *restrict gain, const real *restrict shift,
                                     real *restrict dgain, real *restrict dshift, int H)
{
    const real *gi = gates, *gf = gates + H, *gg = gates + 2 * H, *go = gates + 3 * H;
    real *di = dpre, *df = dpre + H, *dg = dpre + 2 * H, *dout = dpre + 3 * H;
    for (int j = 0; j < H; j++) {
        /* backprop through h = o * tanh(s), s = x^ * gain + shift */
        real tc = TANH(cn[j] * gain[j] + shift[j]);
        real ds = dh[j] * go[j] * FN(dtanh)(tc);
        dout[j] = dh[j] * tc * FN(dsigmoid)(go[j]);
        dgain[j] += ds * cn[j];
        dshift[j] += ds;
        di[j] = ds * gain[j];   /* the gradient of x^, kept in di until below */
    }
    real m1 = FN(row_reduce)(di, NULL, 0, 0, H) / (real)H;
    real m2 = FN(row_reduce)(di, cn, 0, 0, H) / (real)H;
    for (int j = 0; j < H; j++) {
        real i = gi[j], f = gf[j], g = gg[j];
        /* through the normalization of c, then c = f*c_prev + i*g and the gates */
        real dct = dc[j] + rstd * (di[j] - m1 - cn[j] * m2);
        di[j] = dct * g * FN(dsigmoid)(i);
        df[j] = dct * c_prev[j] * FN(dsigmoid)(f);
        dg[j] = dct * i * FN(dtanh)(g);
        dc[j] = dct * f;
        dh[j] = (real)0;
    }
}

/* ===================================================== General cells
 * ONNX's options: any activation (L->act), clip, LSTM peepholes and coupled
 * input/forget gates. The cache keeps pre-activations v (their derivatives
 * need them) and backward recomputes the activations from v. The default
 * cells above stay free of these branches. */

/* RNN: h = a0(v), v = gates + rec */
static void FN(rnn_general_forward_row)(real *restrict gates, real *restrict h,
                                        const real *restrict rec, int H, const fastrnn_layer *L)
{
    for (int j = 0; j < H; j++) {
        real v = gates[j] + rec[j];
        gates[j] = v;
        h[j] = FN(gact)(L, 0, v);
    }
}

static void FN(rnn_general_backward_row)(real *restrict dpre, real *restrict dh,
                                         const real *restrict gates, int H, const fastrnn_layer *L)
{
    for (int j = 0; j < H; j++) {
        dpre[j] = dh[j] * FN(dgact)(L, 0, gates[j]);   /* backprop through h = a0(v) */
        dh[j] = (real)0;
    }
}

/* LSTM: i = f(vi), f = f(vf) or 1 - i, g = g(vg), c = f*c_prev + i*g,
 * o = f(vo), h = o * h(c); peepholes add p_i*c_prev, p_f*c_prev, p_o*c to
 * vi, vf, vo. gates (4H) out: vi, vf, vg, vo. */
static void FN(lstm_general_forward_row)(real *restrict gates, real *restrict h,
                                         real *restrict c, const real *restrict rec,
                                         const real *restrict peep, int H, const fastrnn_layer *L)
{
    for (int j = 0; j < H; j++) {
        real cp = c[j];
        real vi = gates[j] + rec[j] + (peep ? peep[j] * cp : (real)0);
        real vf = gates[H + j] + rec[H + j] + (peep ? peep[H + j] * cp : (real)0);
        real vg = gates[2 * H + j] + rec[2 * H + j];
        real i = FN(gact)(L, 0, vi);
        real f = L->input_forget ? (real)1 - i : FN(gact)(L, 0, vf);
        real cn = f * cp + i * FN(gact)(L, 1, vg);
        real vo = gates[3 * H + j] + rec[3 * H + j] + (peep ? peep[2 * H + j] * cn : (real)0);
        c[j] = cn;
        h[j] = FN(gact)(L, 0, vo) * FN(act_apply)(&L->act[2], cn);   /* h(c) is not clipped */
        gates[j] = vi; gates[H + j] = vf; gates[2 * H + j] = vg; gates[3 * H + j] = vo;
    }
}

/* dpeep (3H) accumulates the peephole gradients (NULL without peepholes) */
static void FN(lstm_general_backward_row)(real *restrict dpre, real *restrict dh,
                                          real *restrict dc, const real *restrict gates,
                                          const real *restrict c_prev, const real *restrict peep,
                                          real *restrict dpeep, int H, const fastrnn_layer *L)
{
    for (int j = 0; j < H; j++) {
        real vi = gates[j], vf = gates[H + j], vg = gates[2 * H + j], vo = gates[3 * H + j];
        real cp = c_prev[j];
        /* recompute the step from its pre-activations */
        real i = FN(gact)(L, 0, vi);
        real f = L->input_forget ? (real)1 - i : FN(gact)(L, 0, vf);
        real g = FN(gact)(L, 1, vg);
        real cn = f * cp + i * g;
        real o = FN(gact)(L, 0, vo);
        /* backprop through h = o * h(c), o = f(vo) with vo seeing p_o * c */
        real dvo = dh[j] * FN(act_apply)(&L->act[2], cn) * FN(dgact)(L, 0, vo);
        real dct = dc[j] + dh[j] * o * FN(act_grad)(&L->act[2], cn)
                   + (peep ? dvo * peep[2 * H + j] : (real)0);
        /* backprop through c = f*c_prev + i*g (f = 1 - i when coupled) */
        real di = dct * g, df = dct * cp;
        if (L->input_forget) {
            di -= df;
            df = (real)0;
        }
        real dvi = di * FN(dgact)(L, 0, vi);
        real dvf = L->input_forget ? (real)0 : df * FN(dgact)(L, 0, vf);
        dpre[j] = dvi;
        dpre[H + j] = dvf;
        dpre[2 * H + j] = dct * i * FN(dgact)(L, 1, vg);
        dpre[3 * H + j] = dvo;
        dc[j] = dct * f + (peep ? dvi * peep[j] + dvf * peep[H + j] : (real)0);
        if (dpeep) {
            dpeep[j] += dvi * cp;
            dpeep[H + j] += dvf * cp;
            dpeep[2 * H + j] += dvo * cn;
        }
        dh[j] = (real)0;
    }
}

/* GRU, reset after: vr, vz, vn = xn + r*rec_n; h = (1-z)*n + z*h_prev */
static void FN(gru_general_forward_row)(real *restrict gates, real *restrict h,
                                        const real *restrict rec, int H, const fastrnn_layer *L)
{
    for (int j = 0; j < H; j++) {
        real vr = gates[j] + rec[j], vz = gates[H + j] + rec[H + j];
        real r = FN(gact)(L, 0, vr), z = FN(gact)(L, 0, vz);
        real vn = gates[2 * H + j] + r * rec[2 * H + j];
        h[j] = ((real)1 - z) * FN(gact)(L, 1, vn) + z * h[j];
        gates[j] = vr; gates[H + j] = vz; gates[2 * H + j] = vn;
    }
}

static void FN(gru_general_backward_row)(real *restrict dpre, real *restrict dpre_rec,
                                         real *restrict dh, const real *restrict gates,
                                         const real *restrict h_prev, const real *restrict rec_n,
                                         int H, const fastrnn_layer *L)
{
    for (int j = 0; j < H; j++) {
        real vr = gates[j], vz = gates[H + j], vn = gates[2 * H + j];
        real r = FN(gact)(L, 0, vr), z = FN(gact)(L, 0, vz), n = FN(gact)(L, 1, vn);
        /* backprop through h = (1-z)*n + z*h_prev, then the activations */
        real dvn = dh[j] * ((real)1 - z) * FN(dgact)(L, 1, vn);
        dpre[j] = dpre_rec[j] = dvn * rec_n[j] * FN(dgact)(L, 0, vr);
        dpre[H + j] = dpre_rec[H + j] = dh[j] * (h_prev[j] - n) * FN(dgact)(L, 0, vz);
        dpre[2 * H + j] = dvn;
        dpre_rec[2 * H + j] = dvn * r;
        dh[j] = dh[j] * z;
    }
}

/* GRU, reset before, pass 1: vr, vz kept; rh = r * h_prev */
static void FN(gru_rb_general_forward_gates_row)(real *restrict gates, real *restrict rh,
                                                 const real *restrict h, const real *restrict rec,
                                                 int H, const fastrnn_layer *L)
{
    for (int j = 0; j < H; j++) {
        real vr = gates[j] + rec[j];
        gates[j] = vr;
        gates[H + j] += rec[H + j];
        rh[j] = FN(gact)(L, 0, vr) * h[j];
    }
}

/* pass 2: vn = xn + rec_n, rec_n = (r*h) W_hn^T + b_hn; h = (1-z)*n + z*h */
static void FN(gru_rb_general_forward_output_row)(real *restrict gates, real *restrict h,
                                                  const real *restrict rec_n, int H,
                                                  const fastrnn_layer *L)
{
    for (int j = 0; j < H; j++) {
        real z = FN(gact)(L, 0, gates[H + j]);
        real vn = gates[2 * H + j] + rec_n[j];
        h[j] = ((real)1 - z) * FN(gact)(L, 1, vn) + z * h[j];
        gates[2 * H + j] = vn;
    }
}

static void FN(gru_rb_general_backward_zn_row)(real *restrict dpre, real *restrict dh,
                                               const real *restrict gates,
                                               const real *restrict h_prev, int H,
                                               const fastrnn_layer *L)
{
    for (int j = 0; j < H; j++) {
        real vz = gates[H + j], vn = gates[2 * H + j];
        real z = FN(gact)(L, 0, vz), n = FN(gact)(L, 1, vn);
        dpre[H + j] = dh[j] * (h_prev[j] - n) * FN(dgact)(L, 0, vz);
        dpre[2 * H + j] = dh[j] * ((real)1 - z) * FN(dgact)(L, 1, vn);
        dh[j] = dh[j] * z;
    }
}

static void FN(gru_rb_general_backward_r_row)(real *restrict dpre, real *restrict dh,
                                              const real *restrict gates,
                                              const real *restrict h_prev,
                                              const real *restrict drh, int H,
                                              const fastrnn_layer *L)
{
    for (int j = 0; j < H; j++) {
        real vr = gates[j];
        dpre[j] = drh[j] * h_prev[j] * FN(dgact)(L, 0, vr);   /* backprop through rh = r*h_prev */
        dh[j] += drh[j] * FN(gact)(L, 0, vr);
    }
}
