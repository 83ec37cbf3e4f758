/* activations.h -- nonlinearities and their derivatives, written once over
 * `real`. Derivatives take the activation's output, as backward has it. */
/* Macro contract: real (float or double), FN(name) (this instantiation's
 * name), EXP, TANH and LOG1P (real -> real). */
#if !defined(real) || !defined(FN) || !defined(EXP) || !defined(TANH) || !defined(LOG1P)
#error "activations.h needs real, FN, EXP, TANH and LOG1P: include it through kernels_f32.c or kernels_f64.c"
#endif


static inline real FN(sigmoid)(real v) { return (real)1 / ((real)1 + EXP(-v)); }
static inline real FN(relu)(real v) { return v < (real)0 ? (real)0 : v; }  /* NaN stays NaN */

/* d sigmoid / dv, from s = sigmoid(v) */
static inline real FN(dsigmoid)(real s) { return s * ((real)1 - s); }
/* d tanh / dv, from y = tanh(v) */
static inline real FN(dtanh)(real y) { return (real)1 - y * y; }
/* d relu / dv, from y = relu(v) */
static inline real FN(drelu)(real y) { return y > (real)0 ? (real)1 : (real)0; }

/* ------------------------------------------- the general cells' activations */

/* v clipped to [-clip, clip]; clip <= 0 means no clipping */
static inline real FN(clipped)(real v, real clip)
{
    if (clip > (real)0)
        v = v > clip ? clip : (v < -clip ? -clip : v);
    return v;
}

/* a(v) for one of ONNX's activations (v already clipped) */
static real FN(act_apply)(const fastrnn_act *a, real v)
{
    real alpha = (real)a->alpha, beta = (real)a->beta;
    switch (a->kind) {
    case FASTRNN_ACT_SIGMOID: return FN(sigmoid)(v);
    case FASTRNN_ACT_TANH: return TANH(v);
    case FASTRNN_ACT_RELU: return FN(relu)(v);
    case FASTRNN_ACT_AFFINE: return alpha * v + beta;
    case FASTRNN_ACT_LEAKY_RELU: return v >= (real)0 ? v : alpha * v;
    case FASTRNN_ACT_THRESHOLDED_RELU: return v > alpha ? v : (real)0;
    case FASTRNN_ACT_SCALED_TANH: return alpha * TANH(beta * v);
    case FASTRNN_ACT_HARD_SIGMOID: {
        real s = alpha * v + beta;
        return s < (real)0 ? (real)0 : (s > (real)1 ? (real)1 : s);
    }
    case FASTRNN_ACT_ELU: return v >= (real)0 ? v : alpha * (EXP(v) - (real)1);
    case FASTRNN_ACT_SOFTSIGN: return v / ((real)1 + (v < (real)0 ? -v : v));
    case FASTRNN_ACT_SOFTPLUS:   /* log(1 + e^v) without overflow */
        return (v > (real)0 ? v : (real)0) + LOG1P(EXP(v > (real)0 ? -v : v));
    default: return v;
    }
}

/* d a / d v at v (already clipped) */
static real FN(act_grad)(const fastrnn_act *a, real v)
{
    real alpha = (real)a->alpha, beta = (real)a->beta;
    switch (a->kind) {
    case FASTRNN_ACT_SIGMOID: return FN(dsigmoid)(FN(sigmoid)(v));
    case FASTRNN_ACT_TANH: return FN(dtanh)(TANH(v));
    case FASTRNN_ACT_RELU: return v > (real)0 ? (real)1 : (real)0;
    case FASTRNN_ACT_AFFINE: return alpha;
    case FASTRNN_ACT_LEAKY_RELU: return v >= (real)0 ? (real)1 : alpha;
    case FASTRNN_ACT_THRESHOLDED_RELU: return v > alpha ? (real)1 : (real)0;
    case FASTRNN_ACT_SCALED_TANH: return alpha * beta * FN(dtanh)(TANH(beta * v));
    case FASTRNN_ACT_HARD_SIGMOID: {
        real s = alpha * v + beta;
        return s > (real)0 && s < (real)1 ? alpha : (real)0;
    }
    case FASTRNN_ACT_ELU: return v >= (real)0 ? (real)1 : alpha * EXP(v);
    case FASTRNN_ACT_SOFTSIGN: {
        real d = (real)1 + (v < (real)0 ? -v : v);
        return (real)1 / (d * d);
    }
    case FASTRNN_ACT_SOFTPLUS: return FN(sigmoid)(v);
    default: return (real)1;
    }
}

/* a(clip(v)) and its derivative w.r.t. v (zero where the clip is active).
 * LSTM's output activation h(c) is not clipped: ONNX Runtime clips the gate
 * inputs only, and is the reference here. */
static inline real FN(gact)(const fastrnn_layer *L, int k, real v)
{
    return FN(act_apply)(&L->act[k], FN(clipped)(v, (real)L->clip));
}

static inline real FN(dgact)(const fastrnn_layer *L, int k, real v)
{
    if (L->clip > 0 && (v > (real)L->clip || v < -(real)L->clip))
        return (real)0;
    return FN(act_grad)(&L->act[k], v);
}
