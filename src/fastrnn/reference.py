"""The readable NumPy reference of fastrnn: every cell, forward and backward.

This module is the specification the C kernels are tested against and the
``backend="numpy"`` of the layers. It favours clarity over speed: one NumPy line
per equation, and backward is the forward loop reversed, one commented line per
chain-rule step. Derivatives are taken from stored outputs (``1 - h*h``,
``s*(1 - s)``). Arithmetic stays in the dtype of the inputs.

Dimension letters: T steps, B batch, I input features, H hidden features,
G gates (RNN 1, LSTM 4, GRU 3).

Conventions are PyTorch's: layout ``x @ w_ih.T``; parameters w_ih (G*H, I),
w_hh (G*H, H), b_ih (G*H,), b_hh (G*H,); gate order LSTM i, f, g, o and GRU
r, z, n. A bias may be None (the layer has none): it counts as zero and its
gradient is None. Cell kinds:

    "rnn_tanh", "rnn_relu"  h = act(x W_ih^T + b_ih + h W_hh^T + b_hh)
    "lstm"                  c = f*c + i*g;  h = o*tanh(c)
    "gru"                   n = tanh(x W_in^T + b_in + r*(h W_hn^T + b_hn))  (PyTorch)
    "gru_reset_before"      n = tanh(x W_in^T + b_in + (r*h) W_hn^T + b_hn) (reset_after=False)
    and for both GRUs       h = (1 - z)*n + z*h
    "indrnn_tanh", "indrnn_relu"
                            h = act(x W_ih^T + b_ih + u*h + b_hh)  (IndRNN, Li et al. 2018)

IndRNN's recurrent weight is a vector: w_hh is u (H,), one weight per unit.

Lengths (PyTorch's packed-sequence result, without packing): step t of row b is
active iff t < lengths[b]. An inactive step writes zeros to y and leaves the
state untouched. The reverse direction runs t = T-1..0 with the same rule, so a
sequence of length L starts at its own last valid step L-1, from h0.

The layer cache has the layout of the C training cache (csrc/fastrnn.h), time
indexed whatever the direction (row t belongs to x[t] and y[t]):

    "gates"   (T, B, G*H)  post-activation gates (RNN: h itself)
    "h_prev"  (T, B, H)    the state entering step t
    "c_prev"  (T, B, H)    LSTM only: the cell state entering step t
    "hn"      (T, B, H)    "gru" only: the recurrent n-term h W_hn^T + b_hn (with layer
                           normalization: gh's n block, LN(h W_hh^T; g_hh)[n] + b_hn)
    "rh"      (T, B, H)    "gru_reset_before" only: r * h_prev

and with layer normalization (below) also

    "ln_ih"   (T, B, G*H)  the normalized input product (x W_ih^T - mean) * rstd
    "ln_hh"   (T, B, G*H)  the normalized recurrent product
    "ln_c"    (T, B, H)    LSTM only: the normalized new cell state
    "rstd"    (T, B, K)    1 / sqrt(var + LN_EPS) of each: K = 3 (ih, hh, c) for LSTM,
                           2 (ih, hh) for GRU

plus "cell", "reverse", "lengths" (B,), "x", the four parameters and "ln". Values at
inactive steps are whatever the cell computed there and are never used.

Zoneout (Krueger et al. 2016), zoneout = (mask_h, mask_c, p_h, p_c): after each
active step a unit of h (of c, LSTM) keeps its previous value where its mask
(T, B, R) (c: (T, B, H)) is nonzero; without a mask, p > 0 gives inference's
expectation p * previous + (1 - p) * new. The LSTM's new h comes from the new c
before c's zoneout.

Dropout as Keras' recurrent layers have it (Gal & Ghahramani 2016), training
only: keep_x (G, B, I) and keep_h (G, B, R), one mask per sequence and gate block
already scaled (0 or 1 / (1 - p)); gate block g's input product reads x * keep_x[g]
and its recurrent product h_prev * keep_h[g] (``_product``), at every step. The
layers pass dropout = (mask_x, mask_h, p_x, p_h), uint8 masks and their rates.

Layer normalization (Ba et al. 2016, "Layer Normalization"; the form of haste's
LayerNormLSTM and LayerNormGRU), "lstm" and "gru" only, ln = (g_ih, g_hh, g_c, b_c).
LN(a; g) = (a - mean(a)) / sqrt(var(a) + LN_EPS) * g over the last axis, all G*H
columns of a row together (biased variance, as torch.nn.LayerNorm); each product
is normalized on its own (after the dropout masks) and its bias is LN's shift:

    "lstm"  a = LN(x W_ih^T; g_ih) + b_ih + LN(h W_hh^T; g_hh) + b_hh   (g_ih, g_hh (4H,))
            c = f*c + i*g;  h = o*tanh(LN(c; g_c) + b_c)               (g_c, b_c (H,))
    "gru"   gi = LN(x W_ih^T; g_ih) + b_ih;  gh = LN(h W_hh^T; g_hh) + b_hh   ((3H,))
            then r, z, n, h from gi, gh as without LN; g_c = b_c = None

c itself (not LN(c)) is the carried state. b_c may be None (zero). Backward of
y = LN(a; g), with a^ the normalized a: dg = sum over rows of dy*a^, and
da = rstd * (dy*g - mean(dy*g) - a^ * mean(dy*g*a^)). The step and layer grads carry
"ln_ih", "ln_hh", "ln_c", "ln_cb" (the gradients of g_ih, g_hh, g_c, b_c) for every
cell, None when absent.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from fastrnn.kinds import CELLS, NUM_GATES

Array = np.ndarray
Cache = dict[str, Any]
Grads = dict[str, Optional[Array]]
LayerNorm = tuple   # (g_ih, g_hh, g_c, b_c), module docstring

#: the epsilon of layer normalization, added to the variance (torch.nn.LayerNorm's)
LN_EPS = 1e-5

# what a step saves for backward, beyond x and the parameters; the C cache keeps the same
SAVED = {"rnn_tanh": ("gates", "h_prev"), "rnn_relu": ("gates", "h_prev"),
         "indrnn_tanh": ("gates", "h_prev"), "indrnn_relu": ("gates", "h_prev"),
         "lstm": ("gates", "h_prev", "c_prev"), "gru": ("gates", "h_prev", "hn"),
         "gru_reset_before": ("gates", "h_prev", "rh")}
# and with layer normalization
LN_SAVED = {"lstm": ("ln_ih", "ln_hh", "ln_c", "rstd"), "gru": ("ln_ih", "ln_hh", "rstd")}
LN_GRADS = ("ln_ih", "ln_hh", "ln_c", "ln_cb")   # the gradients of g_ih, g_hh, g_c, b_c


def sigmoid(a: Array) -> Array:
    # the same function as 1 / (1 + exp(-a)), but exp cannot overflow
    return 0.5 * (1 + np.tanh(0.5 * a))


def _bias(b: Optional[Array], lo: Optional[int] = None, hi: Optional[int] = None) -> Any:
    """Rows lo:hi of an optional bias; 0 when the layer has no bias."""
    return 0 if b is None else b[lo:hi]


def _params(w_ih: Array, w_hh: Array, b_ih: Optional[Array], b_hh: Optional[Array],
            keep_x: Optional[Array] = None, keep_h: Optional[Array] = None) -> Cache:
    return {"w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh, "keep_x": keep_x,
            "keep_h": keep_h}


def _product(a: Array, w: Array, keep: Optional[Array]) -> Array:
    """a @ w.T; with dropout masks keep (G, B, n), gate block g of w's rows reads
    a * keep[g] (Keras' one mask per gate)."""
    if keep is None:
        return a @ w.T
    H = w.shape[0] // len(keep)
    return np.concatenate([(a * k) @ w[g * H:(g + 1) * H].T for g, k in enumerate(keep)], axis=1)


def _product_backward(d: Array, a: Array, w: Array, keep: Optional[Array]) -> tuple[Array, Array]:
    """(da, dw) of _product(a, w, keep), d its gradient (B, G*H)."""
    if keep is None:
        return d @ w, d.T @ a
    H = w.shape[0] // len(keep)
    blocks = [(d[:, g * H:(g + 1) * H], w[g * H:(g + 1) * H], k) for g, k in enumerate(keep)]
    da = sum((dg @ wg) * k for dg, wg, k in blocks)
    return da, np.concatenate([dg.T @ (a * k) for dg, _, k in blocks], axis=0)


def _grads(cache: Cache, dgi: Array, dgh: Array, dw_hh: Array, dpi: Optional[Array] = None
           ) -> tuple[Array, Grads]:
    """dx and the parameter gradients of one step from the pre-activation
    gradients of the input side dgi (B, G*H) and of the recurrent side dgh (B, G*H),
    which are the biases'; dpi, the gradient of the input product, is dgi but
    under layer normalization. The LN gradients start as None."""
    # backprop through x @ w_ih.T (per gate block, with input dropout)
    dx, dw_ih = _product_backward(dgi if dpi is None else dpi, cache["x"], cache["w_ih"],
                                  cache.get("keep_x"))
    return dx, {"w_ih": dw_ih, "w_hh": dw_hh,
                "b_ih": None if cache["b_ih"] is None else dgi.sum(0),
                "b_hh": None if cache["b_hh"] is None else dgh.sum(0),
                **dict.fromkeys(LN_GRADS)}


def _layer_norm(a: Array, g: Array) -> tuple[Array, Array, Array]:
    """LN(a; g) over the last axis, the normalized a (a^) and rstd (B, 1)."""
    rstd = 1 / np.sqrt(a.var(-1, keepdims=True) + LN_EPS)
    a_hat = (a - a.mean(-1, keepdims=True)) * rstd
    return a_hat * g, a_hat, rstd


def _ln_products(x: Array, h_prev: Array, w_ih: Array, w_hh: Array, keep_x: Optional[Array],
                 keep_h: Optional[Array], ln: Optional[LayerNorm]
                 ) -> tuple[Array, Array, Cache]:
    """The input and recurrent products x W_ih^T and h_prev W_hh^T (through the
    dropout masks), each layer-normalized when ln is given, and what the step
    cache keeps of the normalizations ("ln", "ln_ih", "ln_hh", "rstd")."""
    pi = _product(x, w_ih, keep_x)
    ph = _product(h_prev, w_hh, keep_h)
    saved: Cache = {"ln": ln}
    if ln is not None:
        pi, saved["ln_ih"], rstd_ih = _layer_norm(pi, ln[0])      # LN(x W_ih^T; g_ih)
        ph, saved["ln_hh"], rstd_hh = _layer_norm(ph, ln[1])      # LN(h_prev W_hh^T; g_hh)
        saved["rstd"] = np.concatenate([rstd_ih, rstd_hh], axis=1)
    return pi, ph, saved


def _layer_norm_backward(dy: Array, a_hat: Array, rstd: Array, g: Array) -> tuple[Array, Array]:
    """(da, dg) of y = LN(a; g), from the stored a^ and rstd."""
    # backprop through y = a^ * g
    da_hat = dy * g
    # backprop through a^ = (a - mean(a)) * rstd, rstd depending on a as well
    da = rstd * (da_hat - da_hat.mean(-1, keepdims=True)
                 - a_hat * (da_hat * a_hat).mean(-1, keepdims=True))
    return da, (dy * a_hat).sum(0)


def _check_ln(cell: str, ln: Optional[LayerNorm], w_hr: Optional[Array] = None) -> None:
    """ValueError unless ln is None or a layer normalization cell can take it."""
    if ln is None:
        return
    if cell not in LN_SAVED:
        raise ValueError(f"ln: layer normalization is implemented for cells 'lstm' and 'gru' "
                         f"only, got cell {cell!r}")
    if w_hr is not None:
        raise ValueError("ln: layer normalization is not implemented with the LSTM "
                         "projection w_hr")
    if not isinstance(ln, tuple) or len(ln) != 4:
        raise ValueError("ln: expected None or a tuple (g_ih, g_hh, g_c, b_c)")
    if ln[0] is None or ln[1] is None:
        raise ValueError("ln: the gains g_ih and g_hh are required")
    if cell == "lstm" and ln[2] is None:
        raise ValueError("ln: the LSTM's cell-state gain g_c is required")
    if cell == "gru" and (ln[2] is not None or ln[3] is not None):
        raise ValueError("ln: g_c and b_c must be None for 'gru' (no cell state)")


def _ln_products_backward(dgi: Array, dgh: Array, cache: Cache
                          ) -> tuple[Array, Array, dict[str, Array]]:
    """(dpi, dph, LN grads) through gi = LN(pi; g_ih) + b_ih and gh = LN(ph; g_hh) + b_hh:
    the gradients of the products pi, ph from those of gi, gh; identity without ln."""
    ln = cache.get("ln")
    if ln is None:
        return dgi, dgh, {}
    rstd = cache["rstd"]
    dpi, dg_ih = _layer_norm_backward(dgi, cache["ln_ih"], rstd[:, 0:1], ln[0])
    dph, dg_hh = _layer_norm_backward(dgh, cache["ln_hh"], rstd[:, 1:2], ln[1])
    return dpi, dph, {"ln_ih": dg_ih, "ln_hh": dg_hh}


# ----------------------------------------------------------------- cells: one step
# x (B, I), h_prev and c_prev (B, H). Each forward returns the new state and a step
# cache (the saved tensors plus the parameters); each backward takes the gradient of
# the new state and the step cache, and returns dx, the state gradients and the
# step's parameter gradients.

def rnn_cell_forward(x: Array, h_prev: Array, w_ih: Array, w_hh: Array, b_ih: Optional[Array],
                     b_hh: Optional[Array], nonlinearity: str = "tanh",
                     keep_x: Optional[Array] = None, keep_h: Optional[Array] = None
                     ) -> tuple[Array, Cache]:
    a = _product(x, w_ih, keep_x) + _bias(b_ih) + _product(h_prev, w_hh, keep_h) + _bias(b_hh)
    h = np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0)
    return h, {"x": x, "h_prev": h_prev, "gates": h, "nonlinearity": nonlinearity,
               **_params(w_ih, w_hh, b_ih, b_hh, keep_x, keep_h)}


def rnn_cell_backward(dh: Array, cache: Cache) -> tuple[Array, Array, Grads]:
    h = cache["gates"]
    # backprop through h = act(a)
    da = dh * (1 - h * h) if cache["nonlinearity"] == "tanh" else dh * (h > 0)
    # backprop through a = x @ w_ih.T + b_ih + h_prev @ w_hh.T + b_hh
    dh_prev, dw_hh = _product_backward(da, cache["h_prev"], cache["w_hh"], cache.get("keep_h"))
    dx, grads = _grads(cache, da, da, dw_hh)
    return dx, dh_prev, grads


def indrnn_cell_forward(x: Array, h_prev: Array, w_ih: Array, u: Array, b_ih: Optional[Array],
                        b_hh: Optional[Array], nonlinearity: str = "relu",
                        keep_x: Optional[Array] = None) -> tuple[Array, Cache]:
    """IndRNN: u (H,) multiplies h_prev elementwise, each unit its own recurrence."""
    a = _product(x, w_ih, keep_x) + _bias(b_ih) + u * h_prev + _bias(b_hh)
    h = np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0)
    return h, {"x": x, "h_prev": h_prev, "gates": h, "nonlinearity": nonlinearity,
               **_params(w_ih, u, b_ih, b_hh, keep_x)}


def indrnn_cell_backward(dh: Array, cache: Cache) -> tuple[Array, Array, Grads]:
    h = cache["gates"]
    # backprop through h = act(a)
    da = dh * (1 - h * h) if cache["nonlinearity"] == "tanh" else dh * (h > 0)
    # backprop through a = x @ w_ih.T + b_ih + u * h_prev + b_hh
    dh_prev = da * cache["w_hh"]
    dx, grads = _grads(cache, da, da, (da * cache["h_prev"]).sum(0))
    return dx, dh_prev, grads


def lstm_cell_forward(x: Array, h_prev: Array, c_prev: Array, w_ih: Array, w_hh: Array,
                      b_ih: Optional[Array], b_hh: Optional[Array], w_hr: Optional[Array] = None,
                      keep_x: Optional[Array] = None, keep_h: Optional[Array] = None,
                      ln: Optional[LayerNorm] = None) -> tuple[Array, Array, Cache]:
    """h_prev (B, R) with R = P when projecting (w_hr (P, H)), else H; c_prev (B, H);
    ln: layer normalization (g_ih, g_hh, g_c, b_c) or None (module docstring)."""
    _check_ln("lstm", ln, w_hr)
    H = c_prev.shape[1]
    pi, ph, saved = _ln_products(x, h_prev, w_ih, w_hh, keep_x, keep_h, ln)   # (B, 4H) each
    a = pi + _bias(b_ih) + ph + _bias(b_hh)                        # (B, 4H)
    i = sigmoid(a[:, :H])
    f = sigmoid(a[:, H:2 * H])
    g = np.tanh(a[:, 2 * H:3 * H])
    o = sigmoid(a[:, 3 * H:])
    c = f * c_prev + i * g
    if ln is None:
        m = o * np.tanh(c)
    else:
        cn, saved["ln_c"], rstd_c = _layer_norm(c, ln[2])         # LN(c; g_c)
        m = o * np.tanh(cn + _bias(ln[3]))
        saved["rstd"] = np.concatenate([saved["rstd"], rstd_c], axis=1)
    h = m if w_hr is None else m @ w_hr.T                          # the projection
    return h, c, {"x": x, "h_prev": h_prev, "c_prev": c_prev, "m": m, "w_hr": w_hr,
                  "gates": np.concatenate([i, f, g, o], axis=1), **saved,
                  **_params(w_ih, w_hh, b_ih, b_hh, keep_x, keep_h)}


def lstm_cell_backward(dh: Array, dc: Array, cache: Cache) -> tuple[Array, Array, Array, Grads]:
    i, f, g, o = np.split(cache["gates"], 4, axis=1)
    c_prev = cache["c_prev"]
    dw_hr = None
    if cache["w_hr"] is not None:
        # backprop through h = m @ w_hr.T
        dw_hr = dh.T @ cache["m"]
        dh = dh @ cache["w_hr"]
    ln = cache.get("ln")
    ln_grads = {}
    if ln is None:
        # recompute tanh(c) from c = f * c_prev + i * g, as the C kernel does
        tc = np.tanh(f * c_prev + i * g)
    else:
        # recompute tanh(LN(c; g_c) + b_c) from the normalized c
        tc = np.tanh(cache["ln_c"] * ln[2] + _bias(ln[3]))
    # backprop through m = o * tanh(c) (o * tanh(LN(c; g_c) + b_c))
    do = dh * tc
    dcn = dh * o * (1 - tc * tc)
    if ln is None:
        dc = dc + dcn
    else:
        # backprop through LN(c; g_c) + b_c
        ln_grads["ln_cb"] = None if ln[3] is None else dcn.sum(0)
        dcn, ln_grads["ln_c"] = _layer_norm_backward(dcn, cache["ln_c"], cache["rstd"][:, 2:3],
                                                     ln[2])
        dc = dc + dcn
    # backprop through c = f * c_prev + i * g
    di = dc * g
    df = dc * c_prev
    dg = dc * i
    dc_prev = dc * f
    # backprop through the sigmoids of i, f, o and the tanh of g
    da = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g * g), do * o * (1 - o)],
                        axis=1)
    # backprop through the layer normalizations of the two products (none without ln)
    dpi, dph, ln_products = _ln_products_backward(da, da, cache)
    # backprop through a = x @ w_ih.T + b_ih + h_prev @ w_hh.T + b_hh
    dh_prev, dw_hh = _product_backward(dph, cache["h_prev"], cache["w_hh"], cache.get("keep_h"))
    dx, grads = _grads(cache, da, da, dw_hh, dpi)
    grads.update(w_hr=dw_hr, **ln_grads, **ln_products)
    return dx, dh_prev, dc_prev, grads


def gru_cell_forward(x: Array, h_prev: Array, w_ih: Array, w_hh: Array, b_ih: Optional[Array],
                     b_hh: Optional[Array], keep_x: Optional[Array] = None,
                     keep_h: Optional[Array] = None, ln: Optional[LayerNorm] = None
                     ) -> tuple[Array, Cache]:
    """ln: layer normalization (g_ih, g_hh, None, None) or None (module docstring)."""
    _check_ln("gru", ln)
    H = h_prev.shape[1]
    pi, ph, saved = _ln_products(x, h_prev, w_ih, w_hh, keep_x, keep_h, ln)   # (B, 3H) each
    gi = pi + _bias(b_ih)                          # (B, 3H) input side of r, z, n
    gh = ph + _bias(b_hh)                          # (B, 3H) recurrent side of r, z, n
    r = sigmoid(gi[:, :H] + gh[:, :H])
    z = sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
    hn = gh[:, 2 * H:]                             # h_prev @ w_hn.T + b_hn
    n = np.tanh(gi[:, 2 * H:] + r * hn)
    h = (1 - z) * n + z * h_prev
    return h, {"x": x, "h_prev": h_prev, "gates": np.concatenate([r, z, n], axis=1), "hn": hn,
               **saved, **_params(w_ih, w_hh, b_ih, b_hh, keep_x, keep_h)}


def gru_cell_backward(dh: Array, cache: Cache) -> tuple[Array, Array, Grads]:
    r, z, n = np.split(cache["gates"], 3, axis=1)
    h_prev, hn = cache["h_prev"], cache["hn"]
    # backprop through h = (1 - z) * n + z * h_prev
    dn = dh * (1 - z)
    dz = dh * (h_prev - n)
    dh_prev = dh * z
    # backprop through the tanh of n
    dan = dn * (1 - n * n)
    # backprop through r * hn
    dr = dan * hn
    dhn = dan * r
    # backprop through the sigmoids of r and z
    dar = dr * r * (1 - r)
    daz = dz * z * (1 - z)
    dgi = np.concatenate([dar, daz, dan], axis=1)
    dgh = np.concatenate([dar, daz, dhn], axis=1)
    # backprop through the layer normalizations of the two products (none without ln)
    dpi, dph, ln_grads = _ln_products_backward(dgi, dgh, cache)
    # backprop through gi = x @ w_ih.T + b_ih and gh = h_prev @ w_hh.T + b_hh
    dh_rec, dw_hh = _product_backward(dph, h_prev, cache["w_hh"], cache.get("keep_h"))
    dx, grads = _grads(cache, dgi, dgh, dw_hh, dpi)
    grads.update(ln_grads)
    return dx, dh_prev + dh_rec, grads


def _rb_masks(h_prev: Array, keep_h: Optional[Array]) -> tuple[Optional[Array], Array]:
    """The reset-before GRU's recurrent dropout (Keras'): the masks of its r, z
    product (2, B, H) or None, and the h its n block reads, h_prev * keep_h[2]."""
    if keep_h is None:
        return None, h_prev
    return keep_h[:2], h_prev * keep_h[2]


def gru_reset_before_cell_forward(x: Array, h_prev: Array, w_ih: Array, w_hh: Array,
                                  b_ih: Optional[Array], b_hh: Optional[Array],
                                  keep_x: Optional[Array] = None,
                                  keep_h: Optional[Array] = None) -> tuple[Array, Cache]:
    H = h_prev.shape[1]
    keep_rz, h_n = _rb_masks(h_prev, keep_h)
    gi = _product(x, w_ih, keep_x) + _bias(b_ih)   # (B, 3H) input side of r, z, n
    gh = _product(h_prev, w_hh[:2 * H], keep_rz) + _bias(b_hh, 0, 2 * H)   # (B, 2H) of r, z
    r = sigmoid(gi[:, :H] + gh[:, :H])
    z = sigmoid(gi[:, H:2 * H] + gh[:, H:])
    rh = r * h_n
    n = np.tanh(gi[:, 2 * H:] + rh @ w_hh[2 * H:].T + _bias(b_hh, 2 * H))
    h = (1 - z) * n + z * h_prev
    return h, {"x": x, "h_prev": h_prev, "gates": np.concatenate([r, z, n], axis=1), "rh": rh,
               **_params(w_ih, w_hh, b_ih, b_hh, keep_x, keep_h)}


def gru_reset_before_cell_backward(dh: Array, cache: Cache) -> tuple[Array, Array, Grads]:
    r, z, n = np.split(cache["gates"], 3, axis=1)
    h_prev, rh, w_hh = cache["h_prev"], cache["rh"], cache["w_hh"]
    H = h_prev.shape[1]
    # backprop through h = (1 - z) * n + z * h_prev
    dn = dh * (1 - z)
    dz = dh * (h_prev - n)
    dh_prev = dh * z
    # backprop through the tanh of n
    dan = dn * (1 - n * n)
    keep_h = cache.get("keep_h")
    keep_rz, h_n = _rb_masks(h_prev, keep_h)
    # backprop through rh @ w_hn.T
    drh = dan @ w_hh[2 * H:]
    # backprop through rh = r * h_n, h_n = h_prev * keep_h[2] (or h_prev)
    dr = drh * h_n
    dh_prev = dh_prev + drh * r * (1 if keep_h is None else keep_h[2])
    # backprop through the sigmoids of r and z
    dar = dr * r * (1 - r)
    daz = dz * z * (1 - z)
    # backprop through gi = x @ w_ih.T + b_ih and the recurrent products of r, z
    dgi = np.concatenate([dar, daz, dan], axis=1)
    dh_rz, dw_rz = _product_backward(dgi[:, :2 * H], h_prev, w_hh[:2 * H], keep_rz)
    dh_prev = dh_prev + dh_rz
    dw_hh = np.concatenate([dw_rz, dan.T @ rh], axis=0)
    # every bias sits outside its product, so b_hh gets the same gradient as b_ih
    dx, grads = _grads(cache, dgi, dgi, dw_hh)
    return dx, dh_prev, grads


def cell_forward(cell: str, x: Array, h_prev: Array, c_prev: Optional[Array], w_ih: Array,
                 w_hh: Array, b_ih: Optional[Array], b_hh: Optional[Array],
                 w_hr: Optional[Array] = None, keep_x: Optional[Array] = None,
                 keep_h: Optional[Array] = None, ln: Optional[LayerNorm] = None
                 ) -> tuple[Array, Optional[Array], Cache]:
    """One step of any cell kind: h (B, R), c (B, H) or None, step cache.
    w_hr, the LSTM projection (P, H), makes R = P; otherwise R = H. keep_x,
    keep_h: dropout masks; ln: layer normalization, "lstm" and "gru" only
    (module docstring)."""
    if cell == "lstm":
        return lstm_cell_forward(x, h_prev, c_prev, w_ih, w_hh, b_ih, b_hh, w_hr, keep_x, keep_h,
                                 ln)
    if w_hr is not None:
        raise ValueError(f"w_hr: a projection is for LSTM only, got cell {cell!r}")
    if cell in CELLS:
        _check_ln(cell, ln)
    if cell in ("rnn_tanh", "rnn_relu"):
        h, cache = rnn_cell_forward(x, h_prev, w_ih, w_hh, b_ih, b_hh, cell[4:], keep_x, keep_h)
    elif cell in ("indrnn_tanh", "indrnn_relu"):
        if keep_h is not None:
            raise ValueError("keep_h: recurrent dropout is not implemented for IndRNN")
        h, cache = indrnn_cell_forward(x, h_prev, w_ih, w_hh, b_ih, b_hh, cell[7:], keep_x)
    elif cell == "gru":
        h, cache = gru_cell_forward(x, h_prev, w_ih, w_hh, b_ih, b_hh, keep_x, keep_h, ln)
    elif cell == "gru_reset_before":
        h, cache = gru_reset_before_cell_forward(x, h_prev, w_ih, w_hh, b_ih, b_hh, keep_x,
                                                 keep_h)
    else:
        raise ValueError(f"cell must be one of {CELLS}: got {cell!r}")
    return h, None, cache


def cell_backward(cell: str, dh: Array, dc: Optional[Array], cache: Cache
                  ) -> tuple[Array, Array, Optional[Array], Grads]:
    """Backward of cell_forward: dx (B, I), dh_prev (B, H), dc_prev (B, H) or None, grads."""
    if cell == "lstm":
        return lstm_cell_backward(dh, dc, cache)
    if cell in ("rnn_tanh", "rnn_relu"):
        dx, dh_prev, grads = rnn_cell_backward(dh, cache)
    elif cell in ("indrnn_tanh", "indrnn_relu"):
        dx, dh_prev, grads = indrnn_cell_backward(dh, cache)
    elif cell == "gru":
        dx, dh_prev, grads = gru_cell_backward(dh, cache)
    elif cell == "gru_reset_before":
        dx, dh_prev, grads = gru_reset_before_cell_backward(dh, cache)
    else:
        raise ValueError(f"cell must be one of {CELLS}: got {cell!r}")
    return dx, dh_prev, None, grads


# ------------------------------------------- general cells: ONNX's options
# Any of ONNX's activations (with alpha, beta), clip (every activation's input
# clipped to [-clip, clip]), LSTM peepholes (p_i * c_prev, p_f * c_prev,
# p_o * c added to the i, f, o pre-activations) and coupled input and forget
# gates (f = 1 - i). Their step caches keep the pre-activations ("gates" holds
# v, not a(v)) because these derivatives need the activation's input.

ACTIVATIONS = {   # name: (a(v), da/dv(v)), alpha and beta as ONNX's
    "sigmoid": (lambda v, al, be: sigmoid(v),
                lambda v, al, be: sigmoid(v) * (1 - sigmoid(v))),
    "tanh": (lambda v, al, be: np.tanh(v), lambda v, al, be: 1 - np.tanh(v) ** 2),
    "relu": (lambda v, al, be: np.maximum(v, 0), lambda v, al, be: (v > 0) * 1.0),
    "affine": (lambda v, al, be: al * v + be, lambda v, al, be: np.full_like(v, al)),
    "leaky_relu": (lambda v, al, be: np.where(v >= 0, v, al * v),
                   lambda v, al, be: np.where(v >= 0, 1.0, al)),
    "thresholded_relu": (lambda v, al, be: np.where(v > al, v, 0),
                         lambda v, al, be: (v > al) * 1.0),
    "scaled_tanh": (lambda v, al, be: al * np.tanh(be * v),
                    lambda v, al, be: al * be * (1 - np.tanh(be * v) ** 2)),
    "hard_sigmoid": (lambda v, al, be: np.clip(al * v + be, 0, 1),
                     lambda v, al, be: ((al * v + be > 0) & (al * v + be < 1)) * al),
    "elu": (lambda v, al, be: np.where(v >= 0, v, al * np.expm1(np.minimum(v, 0))),
            lambda v, al, be: np.where(v >= 0, 1.0, al * np.exp(np.minimum(v, 0)))),
    "softsign": (lambda v, al, be: v / (1 + np.abs(v)),
                 lambda v, al, be: 1 / (1 + np.abs(v)) ** 2),
    "softplus": (lambda v, al, be: np.logaddexp(0, v), lambda v, al, be: sigmoid(v)),
}


class Options:
    """activations: ((name, alpha, beta), ...) in ONNX's order (RNN f; LSTM f, g, h;
    GRU f, g); clip: None or a positive threshold; input_forget: LSTM f = 1 - i."""

    def __init__(self, activations, clip: Optional[float] = None, input_forget: bool = False):
        self.activations = tuple(tuple(a) for a in activations)
        self.clip = clip
        self.input_forget = bool(input_forget)

    def act(self, k: int, v: Array, clip: bool = True) -> Array:
        """activation k of clip(v) (of v itself with clip=False)."""
        name, alpha, beta = self.activations[k]
        if clip and self.clip is not None:
            v = np.clip(v, -self.clip, self.clip)
        return ACTIVATIONS[name][0](v, alpha, beta).astype(v.dtype, copy=False)

    def dact(self, k: int, v: Array, clip: bool = True) -> Array:
        """d act(clip(v)) / dv: zero where the clip is active."""
        name, alpha, beta = self.activations[k]
        d = ACTIVATIONS[name][1](v, alpha, beta)
        if clip and self.clip is not None:
            d = d * (np.abs(v) <= self.clip)
        return d.astype(v.dtype, copy=False)


def general_cell_forward(cell: str, x: Array, h_prev: Array, c_prev: Optional[Array],
                         w_ih: Array, w_hh: Array, b_ih: Optional[Array], b_hh: Optional[Array],
                         opts: Options, peep: Optional[Array] = None,
                         w_hr: Optional[Array] = None, keep_x: Optional[Array] = None,
                         keep_h: Optional[Array] = None) -> tuple[Array, Optional[Array], Cache]:
    """One step of a general cell: h, c (LSTM) or None, step cache."""
    H = w_ih.shape[0] // NUM_GATES[cell]
    gi = _product(x, w_ih, keep_x) + _bias(b_ih)   # input side of every gate
    cache: Cache = {"x": x, "h_prev": h_prev, "c_prev": c_prev, "opts": opts, "peep": peep,
                    "w_hr": w_hr, **_params(w_ih, w_hh, b_ih, b_hh, keep_x, keep_h)}
    c = None
    if cell in ("rnn_tanh", "rnn_relu"):
        v = gi + _product(h_prev, w_hh, keep_h) + _bias(b_hh)
        h = opts.act(0, v)
    elif cell == "lstm":
        v = gi + _product(h_prev, w_hh, keep_h) + _bias(b_hh)   # (B, 4H): vi, vf, vg, vo
        if peep is not None:                       # peepholes on c_prev for i and f
            v[:, :H] += peep[:H] * c_prev
            v[:, H:2 * H] += peep[H:2 * H] * c_prev
        i = opts.act(0, v[:, :H])
        f = 1 - i if opts.input_forget else opts.act(0, v[:, H:2 * H])
        c = f * c_prev + i * opts.act(1, v[:, 2 * H:3 * H])
        if peep is not None:                       # and on the new c for o
            v[:, 3 * H:] += peep[2 * H:] * c
        # the output activation of c is not clipped (ONNX Runtime clips gate inputs)
        m = opts.act(0, v[:, 3 * H:]) * opts.act(2, c, clip=False)
        cache["m"] = m
        h = m if w_hr is None else m @ w_hr.T
    elif cell == "gru":
        gh = _product(h_prev, w_hh, keep_h) + _bias(b_hh)
        v = gi + gh
        r = opts.act(0, v[:, :H])
        cache["hn"] = gh[:, 2 * H:]
        v[:, 2 * H:] = gi[:, 2 * H:] + r * gh[:, 2 * H:]
        z = opts.act(0, v[:, H:2 * H])
        h = (1 - z) * opts.act(1, v[:, 2 * H:]) + z * h_prev
    else:   # gru_reset_before
        keep_rz, h_n = _rb_masks(h_prev, keep_h)
        v = gi.copy()
        v[:, :2 * H] += _product(h_prev, w_hh[:2 * H], keep_rz) + _bias(b_hh, 0, 2 * H)
        rh = opts.act(0, v[:, :H]) * h_n
        cache["rh"] = rh
        v[:, 2 * H:] += rh @ w_hh[2 * H:].T + _bias(b_hh, 2 * H)
        z = opts.act(0, v[:, H:2 * H])
        h = (1 - z) * opts.act(1, v[:, 2 * H:]) + z * h_prev
    cache["gates"] = v
    return h, c, cache


def general_cell_backward(cell: str, dh: Array, dc: Optional[Array], cache: Cache
                          ) -> tuple[Array, Array, Optional[Array], Grads]:
    """Backward of general_cell_forward: dx, dh_prev, dc_prev or None, grads."""
    opts, v, h_prev = cache["opts"], cache["gates"], cache["h_prev"]
    w_hh = cache["w_hh"]
    H = v.shape[1] // NUM_GATES[cell]
    dc_prev, extra = None, {}
    if cell in ("rnn_tanh", "rnn_relu"):
        # backprop through h = a0(v)
        dv = dh * opts.dact(0, v)
        dgh = dv
        dh_prev, dw_hh = _product_backward(dv, h_prev, w_hh, cache.get("keep_h"))
    elif cell == "lstm":
        peep, c_prev = cache["peep"], cache["c_prev"]
        if cache["w_hr"] is not None:
            # backprop through h = m @ w_hr.T
            extra["w_hr"] = dh.T @ cache["m"]
            dh = dh @ cache["w_hr"]
        vi, vf, vg, vo = np.split(v, 4, axis=1)
        i = opts.act(0, vi)
        f = 1 - i if opts.input_forget else opts.act(0, vf)
        g = opts.act(1, vg)
        c = f * c_prev + i * g
        # backprop through m = o * a2(c), o = a0(vo), vo seeing p_o * c
        dvo = dh * opts.act(2, c, clip=False) * opts.dact(0, vo)
        dc = dc + dh * opts.act(0, vo) * opts.dact(2, c, clip=False)
        if peep is not None:
            dc = dc + dvo * peep[2 * H:]
        # backprop through c = f * c_prev + i * g (f = 1 - i when coupled)
        di, df = dc * g, dc * c_prev
        if opts.input_forget:
            di, df = di - df, 0 * df
        dvi = di * opts.dact(0, vi)
        dvf = df * opts.dact(0, vf)
        dvg = dc * i * opts.dact(1, vg)
        dc_prev = dc * f
        if peep is not None:
            # backprop through the peepholes
            dc_prev = dc_prev + dvi * peep[:H] + dvf * peep[H:2 * H]
            extra["peep"] = np.concatenate([(dvi * c_prev).sum(0), (dvf * c_prev).sum(0),
                                            (dvo * c).sum(0)])
        dv = np.concatenate([dvi, dvf, dvg, dvo], axis=1)
        dgh = dv
        dh_prev, dw_hh = _product_backward(dv, h_prev, w_hh, cache.get("keep_h"))
    else:
        vr, vz, vn = np.split(v, 3, axis=1)
        z, n = opts.act(0, vz), opts.act(1, vn)
        # backprop through h = (1 - z) * n + z * h_prev and the activations of z, n
        dvz = dh * (h_prev - n) * opts.dact(0, vz)
        dvn = dh * (1 - z) * opts.dact(1, vn)
        dh_prev = dh * z
        if cell == "gru":
            r = opts.act(0, vr)
            # backprop through vn = xn + r * hn
            dvr = dvn * cache["hn"] * opts.dact(0, vr)
            dgh = np.concatenate([dvr, dvz, dvn * r], axis=1)
            dh_rec, dw_hh = _product_backward(dgh, h_prev, w_hh, cache.get("keep_h"))
            dh_prev = dh_prev + dh_rec
        else:
            # backprop through vn = xn + (r * h_n) @ w_hn.T, h_n = h_prev * keep_h[2]
            keep_h = cache.get("keep_h")
            keep_rz, h_n = _rb_masks(h_prev, keep_h)
            drh = dvn @ w_hh[2 * H:]
            dvr = drh * h_n * opts.dact(0, vr)
            dh_prev = dh_prev + drh * opts.act(0, vr) * (1 if keep_h is None else keep_h[2])
            dgh = np.concatenate([dvr, dvz, dvn], axis=1)
            dh_rz, dw_rz = _product_backward(dgh[:, :2 * H], h_prev, w_hh[:2 * H], keep_rz)
            dh_prev = dh_prev + dh_rz
            dw_hh = np.concatenate([dw_rz, dvn.T @ cache["rh"]])
        dv = np.concatenate([dvr, dvz, dvn], axis=1)
    dx, grads = _grads(cache, dv, dgh, dw_hh)
    grads["w_hr"] = extra.get("w_hr")
    grads["peep"] = extra.get("peep")
    return dx, dh_prev, dc_prev, grads


# ---------------------------------------------------- layer: time loop, direction, lengths

def layer_forward(cell: str, x: Array, h0: Array, c0: Optional[Array], w_ih: Array, w_hh: Array,
                  b_ih: Optional[Array], b_hh: Optional[Array], lengths: Optional[Array] = None,
                  reverse: bool = False, w_hr: Optional[Array] = None,
                  opts: Optional[Options] = None, peep: Optional[Array] = None,
                  zoneout: Optional[tuple] = None, dropout: Optional[tuple] = None,
                  ln: Optional[LayerNorm] = None) -> tuple[Array, Array, Optional[Array], Cache]:
    """One layer, one direction, time-major.

    x (T, B, I); h0 (B, R), c0 (B, H), c0 None unless cell == "lstm", with
    R = P for an LSTM projection w_hr (P, H), else H; lengths None or ints
    (B,) with 0 <= lengths[b] <= T; opts (and LSTM peepholes peep (3H)) select
    the general cells; zoneout, dropout and ln (layer normalization (g_ih, g_hh,
    g_c, b_c), "lstm" and "gru" only) as the module says. Returns y (T, B, R),
    h_n (B, R), c_n (B, H) or None, and the cache for layer_backward."""
    if ln is not None and (opts is not None or peep is not None):
        raise ValueError("ln: layer normalization is not implemented for the general cells "
                         "(opts, peep)")
    _check_ln(cell, ln, w_hr)
    T, B, _ = x.shape
    H = w_ih.shape[0] // NUM_GATES[cell]
    R = w_hh.shape[-1]                             # IndRNN's u is (H,)
    dtype = np.result_type(x, h0, w_ih, w_hh)
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
    mask_h, mask_c, p_h, p_c = (None, None, 0.0, 0.0) if zoneout is None else zoneout
    keep_x, keep_h = _keep_masks(dropout, dtype)
    cache: Cache = {"cell": cell, "reverse": reverse, "lengths": lengths, "x": x,
                    "w_hr": w_hr, "opts": opts, "peep": peep, "zoneout": zoneout, "ln": ln,
                    **_params(w_ih, w_hh, b_ih, b_hh, keep_x, keep_h)}
    saved = _saved(cell, w_hr, ln)
    widths = {"gates": NUM_GATES[cell] * H, "h_prev": R, "ln_ih": NUM_GATES[cell] * H,
              "ln_hh": NUM_GATES[cell] * H, "rstd": 3 if cell == "lstm" else 2}
    for k in saved:
        cache[k] = np.empty((T, B, widths.get(k, H)), dtype)
    y = np.zeros((T, B, R), dtype)
    h, c = h0, c0
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        active = (t < lengths)[:, None]            # (B, 1)
        if opts is None:
            h_t, c_t, step = cell_forward(cell, x[t], h, c, w_ih, w_hh, b_ih, b_hh, w_hr,
                                          keep_x, keep_h, ln)
        else:
            h_t, c_t, step = general_cell_forward(cell, x[t], h, c, w_ih, w_hh, b_ih, b_hh,
                                                  opts, peep, w_hr, keep_x, keep_h)
        for k in saved:
            cache[k][t] = step[k]
        # zoneout: a unit keeps its previous value where masked (the expectation without masks)
        h_t = _zoneout(h_t, h, None if mask_h is None else mask_h[t], p_h)
        c_t = None if c is None else _zoneout(c_t, c, None if mask_c is None else mask_c[t], p_c)
        y[t] = np.where(active, h_t, 0)
        # inactive rows keep their state
        h = np.where(active, h_t, h)
        c = None if c is None else np.where(active, c_t, c)
    return y, h, c, cache


def layer_backward(cell: str, cache: Cache, dy: Optional[Array], dh_n: Optional[Array] = None,
                   dc_n: Optional[Array] = None
                   ) -> tuple[Array, Array, Optional[Array], Grads]:
    """Backward of layer_forward. dy (T, B, R), dh_n (B, R) and dc_n (B, H), each None
    for zeros. Returns dx (T, B, I), dh0 (B, R), dc0 (B, H) or None, and the parameter
    gradients {"w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "peep", "ln_ih", "ln_hh", "ln_c",
    "ln_cb"} (None for an absent parameter; the last four: g_ih, g_hh, g_c, b_c of ln)."""
    x, lengths, ln = cache["x"], cache["lengths"], cache.get("ln")
    T = x.shape[0]
    dx = np.zeros_like(x)
    params = {k: cache[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "peep")}
    params.update(zip(LN_GRADS, (None,) * 4 if ln is None else ln))
    grads = {k: None if v is None else np.zeros_like(v) for k, v in params.items()}
    # dh, dc: the gradient of the state carried out of the current step
    dh = np.zeros(cache["h_prev"].shape[1:], cache["h_prev"].dtype) if dh_n is None else dh_n
    dc = None
    if cell == "lstm":
        dc = np.zeros(cache["c_prev"].shape[1:], x.dtype) if dc_n is None else dc_n
    saved = _saved(cell, cache["w_hr"], ln)
    steps = range(T - 1, -1, -1) if cache["reverse"] else range(T)
    zoneout = cache["zoneout"]
    mask_h, mask_c, p_h, p_c = (None, None, 0.0, 0.0) if zoneout is None else zoneout
    for t in reversed(steps):
        active = (t < lengths)[:, None]            # (B, 1)
        step = {"x": x[t], "w_hr": cache["w_hr"], "opts": cache["opts"], "peep": cache["peep"],
                "ln": ln,
                **{k: cache[k][t] for k in saved},
                **_params(cache["w_ih"], cache["w_hh"], cache["b_ih"], cache["b_hh"],
                          cache["keep_x"], cache.get("keep_h"))}
        if cell in ("rnn_tanh", "rnn_relu", "indrnn_tanh", "indrnn_relu"):
            step["nonlinearity"] = cell.split("_")[1]
        # an active step's output is both y[t] and the carried state
        dh_t = np.where(active, dh + (0 if dy is None else dy[t]), 0)
        dc_t = None if dc is None else np.where(active, dc, 0)
        # backprop through zoneout: h = keep*h_prev + (1-keep)*h_new (c likewise)
        dh_t, dh_kept = _zoneout_backward(dh_t, None if mask_h is None else mask_h[t], p_h)
        if dc is not None:
            dc_t, dc_kept = _zoneout_backward(dc_t, None if mask_c is None else mask_c[t], p_c)
        if cache["opts"] is None:
            dx[t], dh_prev, dc_prev, step_grads = cell_backward(cell, dh_t, dc_t, step)
        else:
            step.setdefault("c_prev", None)
            dx[t], dh_prev, dc_prev, step_grads = general_cell_backward(cell, dh_t, dc_t, step)
        # an inactive step passed the state through, and so passes its gradient back
        dh = dh_prev + dh_kept + np.where(active, 0, dh)
        dc = None if dc is None else dc_prev + dc_kept + np.where(active, 0, dc)
        for k, g in grads.items():
            if g is not None:
                g += step_grads[k]
    return dx, dh, dc, grads


def _saved(cell: str, w_hr: Optional[Array], ln: Optional[LayerNorm]) -> tuple[str, ...]:
    """The step-cache entries a layer keeps per step (module docstring)."""
    return (SAVED[cell] + (("m",) if w_hr is not None else ())
            + (LN_SAVED[cell] if ln is not None else ()))


def _zoneout(new: Array, prev: Array, keep: Optional[Array], p: float) -> Array:
    """Zoneout of one step: prev where keep (B, n) is nonzero, else new; without a
    mask, the expectation p * prev + (1 - p) * new (p = 0: new)."""
    if keep is not None:
        return np.where(keep != 0, prev, new)
    return new if p == 0 else p * prev + (1 - p) * new


def _zoneout_backward(d: Array, keep: Optional[Array], p: float) -> tuple[Array, Array]:
    """Backward of _zoneout: (the gradient of new, the gradient of prev)."""
    if keep is not None:
        return np.where(keep != 0, 0, d).astype(d.dtype), np.where(keep != 0, d, 0).astype(d.dtype)
    return (1 - p) * d, p * d


def _keep_masks(dropout: Optional[tuple], dtype) -> tuple[Optional[Array], Optional[Array]]:
    """The scaled masks keep_x (G, B, I), keep_h (G, B, R) of dropout = (mask_x,
    mask_h, p_x, p_h) (uint8, 1: kept): 0 or 1 / (1 - p) in dtype (inverted dropout)."""
    if dropout is None:
        return None, None
    mask_x, mask_h, p_x, p_h = dropout
    scale = (np.dtype(dtype).type(1 / (1 - p)) for p in (p_x, p_h))
    return tuple(None if m is None else (m != 0).astype(dtype) * s
                 for m, s in zip((mask_x, mask_h), scale))
