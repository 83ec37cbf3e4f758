/* fastmath_f32.h -- exp and tanh for float, written so that GCC vectorizes
 * the loops that call them (libm's expf/tanhf are scalar calls, and were the
 * largest cost of the fused elementwise passes). Branch-free; accurate to a
 * few float32 ulps (the tests compare against float64). */
#ifndef FASTRNN_FASTMATH_F32_H
#define FASTRNN_FASTMATH_F32_H

#include <stdint.h>
#include <string.h>

static inline float fastrnn_bits_to_float(uint32_t i) { float f; memcpy(&f, &i, 4); return f; }
static inline uint32_t fastrnn_float_to_bits(float f) { uint32_t i; memcpy(&i, &f, 4); return i; }

/* exp(v) = 2^n * exp(r), n = round(v / ln 2), |r| <= ln2 / 2; exp(r) by its
 * Taylor series to r^7 (truncation < 1e-8 relative). v is clamped so that
 * 2^n stays a normal float: exp saturates at ~2.4e38 and ~1.2e-38. */
static inline float fastrnn_expf(float v)
{
    const float round_magic = 12582912.0f;            /* 1.5 * 2^23: adding it rounds to an integer */
    const float ln2_hi = 0.693145751953125f, ln2_lo = 1.428606765330187e-06f;
    v = v > 88.0f ? 88.0f : v;
    v = v < -87.0f ? -87.0f : v;
    float t = v * 1.44269504088896341f + round_magic;
    /* n in [-126, 127] sits in the low mantissa bits of t; unsigned arithmetic
     * keeps NaN inputs (whose n is garbage, the result NaN) free of UB */
    uint32_t n = fastrnn_float_to_bits(t) - fastrnn_float_to_bits(round_magic);
    float nf = t - round_magic;
    float r = (v - nf * ln2_hi) - nf * ln2_lo;         /* two-part ln 2 keeps r exact */
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    return p * fastrnn_bits_to_float((n + 127u) << 23);
}

/* tanh(v): odd Taylor series below |v| = 0.55 (where 1 - 2/(e^2v + 1) would
 * lose bits to cancellation), 1 - 2/(e^2|v| + 1) with the sign above. */
static inline float fastrnn_tanhf(float v)
{
    float a = v < 0.0f ? -v : v;
    float a2 = v * v;
    float p = -929569.0f / 638512875;
    p = p * a2 + 21844.0f / 6081075;
    p = p * a2 - 1382.0f / 155925;
    p = p * a2 + 62.0f / 2835;
    p = p * a2 - 17.0f / 315;
    p = p * a2 + 2.0f / 15;
    p = p * a2 - 1.0f / 3;
    float small = v + v * a2 * p;
    float big = 1.0f - 2.0f / (fastrnn_expf(2.0f * (a > 10.0f ? 10.0f : a)) + 1.0f);  /* NaN stays NaN */
    big = v < 0.0f ? -big : big;
    return a < 0.55f ? small : big;
}

#endif /* FASTRNN_FASTMATH_F32_H */
