/* activations.h -- nonlinearities and their derivatives, written once over
 * `real`. Derivatives take the activation's output, as backward has it. */

static inline real FN(sigmoid)(real v) { return (real)1 / ((real)1 + EXP(-v)); }
static inline real FN(relu)(real v) { return v < (real)0 ? (real)0 : v; }  /* NaN stays NaN */

/* d sigmoid / dv, from s = sigmoid(v) */
static inline real FN(dsigmoid)(real s) { return s * ((real)1 - s); }
/* d tanh / dv, from y = tanh(v) */
static inline real FN(dtanh)(real y) { return (real)1 - y * y; }
/* d relu / dv, from y = relu(v) */
static inline real FN(drelu)(real y) { return y > (real)0 ? (real)1 : (real)0; }
