"""Bindings of the C kernels (csrc/fastrnn.h).

This module checks everything that could make the C code read or write out of
bounds (types, dtypes, contiguity, agreeing sizes, length ranges), then calls
C with the GIL released. Nothing numerical happens here. User-facing argument
checks with friendly messages live in fastrnn/layers.py; the checks here are
the last line of defence and raise plain ValueError/TypeError.
"""
import numpy as np

from cpython.buffer cimport PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBuffer_Release, PyObject_GetBuffer
from libc.limits cimport INT_MAX
from libc.stdint cimport uintptr_t
from libc.string cimport memset
from scipy.linalg.cython_blas cimport sgemm, dgemm

from fastrnn._kernels cimport *
from fastrnn.kinds import ELEMENTWISE   # the kinds whose w_hh is u (H,)

ctypedef fused floating:
    float
    double

CELLS = {
    "rnn_tanh": FASTRNN_RNN_TANH,
    "rnn_relu": FASTRNN_RNN_RELU,
    "lstm": FASTRNN_LSTM,
    "gru": FASTRNN_GRU,
    "gru_reset_before": FASTRNN_GRU_RESET_BEFORE,
    "indrnn_tanh": FASTRNN_INDRNN_TANH,
    "indrnn_relu": FASTRNN_INDRNN_RELU,
}



def _w_hh_shape(str cell, G, H, R):
    """The shape of w_hh: (G*H, R), or (H,) for IndRNN."""
    if cell in ELEMENTWISE:
        return (H,)
    return (G * H, R)

# ONNX's activations, by fastrnn's (snake_case) names
ACTIVATIONS = {
    "sigmoid": FASTRNN_ACT_SIGMOID, "tanh": FASTRNN_ACT_TANH, "relu": FASTRNN_ACT_RELU,
    "affine": FASTRNN_ACT_AFFINE, "leaky_relu": FASTRNN_ACT_LEAKY_RELU,
    "thresholded_relu": FASTRNN_ACT_THRESHOLDED_RELU, "scaled_tanh": FASTRNN_ACT_SCALED_TANH,
    "hard_sigmoid": FASTRNN_ACT_HARD_SIGMOID, "elu": FASTRNN_ACT_ELU,
    "softsign": FASTRNN_ACT_SOFTSIGN, "softplus": FASTRNN_ACT_SOFTPLUS,
}

_INT_MAX = 2**31 - 1


def set_blas(bint enabled):
    """Use SciPy's BLAS for every GEMM (default), or the naive C GEMM."""
    if enabled:
        fastrnn_set_gemm(<fastrnn_sgemm_fn>sgemm, <fastrnn_dgemm_fn>dgemm)
    else:
        fastrnn_set_gemm(NULL, NULL)


def blas_enabled():
    """True when the kernels run their GEMMs through BLAS."""
    return bool(fastrnn_gemm_is_blas())


set_blas(True)


def set_blas_threading(uintptr_t get_threads, uintptr_t set_threads):
    """The addresses of the BLAS's int get_num_threads(void) and void
    set_num_threads(int) (0, 0: none): the kernels then run BLAS serially
    during their calls and split large products over their own threads."""
    if (get_threads == 0) != (set_threads == 0):
        raise ValueError("set_blas_threading: give both functions or neither")
    fastrnn_set_blas_threading(<fastrnn_blas_get_threads_fn>get_threads,
                               <fastrnn_blas_set_threads_fn>set_threads)

ISAS = {"baseline": FASTRNN_ISA_BASELINE, "avx2": FASTRNN_ISA_AVX2, "avx512": FASTRNN_ISA_AVX512}


def set_loop_threads(int n):
    """Threads of the kernels' own time loops (fastrnn.set_num_threads sets
    these together with BLAS's)."""
    if n < 1:
        raise ValueError(f"n: expected a positive integer, got {n}")
    fastrnn_set_num_threads(n)


def get_loop_threads():
    """Threads the kernels' time loops may use."""
    return fastrnn_get_num_threads()


def loop_threads(str cell, int T, int B, int I, int H, bint training, int P=0):
    """The threads a call of these sizes would run its time loop on, under the
    current setting (1 unless the batch and weights suit batch slices)."""
    cdef fastrnn_layer L = _layer(cell, T, B, I, H, P, False, False, P or H)
    return fastrnn_loop_threads(&L, training)


def unit_threads(str cell, int T, int B, int I, int H, bint training, int P=0):
    """The threads that would split the forward time loop's hidden units, under
    the current setting (1 unless that split applies; see csrc/internal.h)."""
    cdef fastrnn_layer L = _layer(cell, T, B, I, H, P, False, False, P or H)
    return fastrnn_unit_threads(&L, training)


def isa():
    """The instruction set of the kernel variant in use ("baseline", "avx2", "avx512")."""
    current = fastrnn_isa()
    return next(name for name, value in ISAS.items() if value == current)


cdef extern from "internal.h" nogil:
    void fastrnn_back_off(long long ns)
    int fastrnn_backing_off()


def back_off(double seconds):
    """For tests: make split regions and teams do their threads' shares one
    after another in the caller for this long (0: stop), as after a stall."""
    fastrnn_back_off(<long long>(seconds * 1e9))


def backing_off():
    """For tests: whether calls do their threads' shares in the caller now."""
    return bool(fastrnn_backing_off())


def fma_probe(long iterations):
    """Runs `iterations` rounds of independent float32 vector FMAs on registers
    (the variant in use) in this thread, without the GIL; returns the
    floating-point operations done. Timed on every core at once, it gives the
    machine's FMA peak (fastrnn.bench.timing.measure_fma_peak)."""
    cdef float sink
    cdef long flops
    if iterations < 0:
        raise ValueError(f"iterations: expected >= 0, got {iterations}")
    with nogil:
        flops = fastrnn_fma_probe_f32(iterations, &sink)
    return flops


def available_isas():
    """The variants this CPU can run, oldest first."""
    return [name for name, value in ISAS.items() if value <= fastrnn_best_isa()]


def set_isa(name):
    """Force a kernel variant (tests, benchmarks); None returns to the best one."""
    if name is None:
        fastrnn_set_isa(-1)
        return
    if name not in ISAS:
        raise ValueError(f"isa: expected one of {sorted(ISAS)} or None, got {name!r}")
    if fastrnn_set_isa(ISAS[name]) != FASTRNN_OK:
        raise ValueError(f"isa: this CPU cannot run the {name!r} kernels")


cdef fastrnn_layer _layer(str cell, int T, int B, int I, int H, int P, bint batch_first,
                          bint reverse, int ldy) except *:
    if cell not in CELLS:
        raise ValueError(f"unknown cell kind {cell!r}; expected one of {sorted(CELLS)}")
    cdef fastrnn_layer L
    memset(&L, 0, sizeof(L))
    L.cell = CELLS[cell]
    L.T, L.B, L.I, L.H, L.P = T, B, I, H, P
    L.batch_first, L.reverse, L.ldy = batch_first, reverse, ldy
    L.threads = fastrnn_get_num_threads()
    if min(T, B, I, H) < 1 or P < 0:
        raise ValueError(f"sizes must be >= 1, got T={T} B={B} I={I} H={H} P={P}")
    if P and cell != "lstm":
        raise ValueError(f"a projection (P={P}) is for LSTM only, got cell {cell!r}")
    # Python integers: the product must not wrap around before the test
    widest = max(I, ldy, <object>fastrnn_num_gates(L.cell) * H)
    if <object>T * <object>B * widest > _INT_MAX:
        raise ValueError("arrays too large for the 32-bit BLAS interface")
    return L


cdef _set_options(fastrnn_layer *L, options):
    """The general cells: options = (activations, clip, input_forget) with
    activations a sequence of (name, alpha, beta); None keeps the default cells."""
    if options is None:
        return
    activations, clip, input_forget = options
    if len(activations) > 3:
        raise ValueError(f"options: at most 3 activations, got {len(activations)}")
    L.general = 1
    for k, (name, alpha, beta) in enumerate(activations):
        if name not in ACTIVATIONS:
            raise ValueError(f"options: unknown activation {name!r}; expected one of "
                             f"{sorted(ACTIVATIONS)}")
        L.act[k].kind = ACTIVATIONS[name]
        L.act[k].alpha = alpha
        L.act[k].beta = beta
    L.clip = 0.0 if clip is None else clip
    if L.clip < 0 or L.clip != L.clip:
        raise ValueError(f"options: clip must be a positive number, got {clip}")
    L.input_forget = bool(input_forget)


def num_gates(str cell):
    return fastrnn_num_gates(CELLS[cell])


def cache_size(str cell, int T, int B, int I, int H, int P=0, bint layer_norm=False):
    """Elements of the training cache of one layer-direction."""
    cdef fastrnn_layer L = _layer(cell, T, B, I, H, P, False, False, P or H)
    L.layer_norm = layer_norm
    return fastrnn_cache_size(&L)


# a non-NULL mask for the sizing functions (whose layouts only test presence)
cdef unsigned char _PRESENT = 1


cdef _size_options(fastrnn_layer *L, bint zoneout, bint dropout):
    """Mark L as having zoneout and dropout (both masks) for the workspace sizes."""
    if zoneout:
        L.p_h = 0.5
    if dropout:
        L.drop_x = &_PRESENT
        L.drop_h = &_PRESENT


def forward_work_size(str cell, int T, int B, int I, int H, bint training, int P=0,
                      bint zoneout=False, bint dropout=False, bint layer_norm=False):
    cdef fastrnn_layer L = _layer(cell, T, B, I, H, P, False, False, P or H)
    _size_options(&L, zoneout, dropout)
    L.layer_norm = layer_norm
    return fastrnn_forward_work_size(&L, training)


def backward_work_size(str cell, int T, int B, int I, int H, int P=0, bint zoneout=False,
                       bint dropout=False, bint layer_norm=False):
    cdef fastrnn_layer L = _layer(cell, T, B, I, H, P, False, False, P or H)
    _size_options(&L, zoneout, dropout)
    L.layer_norm = layer_norm
    return fastrnn_backward_work_size(&L)


cdef const unsigned char *_mask_ptr(const unsigned char[::1] mask):
    """A checked uint8 mask's data (the caller keeps the array alive), or NULL."""
    return NULL if mask is None else &mask[0]


cdef tuple _set_zoneout(fastrnn_layer *L, zoneout, tuple rows, int R, int H, str cell):
    """Zoneout: zoneout = (mask_h, mask_c, p_h, p_c), masks uint8 (rows + (R,)) and,
    LSTM, (rows + (H,)) or None (1: the unit keeps its previous value), p_h and
    p_c the probabilities of inference's expectation (used without a mask).
    Returns the checked masks (the caller keeps them alive while C reads them)."""
    if zoneout is None:
        return (None, None)
    mask_h, mask_c, p_h, p_c = zoneout
    for name, p in (("p_h", p_h), ("p_c", p_c)):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"zoneout: {name} must be in [0, 1), got {p}")
    if (mask_c is not None or p_c) and cell != "lstm":
        raise ValueError(f"zoneout: a cell-state mask or p_c is for LSTM only, got cell {cell!r}")
    mh = _opt("zoneout mask_h", mask_h, np.uint8, rows + (R,))
    mc = _opt("zoneout mask_c", mask_c, np.uint8, rows + (H,))
    L.p_h, L.p_c = p_h, p_c
    L.zone_h, L.zone_c = _mask_ptr(mh), _mask_ptr(mc)
    return (mh, mc)


cdef tuple _set_dropout(fastrnn_layer *L, dropout, int G, int B, int I, int R, str cell,
                        bint training):
    """Keras' dropout: dropout = (mask_x, mask_h, p_x, p_h), keep-masks uint8 (G, B, I)
    and (G, B, R) or None (1: kept), p_x and p_h their rates (the scales are
    1 / (1 - p)); training only. Returns the checked masks (kept alive by the caller)."""
    if dropout is None:
        return (None, None)
    if not training:
        raise ValueError("dropout: masks are for training calls (a cache), got an inference call")
    mask_x, mask_h, p_x, p_h = dropout
    for name, p in (("p_x", p_x), ("p_h", p_h)):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout: {name} must be in [0, 1), got {p}")
    if mask_h is not None and cell in ELEMENTWISE:
        raise ValueError("dropout: recurrent dropout is not implemented for IndRNN")
    mx = _opt("dropout mask_x", mask_x, np.uint8, (G, B, I))
    mh = _opt("dropout mask_h", mask_h, np.uint8, (G, B, R))
    L.scale_x, L.scale_h = 1.0 / (1.0 - p_x), 1.0 / (1.0 - p_h)
    L.drop_x, L.drop_h = _mask_ptr(mx), _mask_ptr(mh)
    return (mx, mh)


def _check(str name, a, dtype, shape, bint out=False):
    """a must be a C-contiguous ndarray of dtype and shape (None: anything),
    writeable when it is an output."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype)}, got {a.dtype}")
    flags = a.flags   # one flags object (each .flags read makes a new one)
    if not flags.c_contiguous or not flags.aligned:
        raise ValueError(f"{name}: expected a C-contiguous, aligned array")
    if shape is not None and a.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {a.shape}")
    if out and not flags.writeable:
        raise ValueError(f"{name}: output array is read-only")
    return a.reshape(-1)


def _opt(str name, a, dtype, shape, bint out=False):
    return None if a is None else _check(name, a, dtype, shape, out)


def _lengths_and_order(lengths, int T, int B):
    """Checked lengths (B,) as C ints and the slot order sorting them descending."""
    if lengths is None:
        return None, None
    lengths = _check("lengths", lengths, np.intc, (B,))
    if B and (lengths.min() < 0 or lengths.max() > T):
        raise ValueError(f"lengths: expected values in [0, {T}]")
    order = np.ascontiguousarray(np.argsort(-lengths, kind="stable"), dtype=np.intc)
    return lengths, order


def _dims(str cell, x, w_ih, w_hh, w_hr, bint batch_first):
    """(T, B, I, H, P, R, G, dtype) from x and the weights' shapes (checked later)."""
    if not isinstance(x, np.ndarray) or x.ndim != 3:
        raise ValueError("x: expected a 3-D numpy.ndarray")
    if x.dtype != np.float32 and x.dtype != np.float64:
        raise TypeError(f"x: expected float32 or float64, got {x.dtype}")
    T, B = (x.shape[1], x.shape[0]) if batch_first else (x.shape[0], x.shape[1])
    if cell not in CELLS:
        raise ValueError(f"unknown cell kind {cell!r}; expected one of {sorted(CELLS)}")
    G = fastrnn_num_gates(CELLS[cell])
    w_hh_ndim = 1 if cell in ELEMENTWISE else 2
    for name, w, ndim in (("w_ih", w_ih, 2), ("w_hh", w_hh, w_hh_ndim)):
        if not isinstance(w, np.ndarray) or w.ndim != ndim:
            raise ValueError(f"{name}: expected a {ndim}-D numpy.ndarray")
    # H from w_hh (G*H, R), whose columns are H without a projection, else from
    # w_hr (P, H), or IndRNN's u (H,); every shape is then checked against these
    H, P = w_hh.shape[w_hh_ndim - 1], 0
    if w_hr is not None:
        if not isinstance(w_hr, np.ndarray) or w_hr.ndim != 2:
            raise ValueError("w_hr: expected a 2-D numpy.ndarray")
        P, H = w_hr.shape
    return T, B, x.shape[2], H, P, (P or H), G, x.dtype


def _peepholes(str cell, peep, dtype, int H, int general):
    """Checked LSTM peepholes (3H) of the general cells, or None."""
    if peep is None:
        return None
    if cell != "lstm" or not general:
        raise ValueError("peep: peepholes are for LSTM with options (the general cells)")
    return _check("peep", peep, dtype, (3 * H,))


cdef tuple _layer_norm(fastrnn_layer *L, str cell, ln, str name, dtype, int G, int H,
                       bint out=False):
    """Layer normalization's parameters ln = (g_ih (G*H,), g_hh (G*H,), g_c (H,),
    b_c (H,)), g_c and b_c the LSTM's only (else None), checked, or None for
    none; sets L.layer_norm. LSTM and GRU (reset after), without projection
    or options."""
    if ln is None:
        return None, None, None, None
    if cell not in ("lstm", "gru") or L.general or L.P:
        raise ValueError(f"{name}: layer normalization is for the LSTM and the GRU "
                         f"(reset after), without projection or options; got cell {cell!r}")
    if not isinstance(ln, tuple) or len(ln) != 4:
        raise ValueError(f"{name}: expected a tuple (g_ih, g_hh, g_c, b_c)")
    L.layer_norm = 1
    lstm = cell == "lstm"
    if not lstm and (ln[2] is not None or ln[3] is not None):
        raise ValueError(f"{name}: g_c and b_c normalize the LSTM's cell state; give None")
    return (_check(f"{name}[0]", ln[0], dtype, (G * H,), out),
            _check(f"{name}[1]", ln[1], dtype, (G * H,), out),
            _check(f"{name}[2]", ln[2], dtype, (H,), out) if lstm else None,
            _check(f"{name}[3]", ln[3], dtype, (H,), out) if lstm else None)


def forward(str cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, y, int y_offset,
            h_n, c_n, cache, work, bint batch_first, bint reverse, peep=None, options=None,
            zoneout=None, dropout=None, ln=None):
    """Run one layer-direction forward; training when cache is not None.

    x (T, B, I) or (B, T, I); y the same rows with ldy columns, this direction
    writes columns [y_offset, y_offset + R), R = P (projection) or H; h0, h_n
    (B, R); c0, c_n (B, H) for LSTM; w_hr (P, H) or None; cache
    (cache_size,) or None; work (>= forward_work_size,); peep (3H) LSTM
    peepholes or None; options for the general cells (see _set_options);
    zoneout see _set_zoneout; dropout see _set_dropout; ln see _layer_norm.
    """
    T, B, I, H, P, R, G, dt = _dims(cell, x, w_ih, w_hh, w_hr, batch_first)
    if not isinstance(y, np.ndarray) or y.ndim != 3:
        raise ValueError("y: expected a 3-D numpy.ndarray")
    ldy = y.shape[2]
    cdef fastrnn_layer L = _layer(cell, T, B, I, H, P, batch_first, reverse, ldy)
    _set_options(&L, options)
    masks = _set_zoneout(&L, zoneout, x.shape[:2], R, H, cell)
    drops = _set_dropout(&L, dropout, G, B, I, R, cell, cache is not None)
    lni, lnh, lnc, lncb = _layer_norm(&L, cell, ln, "ln", dt, G, H)
    if y_offset < 0 or y_offset + R > ldy:
        raise ValueError(f"y_offset: {y_offset} + {R} exceeds y's {ldy} columns")
    lstm = cell == "lstm"
    xf = _check("x", x, dt, None)
    yf = _check("y", y, dt, x.shape[:2] + (ldy,), out=True)
    wi = _check("w_ih", w_ih, dt, (G * H, I))
    wh = _check("w_hh", w_hh, dt, _w_hh_shape(cell, G, H, R))
    wr = _opt("w_hr", w_hr, dt, (P, H))
    pp = _peepholes(cell, peep, dt, H, L.general)
    bi = _opt("b_ih", b_ih, dt, (G * H,))
    bh = _opt("b_hh", b_hh, dt, (G * H,))
    if (bi is None) != (bh is None):
        raise ValueError("b_ih and b_hh: give both or neither")
    h0f = _check("h0", h0, dt, (B, R))
    hnf = _check("h_n", h_n, dt, (B, R), out=True)
    c0f = _check("c0", c0, dt, (B, H)) if lstm else None
    cnf = _check("c_n", c_n, dt, (B, H), out=True) if lstm else None
    training = cache is not None
    cf = _opt("cache", cache, dt, (fastrnn_cache_size(&L),), out=True)
    wf = _check("work", work, dt, None, out=True)
    if wf.shape[0] < fastrnn_forward_work_size(&L, training):
        raise ValueError("work: too small")
    lf, of = _lengths_and_order(lengths, T, B)
    if dt == np.float32:
        _forward[float](&L, yf, y_offset, hnf, cnf, cf, wf, xf, h0f, c0f, wi, wh, bi, bh, wr,
                        pp, lni, lnh, lnc, lncb, lf, of)
    else:
        _forward[double](&L, yf, y_offset, hnf, cnf, cf, wf, xf, h0f, c0f, wi, wh, bi, bh, wr,
                         pp, lni, lnh, lnc, lncb, lf, of)


def backward(str cell, dx, bint accumulate_dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr,
             dy, int y_offset, dh_n, dc_n, cache, x, w_ih, w_hh, w_hr, lengths, work,
             bint batch_first, bint reverse, dpeep=None, peep=None, options=None,
             zoneout=None, dropout=None, ln=None, dln=None):
    """Backward of the forward that filled cache (same x, weights, lengths, flags).

    dx like x (written, or added to when accumulate_dx); dh0 (B, R), dc0 (B, H)
    written; dw_*, db_* accumulated (biases may be None, dw_hr None without
    projection); dy like y or None, this direction reads columns
    [y_offset, y_offset + R); dh_n (B, R), dc_n (B, H) or None; ln the
    forward's layer normalization parameters (_layer_norm) and dln their
    gradients, accumulated.
    """
    T, B, I, H, P, R, G, dt = _dims(cell, x, w_ih, w_hh, w_hr, batch_first)
    ldy = R
    if dy is not None:
        if not isinstance(dy, np.ndarray) or dy.ndim != 3:
            raise ValueError("dy: expected a 3-D numpy.ndarray")
        ldy = dy.shape[2]
    cdef fastrnn_layer L = _layer(cell, T, B, I, H, P, batch_first, reverse, ldy)
    _set_options(&L, options)
    masks = _set_zoneout(&L, zoneout, x.shape[:2], R, H, cell)
    drops = _set_dropout(&L, dropout, G, B, I, R, cell, True)
    lni, lnh, lnc, lncb = _layer_norm(&L, cell, ln, "ln", dt, G, H)
    if (ln is None) != (dln is None):
        raise ValueError("ln and dln: give both or neither")
    dlni, dlnh, dlnc, dlncb = _layer_norm(&L, cell, dln, "dln", dt, G, H, out=True)
    if dy is not None and (y_offset < 0 or y_offset + R > ldy):
        raise ValueError(f"y_offset: {y_offset} + {R} exceeds dy's {ldy} columns")
    if cache is None:
        raise ValueError("cache: backward needs the cache of a training forward")
    lstm = cell == "lstm"
    xf = _check("x", x, dt, None)
    dxf = _check("dx", dx, dt, x.shape, out=True)
    dyf = _opt("dy", dy, dt, x.shape[:2] + (ldy,))
    wi = _check("w_ih", w_ih, dt, (G * H, I))
    wh = _check("w_hh", w_hh, dt, _w_hh_shape(cell, G, H, R))
    wr = _opt("w_hr", w_hr, dt, (P, H))
    dwi = _check("dw_ih", dw_ih, dt, (G * H, I), out=True)
    dwh = _check("dw_hh", dw_hh, dt, _w_hh_shape(cell, G, H, R), out=True)
    dwr = _check("dw_hr", dw_hr, dt, (P, H), out=True) if P else None
    pp = _peepholes(cell, peep, dt, H, L.general)
    dpp = _check("dpeep", dpeep, dt, (3 * H,), out=True) if pp is not None else None
    dbi = _opt("db_ih", db_ih, dt, (G * H,), out=True)
    dbh = _opt("db_hh", db_hh, dt, (G * H,), out=True)
    if (dbi is None) != (dbh is None):
        raise ValueError("db_ih and db_hh: give both or neither")
    dh0f = _check("dh0", dh0, dt, (B, R), out=True)
    dhnf = _opt("dh_n", dh_n, dt, (B, R))
    dc0f = _check("dc0", dc0, dt, (B, H), out=True) if lstm else None
    dcnf = _opt("dc_n", dc_n, dt, (B, H)) if lstm else None
    cf = _check("cache", cache, dt, (fastrnn_cache_size(&L),))
    wf = _check("work", work, dt, None, out=True)
    if wf.shape[0] < fastrnn_backward_work_size(&L):
        raise ValueError("work: too small")
    lf, of = _lengths_and_order(lengths, T, B)
    L.accumulate_dx = accumulate_dx
    if dt == np.float32:
        _backward[float](&L, dxf, dh0f, dc0f, dwi, dwh, dbi, dbh, dwr, dpp,
                         dlni, dlnh, dlnc, dlncb, wf, dyf, y_offset, dhnf, dcnf, cf, xf, wi, wh,
                         wr, pp, lni, lnh, lnc, lncb, lf, of)
    else:
        _backward[double](&L, dxf, dh0f, dc0f, dwi, dwh, dbi, dbh, dwr, dpp,
                          dlni, dlnh, dlnc, dlncb, wf, dyf, y_offset, dhnf, dcnf, cf, xf, wi, wh,
                          wr, pp, lni, lnh, lnc, lncb, lf, of)


cdef inline floating *_ptr(floating[::1] a) noexcept nogil:
    return NULL if a is None else &a[0]


cdef inline const floating *_cptr(const floating[::1] a) noexcept nogil:
    if a is None:
        return NULL
    return &a[0]


cdef inline const int *_iptr(const int[::1] a) noexcept nogil:
    if a is None:
        return NULL
    return &a[0]


STATUS_MESSAGES = {
    FASTRNN_ERR_ARGUMENT: "fastrnn kernel: a size or flag outside the documented range "
                          "(a bug in the checks of fastrnn._kernels)",
    FASTRNN_ERR_NO_CACHE: "cache: backward needs the cache of a training forward",
}


cdef int _raise_status(int status) except -1:
    if status != FASTRNN_OK:
        raise ValueError(STATUS_MESSAGES.get(status, f"fastrnn kernel: unknown status {status}"))
    return 0


# ------------------------------------------------- the one dtype dispatch point
#
# Every kernel call (the layers' forward and backward, and the cells' lean
# step below) goes through these two functions: kind b'f' runs the float32
# kernels, b'd' the float64 ones. The callers hand over untyped pointers
# already checked for that dtype. p holds the parameters w_ih, w_hh, b_ih,
# b_hh, w_hr, peep, ln_ih, ln_hh, ln_c, ln_cb (NULL: absent), dp their gradients.

cdef inline fastrnn_params_f32 _params_f32(void **p) noexcept nogil:
    return fastrnn_params_f32(<float *>p[0], <float *>p[1], <float *>p[2], <float *>p[3],
                              <float *>p[4], <float *>p[5], <float *>p[6], <float *>p[7],
                              <float *>p[8], <float *>p[9])


cdef inline fastrnn_params_f64 _params_f64(void **p) noexcept nogil:
    return fastrnn_params_f64(<double *>p[0], <double *>p[1], <double *>p[2], <double *>p[3],
                              <double *>p[4], <double *>p[5], <double *>p[6], <double *>p[7],
                              <double *>p[8], <double *>p[9])


cdef int _run_forward(char kind, void *y, void *h_n, void *c_n, void *cache, void *work,
                      const void *x, const void *h0, const void *c0, void **p,
                      const fastrnn_layer *L) noexcept nogil:
    cdef fastrnn_params_f32 W32
    cdef fastrnn_params_f64 W64
    cdef fastrnn_state_f32 s0_32, sn_32
    cdef fastrnn_state_f64 s0_64, sn_64
    if kind == b'f':
        W32 = _params_f32(p)
        s0_32 = fastrnn_state_f32(<float *>h0, <float *>c0)
        sn_32 = fastrnn_state_f32(<float *>h_n, <float *>c_n)
        return fastrnn_forward_f32(<float *>y, &sn_32, <float *>cache, <float *>work,
                                   <const float *>x, &s0_32, &W32, L)
    W64 = _params_f64(p)
    s0_64 = fastrnn_state_f64(<double *>h0, <double *>c0)
    sn_64 = fastrnn_state_f64(<double *>h_n, <double *>c_n)
    return fastrnn_forward_f64(<double *>y, &sn_64, <double *>cache, <double *>work,
                               <const double *>x, &s0_64, &W64, L)


cdef int _run_backward(char kind, void *dx, void *dh0, void *dc0, void **dp, void *work,
                       const void *dy, const void *dh_n, const void *dc_n, const void *cache,
                       const void *x, void **p, const fastrnn_layer *L) noexcept nogil:
    cdef fastrnn_params_f32 W32, dW32
    cdef fastrnn_params_f64 W64, dW64
    cdef fastrnn_state_f32 d0_32, dn_32
    cdef fastrnn_state_f64 d0_64, dn_64
    if kind == b'f':
        W32 = _params_f32(p)
        dW32 = _params_f32(dp)
        d0_32 = fastrnn_state_f32(<float *>dh0, <float *>dc0)
        dn_32 = fastrnn_state_f32(<float *>dh_n, <float *>dc_n)
        return fastrnn_backward_f32(<float *>dx, &d0_32, &dW32, <float *>work,
                                    <const float *>dy, &dn_32, <const float *>cache,
                                    <const float *>x, &W32, L)
    W64 = _params_f64(p)
    dW64 = _params_f64(dp)
    d0_64 = fastrnn_state_f64(<double *>dh0, <double *>dc0)
    dn_64 = fastrnn_state_f64(<double *>dh_n, <double *>dc_n)
    return fastrnn_backward_f64(<double *>dx, &d0_64, &dW64, <double *>work,
                                <const double *>dy, &dn_64, <const double *>cache,
                                <const double *>x, &W64, L)


cdef _forward(fastrnn_layer *L, floating[::1] y, int y_offset, floating[::1] h_n,
              floating[::1] c_n, floating[::1] cache, floating[::1] work,
              const floating[::1] x, const floating[::1] h0, const floating[::1] c0,
              const floating[::1] w_ih, const floating[::1] w_hh, const floating[::1] b_ih,
              const floating[::1] b_hh, const floating[::1] w_hr, const floating[::1] peep,
              const floating[::1] ln_ih, const floating[::1] ln_hh, const floating[::1] ln_c,
              const floating[::1] ln_cb, const int[::1] lengths, const int[::1] order):
    """The checked arrays' pointers, then the kernel without the GIL."""
    cdef int status
    cdef char kind = b'f' if floating is float else b'd'
    cdef void *p[10]
    p[:] = [<void *>_cptr(w_ih), <void *>_cptr(w_hh), <void *>_cptr(b_ih), <void *>_cptr(b_hh),
            <void *>_cptr(w_hr), <void *>_cptr(peep), <void *>_cptr(ln_ih),
            <void *>_cptr(ln_hh), <void *>_cptr(ln_c), <void *>_cptr(ln_cb)]
    L.lengths, L.order = _iptr(lengths), _iptr(order)
    with nogil:
        status = _run_forward(kind, _ptr(y) + y_offset, _ptr(h_n), _ptr(c_n), _ptr(cache),
                              _ptr(work), _cptr(x), _cptr(h0), _cptr(c0), p, L)
    _raise_status(status)


cdef _backward(fastrnn_layer *L, floating[::1] dx, floating[::1] dh0,
               floating[::1] dc0, floating[::1] dw_ih, floating[::1] dw_hh,
               floating[::1] db_ih, floating[::1] db_hh, floating[::1] dw_hr,
               floating[::1] dpeep, floating[::1] dln_ih, floating[::1] dln_hh,
               floating[::1] dln_c, floating[::1] dln_cb, floating[::1] work,
               const floating[::1] dy, int y_offset, const floating[::1] dh_n,
               const floating[::1] dc_n, const floating[::1] cache, const floating[::1] x,
               const floating[::1] w_ih, const floating[::1] w_hh, const floating[::1] w_hr,
               const floating[::1] peep, const floating[::1] ln_ih, const floating[::1] ln_hh,
               const floating[::1] ln_c, const floating[::1] ln_cb, const int[::1] lengths,
               const int[::1] order):
    """The checked arrays' pointers, then the kernel without the GIL."""
    cdef int status
    cdef char kind = b'f' if floating is float else b'd'
    cdef const floating *dyp = NULL
    cdef void *p[10]
    cdef void *dp[10]
    if dy is not None:
        dyp = &dy[y_offset]
    # backward reads no bias
    p[:] = [<void *>_cptr(w_ih), <void *>_cptr(w_hh), NULL, NULL, <void *>_cptr(w_hr),
            <void *>_cptr(peep), <void *>_cptr(ln_ih), <void *>_cptr(ln_hh),
            <void *>_cptr(ln_c), <void *>_cptr(ln_cb)]
    dp[:] = [<void *>_ptr(dw_ih), <void *>_ptr(dw_hh), <void *>_ptr(db_ih), <void *>_ptr(db_hh),
             <void *>_ptr(dw_hr), <void *>_ptr(dpeep), <void *>_ptr(dln_ih),
             <void *>_ptr(dln_hh), <void *>_ptr(dln_c), <void *>_ptr(dln_cb)]
    L.lengths, L.order = _iptr(lengths), _iptr(order)
    with nogil:
        status = _run_backward(kind, _ptr(dx), _ptr(dh0), _ptr(dc0), dp, _ptr(work), dyp,
                               _cptr(dh_n), _cptr(dc_n), _cptr(cache), _cptr(x), p, L)
    _raise_status(status)


# ------------------------------------------------------------ one inference step
#
# The cells' fast path: one step (T = 1) of a default cell, in inference. The
# arrays are read through the buffer protocol (one PyObject_GetBuffer each, no
# memoryview objects: numpy's C API would be cheaper still, but its headers are
# not on this build's include path). The checks are those of forward, written
# for this one shape of call. The arguments keep the arrays alive while the
# GIL is released, and ndarray.resize refuses arrays referenced elsewhere.

cdef type _ndarray = np.ndarray
cdef object _empty = np.empty
cdef object _float32 = np.dtype(np.float32)
cdef object _float64 = np.dtype(np.float64)


cdef char _get(Py_buffer *v, object a, str name, char kind, bint out) except 0:
    """v = a's buffer: a C-contiguous, aligned ndarray of float32 (kind 'f') or
    float64 ('d'), or of either when kind is 0; writeable when out. Returns the
    kind. v must be zeroed; the caller releases it."""
    if not isinstance(a, _ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(a).__name__}")
    try:
        PyObject_GetBuffer(a, v, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
    except (BufferError, ValueError) as e:
        if a.dtype.kind != "f":   # numpy exports no buffer of some dtypes (datetime64, ...)
            raise TypeError(f"{name}: expected dtype float32 or float64, got {a.dtype}") from None
        raise ValueError(f"{name}: expected a C-contiguous array ({e})") from None
    # numpy's format of a native float32 / float64 array is "f" / "d", with a
    # "=" (native order, standard size) before it when the array is unaligned
    cdef const char *fmt = v.format + (1 if v.format[0] == b'=' or v.format[0] == b'@' else 0)
    cdef char got = fmt[0] if fmt[0] != 0 and fmt[1] == 0 else 0
    if (kind == 0 and got != b'f' and got != b'd') or (kind != 0 and got != kind):
        expect = "float32 or float64" if kind == 0 else (
            "float32" if kind == b'f' else "float64")
        raise TypeError(f"{name}: expected dtype {expect}, got {a.dtype}")
    if (<uintptr_t>v.buf) % (4 if got == b'f' else 8):
        raise ValueError(f"{name}: expected an aligned array")
    if out and v.readonly:
        raise ValueError(f"{name}: output array is read-only")
    return got


cdef int _shape(const Py_buffer *v, str name, int ndim, Py_ssize_t d0, Py_ssize_t d1) except -1:
    """v has ndim (1 or 2) dimensions (d0,) or (d0, d1)."""
    if v.ndim != ndim or v.shape[0] != d0 or (ndim == 2 and v.shape[1] != d1):
        want = (<object>d0,) if ndim == 1 else (<object>d0, <object>d1)
        got = tuple([v.shape[k] for k in range(v.ndim)])
        raise ValueError(f"{name}: expected shape {want}, got {got}")
    return 0


cdef int _step_layer(fastrnn_layer *L, int cell, Py_ssize_t B, Py_ssize_t I,
                     Py_ssize_t H) except -1:
    """L = one inference step (T = 1) of the default cell with these sizes."""
    cdef int G = fastrnn_num_gates(cell)
    if G == 0:
        raise ValueError(f"cell: expected a cell code among {sorted(CELLS.values())}, got {cell}")
    if B < 1 or I < 1 or H < 1:
        raise ValueError(f"sizes must be >= 1, got B={B} I={I} H={H}")
    # the widest row of x, y and the gates, B * widest, are C ints in the kernels
    if I > INT_MAX or H > INT_MAX or max(I, G * H) > INT_MAX // B:
        raise ValueError("arrays too large for the 32-bit BLAS interface")
    memset(L, 0, sizeof(fastrnn_layer))
    L.cell = cell
    L.T, L.B, L.I, L.H, L.ldy = 1, <int>B, <int>I, <int>H, <int>H
    return 0


def cell_work_size(int cell, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H):
    """Elements of the work array cell_forward needs: the kernels' inference
    workspace, then y (B, H) and zero states (B, H) for h and, for LSTM, c."""
    cdef fastrnn_layer L
    _step_layer(&L, cell, B, I, H)
    return fastrnn_forward_work_size(&L, 0) + (3 if cell == FASTRNN_LSTM else 2) * B * H


def cell_forward(int cell, x, h, c, w_ih, w_hh, b_ih, b_hh, work):
    """One inference step of a default cell (a CELLS code; no projection, no
    options): the next h, or (h, c) for LSTM.

    x (B, I) or unbatched (I,); h and c (LSTM only, else None) shaped as x
    with H columns, or None for zeros; w_ih (G*H, I), w_hh (G*H, H); b_ih and
    b_hh (G*H,), or both None; work 1-D with at least cell_work_size elements.
    Every array is a C-contiguous, aligned ndarray of w_ih's dtype (float32 or
    float64). The outputs are new arrays shaped as h.
    """
    cdef Py_buffer vx, vh, vc, vwi, vwh, vbi, vbh, vwork, vhn, vcn
    cdef Py_buffer *bufs[10]
    bufs[:] = [&vx, &vh, &vc, &vwi, &vwh, &vbi, &vbh, &vwork, &vhn, &vcn]
    cdef int k
    for k in range(10):
        memset(bufs[k], 0, sizeof(Py_buffer))
    cdef fastrnn_layer L
    cdef bint lstm = cell == FASTRNN_LSTM
    cdef char kind
    cdef Py_ssize_t B, I, H, G, need
    cdef int status
    cdef char *work_p
    cdef size_t itemsize, ws
    cdef const void *h0
    cdef const void *c0
    cdef void *y
    cdef void *p[10]
    try:
        kind = _get(&vwi, w_ih, "w_ih", 0, False)   # w_ih's dtype is every array's
        itemsize = 4 if kind == b'f' else 8
        _get(&vwh, w_hh, "w_hh", kind, False)
        elementwise = cell == FASTRNN_INDRNN_TANH or cell == FASTRNN_INDRNN_RELU
        if vwi.ndim != 2 or vwh.ndim != (1 if elementwise else 2):
            raise ValueError("w_ih and w_hh: expected 2-D arrays (w_hh 1-D for IndRNN)")
        G = fastrnn_num_gates(cell)
        I, H = vwi.shape[1], vwh.shape[vwh.ndim - 1]
        _get(&vx, x, "x", kind, False)
        if vx.ndim == 1:
            B = 1
            _shape(&vx, "x", 1, I, 0)
        elif vx.ndim == 2:
            B = vx.shape[0]
            _shape(&vx, "x", 2, B, I)
        else:
            raise ValueError(f"x: expected (B, I) or unbatched (I,), got {vx.ndim} dimensions")
        _step_layer(&L, cell, B, I, H)
        _shape(&vwi, "w_ih", 2, G * H, I)
        if elementwise:
            _shape(&vwh, "w_hh", 1, H, 0)
        else:
            _shape(&vwh, "w_hh", 2, G * H, H)
        if (b_ih is None) != (b_hh is None):
            raise ValueError("b_ih and b_hh: give both or neither")
        if b_ih is not None:
            _get(&vbi, b_ih, "b_ih", kind, False)
            _get(&vbh, b_hh, "b_hh", kind, False)
            _shape(&vbi, "b_ih", 1, G * H, 0)
            _shape(&vbh, "b_hh", 1, G * H, 0)
        if h is not None:
            _get(&vh, h, "h", kind, False)
            _shape(&vh, "h", vx.ndim, B if vx.ndim == 2 else H, H)
        if c is not None:
            if not lstm:
                raise ValueError("c: a cell state is for LSTM only")
            _get(&vc, c, "c", kind, False)
            _shape(&vc, "c", vx.ndim, B if vx.ndim == 2 else H, H)
        _get(&vwork, work, "work", kind, True)
        ws = fastrnn_forward_work_size(&L, 0)
        need = ws + (3 if lstm else 2) * B * H
        if vwork.ndim != 1 or vwork.shape[0] < need:
            raise ValueError(f"work: expected a 1-D array of at least {need} elements")
        # work: kernel workspace | y (B, H) | zero h0 (B, H) | zero c0 (B, H)
        work_p = <char *>vwork.buf
        y = work_p + ws * itemsize
        h0 = vh.buf
        if h is None:
            h0 = work_p + (ws + B * H) * itemsize
            memset(<void *>h0, 0, B * H * itemsize)
        c0 = vc.buf
        if lstm and c is None:
            c0 = work_p + (ws + 2 * B * H) * itemsize
            memset(<void *>c0, 0, B * H * itemsize)
        shape = (<object>B, <object>H) if vx.ndim == 2 else (<object>H,)
        dtype = _float32 if kind == b'f' else _float64
        h_n = _empty(shape, dtype)
        _get(&vhn, h_n, "h_n", kind, True)
        c_n = None
        if lstm:
            c_n = _empty(shape, dtype)
            _get(&vcn, c_n, "c_n", kind, True)
        p[:] = [vwi.buf, vwh.buf, vbi.buf, vbh.buf, NULL, NULL, NULL, NULL, NULL, NULL]
        with nogil:
            status = _run_forward(kind, y, vhn.buf, vcn.buf, NULL, work_p, vx.buf, h0, c0, p,
                                  &L)
        _raise_status(status)
        return (h_n, c_n) if lstm else h_n
    finally:
        for k in range(10):
            PyBuffer_Release(bufs[k])
