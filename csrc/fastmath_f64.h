/* fastmath_f64.h -- exp and tanh for double, written so that GCC vectorizes
 * the loops that call them (libm's exp/tanh are scalar calls, and were the
 * largest cost of the fused elementwise passes). Branch-free; within a few
 * ulps of libm over the whole range, overflow and underflow included. */
#ifndef FASTRNN_FASTMATH_F64_H
#define FASTRNN_FASTMATH_F64_H

#include <stdint.h>
#include <string.h>

static inline double fastrnn_bits_to_double(uint64_t i) { double f; memcpy(&f, &i, 8); return f; }
static inline uint64_t fastrnn_double_to_bits(double f) { uint64_t i; memcpy(&i, &f, 8); return i; }

/* exp(r) for |r| <= ln2 / 2 (a little more is fine): 1 + r + r^2 q(r), q a
 * degree-9 minimax fit (truncation < 2e-17 relative) */
static inline double fastrnn_exp_reduced_(double r)
{
    double p = 2.510134692835034019878844e-8;
    p = p * r + 2.762133866914292380112564e-7;
    p = p * r + 2.755726641861230370310709e-6;
    p = p * r + 2.480151864139599358273675e-5;
    p = p * r + 1.984126986438051329547047e-4;
    p = p * r + 1.388888891893916778499382e-3;
    p = p * r + 8.333333333329793499595376e-3;
    p = p * r + 4.166666666662063858374340e-2;
    p = p * r + 1.666666666666666753413095e-1;
    p = p * r + 5.000000000000001127956642e-1;
    p = p * r + 1.0;
    return p * r + 1.0;
}

#define FASTRNN_ROUND_MAGIC_F64 6755399441055744.0   /* 1.5 * 2^52: adding it rounds to an integer */
#define FASTRNN_LOG2E_F64 1.44269504088896340736
/* ln2 in two parts: ln2_hi has 32 significant bits, so n * ln2_hi is exact
 * for |n| < 2^21 and v - n ln2 is computed without cancellation error */
#define FASTRNN_LN2_HI_F64 6.93147180369123816490e-01
#define FASTRNN_LN2_LO_F64 1.90821492927058770002e-10

/* exp(v) = 2^n * exp(r), n = round(v / ln 2), |r| <= ln2 / 2. v is clamped
 * to [-746, 710], where exp is 0 and inf in double; 2^n is applied as two
 * normal factors 2^floor(n/2) * 2^ceil(n/2), so that results round to
 * subnormals and overflow to inf as libm's do. */
static inline double fastrnn_exp(double v)
{
    v = v > 710.0 ? 710.0 : v;
    v = v < -746.0 ? -746.0 : v;
    double t = v * FASTRNN_LOG2E_F64 + FASTRNN_ROUND_MAGIC_F64;
    /* n in [-1077, 1025] sits in the low mantissa bits of t; unsigned
     * arithmetic keeps NaN inputs (whose n is garbage, the result NaN) free
     * of UB. m = n + 2046 >= 0, so m >> 1 = floor(n/2) + 1023 (a biased
     * exponent) and m - (m >> 1) = ceil(n/2) + 1023, both in [484, 1536]. */
    uint64_t m = fastrnn_double_to_bits(t) - fastrnn_double_to_bits(FASTRNN_ROUND_MAGIC_F64) + 2046u;
    uint64_t e1 = m >> 1, e2 = m - e1;
    double nf = t - FASTRNN_ROUND_MAGIC_F64;
    double r = (v - nf * FASTRNN_LN2_HI_F64) - nf * FASTRNN_LN2_LO_F64;
    return fastrnn_exp_reduced_(r) * fastrnn_bits_to_double(e1 << 52)
           * fastrnn_bits_to_double(e2 << 52);
}

/* tanh(v) = sign(v) tanh(|v|): below |v| = 0.55 (tanh < 0.5, where
 * 1 - 2/(e^2|v| + 1) would lose bits to cancellation) |v| + |v|^3 g(v^2), g a
 * degree-10 minimax fit (error < 3e-18 relative); 1 - 2/(e^2|v| + 1) above,
 * with |v| clamped at 20 (beyond which tanh rounds to 1), so that exp needs
 * neither clamps nor a split 2^n (n <= 58). The sign bit of v sets the
 * sign: tanh(-0) = -0, NaN stays NaN. */
static inline double fastrnn_tanh(double v)
{
    const uint64_t sign = (uint64_t)1 << 63;
    uint64_t vbits = fastrnn_double_to_bits(v);
    double a = fastrnn_bits_to_double(vbits & ~sign);
    double a2 = a * a;
    double p = -2.05900370347676120832364e-5;
    p = p * a2 + 8.509481082749288337856111e-5;
    p = p * a2 - 2.346235564045879114690274e-4;
    p = p * a2 + 5.88932283696086415391305e-4;
    p = p * a2 - 1.455661065350347408730701e-3;
    p = p * a2 + 3.592110282982748248403781e-3;
    p = p * a2 - 8.863234390552772127042449e-3;
    p = p * a2 + 2.186948849335196784178659e-2;
    p = p * a2 - 5.396825396742711394694899e-2;
    p = p * a2 + 1.333333333333270899848606e-1;
    p = p * a2 - 3.333333333333333255253031e-1;
    double small = a + a * a2 * p;
    double x = 2.0 * (a > 20.0 ? 20.0 : a);                     /* NaN stays NaN */
    double t = x * FASTRNN_LOG2E_F64 + FASTRNN_ROUND_MAGIC_F64;
    uint64_t e = fastrnn_double_to_bits(t) - fastrnn_double_to_bits(FASTRNN_ROUND_MAGIC_F64) + 1023u;
    double nf = t - FASTRNN_ROUND_MAGIC_F64;
    double r = (x - nf * FASTRNN_LN2_HI_F64) - nf * FASTRNN_LN2_LO_F64;
    double big = 1.0 - 2.0 / (fastrnn_exp_reduced_(r) * fastrnn_bits_to_double(e << 52) + 1.0);
    double y = a < 0.55 ? small : big;
    /* the sign by a select on +-1.0 (a double compare): a bitwise copysign or
     * a 64-bit integer compare (not in SSE2) would keep GCC from vectorizing
     * callers' loops that pick tanh under a condition */
    double s = fastrnn_bits_to_double(fastrnn_double_to_bits(1.0) | (vbits & sign));
    return s < 0.0 ? -y : y;
}

#endif /* FASTRNN_FASTMATH_F64_H */
