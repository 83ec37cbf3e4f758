"""The two backends behind every layer, with one interface.

A backend runs one direction of one layer per call (never one time step):

    forward(cell, x, h0, c0, weights, lengths, y, y_offset, batch_first,
            reverse, training, options, zoneout, dropout) -> (h_n, c_n, saved)
    backward(saved, dy, y_offset, dh_n, dc_n, dx, accumulate_dx, grads) -> (dh0, dc0)

x is (T, B, I), or (B, T, I) when batch_first, C-contiguous in the layer's
dtype; y has the same leading axes and D*R columns (R = proj_size or H), of
which this direction writes [y_offset, y_offset + R). weights and grads are
(w_ih, w_hh, b_ih, b_hh, w_hr, peep, ln) with None for a parameter the layer
does not have (biases, the LSTM projection w_hr, the LSTM peepholes, layer
normalization); ln is (g_ih, g_hh, g_c, b_c), the gains of the normalized
input and recurrent products and the LSTM's cell-state gain and shift (None
for the GRU); grads accumulate. options is None for PyTorch's cells, or (activations, clip,
input_forget) for the general cells, activations as ((name, alpha, beta), ...).
zoneout is None, or (mask_h, mask_c, p_h, p_c): uint8 masks with x's leading
axes and R (h) or H (LSTM c) columns, 1 where a unit keeps its previous value
(training), or None with p_h, p_c > 0 for inference's expectation. dropout
is None, or (mask_x, mask_h, p_x, p_h) in training: Keras' per-gate keep-masks
uint8 (G, B, I) and (G, B, R) or None, and their rates. dx is
written, or added to when accumulate_dx. ``saved`` is what backward needs,
None after an inference forward.
"""
from __future__ import annotations

import sys

import numpy as np

from fastrnn import _kernels, reference


class CBackend:
    """The compiled kernels. Owns a workspace per dtype, reused across calls, and
    recycles training caches that nothing references any more."""

    name = "c"

    # training caches kept for reuse per backend (one per layer-direction of a
    # stack is the steady state of a training loop)
    MAX_SPARE_CACHES = 8

    def __init__(self) -> None:
        self._work: dict = {}
        self._caches: list = []

    def _cache(self, dtype, size: int) -> np.ndarray:
        """An array for a training cache. Large fresh arrays come from the OS
        as new pages, whose faults and zeroing cost 5-10% of a training step at
        (100, 64, 256, 256); so a cache held by nothing but this list (its
        forward's backward is done, or its record was dropped) is reused."""
        dtype = np.dtype(dtype)
        for cache in self._caches:
            # references: the list, the loop variable and getrefcount's argument
            if cache.shape[0] == size and cache.dtype == dtype and sys.getrefcount(cache) <= 3:
                return cache
        cache = np.empty(size, dtype)
        if len(self._caches) >= self.MAX_SPARE_CACHES:
            self._caches.pop(0)
        self._caches.append(cache)
        return cache

    def _workspace(self, dtype, size: int) -> np.ndarray:
        work = self._work.get(np.dtype(dtype))
        if work is None or work.shape[0] < size:
            work = np.empty(max(size, 1), dtype=dtype)
            self._work[np.dtype(dtype)] = work
        return work

    def forward(self, cell, x, h0, c0, weights, lengths, y, y_offset, batch_first,
                reverse, training, options=None, zoneout=None, dropout=None):
        T, B, I, H, P = _sizes(cell, x, weights, batch_first)
        h_n = np.empty_like(h0)
        c_n = np.empty_like(c0) if cell == "lstm" else None
        ln = weights[6]
        cache = self._cache(x.dtype, _kernels.cache_size(cell, T, B, I, H, P, ln is not None)) \
            if training else None
        work = self._workspace(x.dtype, _kernels.forward_work_size(
            cell, T, B, I, H, training, P, zoneout is not None, dropout is not None,
            ln is not None))
        _kernels.forward(cell, x, h0, c0, *weights[:5], lengths, y, y_offset, h_n, c_n, cache,
                         work, batch_first, reverse, peep=weights[5], options=options,
                         zoneout=zoneout, dropout=dropout, ln=ln)
        saved = (cell, cache, x, weights, lengths, batch_first, reverse, options, zoneout,
                 dropout) if training else None
        return h_n, c_n, saved

    def backward(self, saved, dy, y_offset, dh_n, dc_n, dx, accumulate_dx, grads):
        cell, cache, x, weights, lengths, batch_first, reverse, options, zoneout, dropout = saved
        w_ih, w_hh, _, _, w_hr, peep, ln = weights
        T, B, I, H, P = _sizes(cell, x, weights, batch_first)
        dh0 = np.empty((B, P or H), x.dtype)
        dc0 = np.empty((B, H), x.dtype) if cell == "lstm" else None
        work = self._workspace(x.dtype, _kernels.backward_work_size(
            cell, T, B, I, H, P, zoneout is not None, dropout is not None, ln is not None))
        _kernels.backward(cell, dx, accumulate_dx, dh0, dc0, *grads[:5], dy, y_offset, dh_n, dc_n,
                          cache, x, w_ih, w_hh, w_hr, lengths, work, batch_first, reverse,
                          dpeep=grads[5], peep=peep, options=options, zoneout=zoneout,
                          dropout=dropout, ln=ln, dln=grads[6])
        return dh0, dc0


class NumpyBackend:
    """The readable reference (fastrnn.reference), time-major inside."""

    name = "numpy"

    def forward(self, cell, x, h0, c0, weights, lengths, y, y_offset, batch_first,
                reverse, training, options=None, zoneout=None, dropout=None):
        xt = x.transpose(1, 0, 2) if batch_first else x
        w_ih, w_hh, b_ih, b_hh, w_hr, peep, ln = weights
        opts = None if options is None else reference.Options(*options)
        if zoneout is not None and batch_first:   # the masks, time-major as x
            zoneout = tuple(m.transpose(1, 0, 2) if isinstance(m, np.ndarray) else m
                            for m in zoneout)
        out, h_n, c_n, cache = reference.layer_forward(cell, xt, h0, c0, w_ih, w_hh, b_ih, b_hh,
                                                       lengths=lengths, reverse=reverse, w_hr=w_hr,
                                                       opts=opts, peep=peep, zoneout=zoneout,
                                                       dropout=dropout, ln=ln)
        R = h0.shape[1]
        yt = y.transpose(1, 0, 2) if batch_first else y
        yt[:, :, y_offset:y_offset + R] = out
        saved = (cell, cache, batch_first) if training else None
        return h_n, c_n, saved

    def backward(self, saved, dy, y_offset, dh_n, dc_n, dx, accumulate_dx, grads):
        cell, cache, batch_first = saved
        dyt = None
        if dy is not None:
            dyt = dy.transpose(1, 0, 2) if batch_first else dy
            R = grads[1].shape[-1]  # dw_hh is (G*H, R), or IndRNN's (H,)
            dyt = dyt[:, :, y_offset:y_offset + R]
        dxt, dh0, dc0, step_grads = reference.layer_backward(cell, cache, dyt, dh_n, dc_n)
        dxt = dxt.transpose(1, 0, 2) if batch_first else dxt
        if accumulate_dx:
            dx += dxt
        else:
            dx[...] = dxt
        ln_grads = grads[6] if grads[6] is not None else (None,) * 4
        for total, name in zip(grads[:6] + tuple(ln_grads),
                               ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "peep",
                                "ln_ih", "ln_hh", "ln_c", "ln_cb")):
            if total is not None:
                total += step_grads[name]
        return dh0, dc0


def _sizes(cell, x, weights, batch_first):
    """T, B, I, H, P of a layer-direction call (P = 0 without projection)."""
    T, B = (x.shape[1], x.shape[0]) if batch_first else x.shape[:2]
    w_ih, w_hr = weights[0], weights[4]
    H = w_ih.shape[0] // _kernels.num_gates(cell)
    return T, B, x.shape[2], H, (0 if w_hr is None else w_hr.shape[0])


BACKENDS = {"c": CBackend, "numpy": NumpyBackend}
