"""Bindings of the C kernels (csrc/fastrnn.h).

This module checks everything that could make the C code read or write out of
bounds (types, dtypes, contiguity, agreeing sizes, length ranges), then calls
C with the GIL released. Nothing numerical happens here. User-facing argument
checks with friendly messages live in fastrnn/layers.py; the checks here are
the last line of defence and raise plain ValueError/TypeError.
"""
import numpy as np

from scipy.linalg.cython_blas cimport sgemm, dgemm

from libc.string cimport memset

from fastrnn._kernels cimport *

ctypedef fused floating:
    float
    double

CELLS = {
    "rnn_tanh": FASTRNN_RNN_TANH,
    "rnn_relu": FASTRNN_RNN_RELU,
    "lstm": FASTRNN_LSTM,
    "gru": FASTRNN_GRU,
    "gru_reset_before": FASTRNN_GRU_RESET_BEFORE,
}

# ONNX's activations, by fastrnn's (snake_case) names
ACTIVATIONS = {
    "sigmoid": 0, "tanh": 1, "relu": 2, "affine": 3, "leaky_relu": 4, "thresholded_relu": 5,
    "scaled_tanh": 6, "hard_sigmoid": 7, "elu": 8, "softsign": 9, "softplus": 10,
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

ISAS = {"baseline": FASTRNN_ISA_BASELINE, "avx2": FASTRNN_ISA_AVX2, "avx512": FASTRNN_ISA_AVX512}


def isa():
    """The instruction set of the kernel variant in use ("baseline", "avx2", "avx512")."""
    current = fastrnn_isa()
    return next(name for name, value in ISAS.items() if value == current)


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


def cache_size(str cell, int T, int B, int I, int H, int P=0):
    """Elements of the training cache of one layer-direction."""
    cdef fastrnn_layer L = _layer(cell, T, B, I, H, P, False, False, P or H)
    return fastrnn_cache_size(&L)


def forward_work_size(str cell, int T, int B, int I, int H, bint training, int P=0):
    cdef fastrnn_layer L = _layer(cell, T, B, I, H, P, False, False, P or H)
    return fastrnn_forward_work_size(&L, training)


def backward_work_size(str cell, int T, int B, int I, int H, int P=0):
    cdef fastrnn_layer L = _layer(cell, T, B, I, H, P, False, False, P or H)
    return fastrnn_backward_work_size(&L)


def _check(str name, a, dtype, shape, bint out=False):
    """a must be a C-contiguous ndarray of dtype and shape (None: anything),
    writeable when it is an output."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype)}, got {a.dtype}")
    if not a.flags.c_contiguous or not a.flags.aligned:
        raise ValueError(f"{name}: expected a C-contiguous, aligned array")
    if shape is not None and a.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {a.shape}")
    if out and not a.flags.writeable:
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
    for name, w in (("w_ih", w_ih), ("w_hh", w_hh)):
        if not isinstance(w, np.ndarray) or w.ndim != 2:
            raise ValueError(f"{name}: expected a 2-D numpy.ndarray")
    # H from w_hh (G*H, R), whose columns are H without a projection, else from
    # w_hr (P, H); every shape is then checked against these
    H, P = w_hh.shape[1], 0
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


def forward(str cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, y, int y_offset,
            h_n, c_n, cache, work, bint batch_first, bint reverse, peep=None, options=None):
    """Run one layer-direction forward; training when cache is not None.

    x (T, B, I) or (B, T, I); y the same rows with ldy columns, this direction
    writes columns [y_offset, y_offset + R), R = P (projection) or H; h0, h_n
    (B, R); c0, c_n (B, H) for LSTM; w_hr (P, H) or None; cache
    (cache_size,) or None; work (>= forward_work_size,); peep (3H) LSTM
    peepholes or None; options for the general cells (see _set_options).
    """
    T, B, I, H, P, R, G, dt = _dims(cell, x, w_ih, w_hh, w_hr, batch_first)
    if not isinstance(y, np.ndarray) or y.ndim != 3:
        raise ValueError("y: expected a 3-D numpy.ndarray")
    ldy = y.shape[2]
    cdef fastrnn_layer L = _layer(cell, T, B, I, H, P, batch_first, reverse, ldy)
    _set_options(&L, options)
    if y_offset < 0 or y_offset + R > ldy:
        raise ValueError(f"y_offset: {y_offset} + {R} exceeds y's {ldy} columns")
    lstm = cell == "lstm"
    xf = _check("x", x, dt, None)
    yf = _check("y", y, dt, x.shape[:2] + (ldy,), out=True)
    wi = _check("w_ih", w_ih, dt, (G * H, I))
    wh = _check("w_hh", w_hh, dt, (G * H, R))
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
                        pp, lf, of)
    else:
        _forward[double](&L, yf, y_offset, hnf, cnf, cf, wf, xf, h0f, c0f, wi, wh, bi, bh, wr,
                         pp, lf, of)


def backward(str cell, dx, bint accumulate_dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr,
             dy, int y_offset, dh_n, dc_n, cache, x, w_ih, w_hh, w_hr, lengths, work,
             bint batch_first, bint reverse, dpeep=None, peep=None, options=None):
    """Backward of the forward that filled cache (same x, weights, lengths, flags).

    dx like x (written, or added to when accumulate_dx); dh0 (B, R), dc0 (B, H)
    written; dw_*, db_* accumulated (biases may be None, dw_hr None without
    projection); dy like y or None, this direction reads columns
    [y_offset, y_offset + R); dh_n (B, R), dc_n (B, H) or None.
    """
    T, B, I, H, P, R, G, dt = _dims(cell, x, w_ih, w_hh, w_hr, batch_first)
    ldy = R
    if dy is not None:
        if not isinstance(dy, np.ndarray) or dy.ndim != 3:
            raise ValueError("dy: expected a 3-D numpy.ndarray")
        ldy = dy.shape[2]
    cdef fastrnn_layer L = _layer(cell, T, B, I, H, P, batch_first, reverse, ldy)
    _set_options(&L, options)
    if dy is not None and (y_offset < 0 or y_offset + R > ldy):
        raise ValueError(f"y_offset: {y_offset} + {R} exceeds dy's {ldy} columns")
    if cache is None:
        raise ValueError("cache: backward needs the cache of a training forward")
    lstm = cell == "lstm"
    xf = _check("x", x, dt, None)
    dxf = _check("dx", dx, dt, x.shape, out=True)
    dyf = _opt("dy", dy, dt, x.shape[:2] + (ldy,))
    wi = _check("w_ih", w_ih, dt, (G * H, I))
    wh = _check("w_hh", w_hh, dt, (G * H, R))
    wr = _opt("w_hr", w_hr, dt, (P, H))
    dwi = _check("dw_ih", dw_ih, dt, (G * H, I), out=True)
    dwh = _check("dw_hh", dw_hh, dt, (G * H, R), out=True)
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
    if dt == np.float32:
        _backward[float](&L, dxf, accumulate_dx, dh0f, dc0f, dwi, dwh, dbi, dbh, dwr, dpp, wf,
                         dyf, y_offset, dhnf, dcnf, cf, xf, wi, wh, wr, pp, lf, of)
    else:
        _backward[double](&L, dxf, accumulate_dx, dh0f, dc0f, dwi, dwh, dbi, dbh, dwr, dpp, wf,
                          dyf, y_offset, dhnf, dcnf, cf, xf, wi, wh, wr, pp, lf, of)


# The one place where the dtype picks the C function.

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


cdef _raise_status(int status):
    if status != FASTRNN_OK:
        raise ValueError(f"fastrnn kernel rejected its arguments (status {status})")


cdef _forward(fastrnn_layer *L, floating[::1] y, int y_offset, floating[::1] h_n,
              floating[::1] c_n, floating[::1] cache, floating[::1] work,
              const floating[::1] x, const floating[::1] h0, const floating[::1] c0,
              const floating[::1] w_ih, const floating[::1] w_hh, const floating[::1] b_ih,
              const floating[::1] b_hh, const floating[::1] w_hr, const floating[::1] peep,
              const int[::1] lengths, const int[::1] order):
    cdef int status
    with nogil:
        if floating is float:
            status = fastrnn_forward_f32(_ptr(y) + y_offset, _ptr(h_n), _ptr(c_n), _ptr(cache),
                                         _ptr(work), _cptr(x), _cptr(h0), _cptr(c0),
                                         _cptr(w_ih), _cptr(w_hh), _cptr(b_ih), _cptr(b_hh),
                                         _cptr(w_hr), _cptr(peep), _iptr(lengths), _iptr(order), L)
        else:
            status = fastrnn_forward_f64(_ptr(y) + y_offset, _ptr(h_n), _ptr(c_n), _ptr(cache),
                                         _ptr(work), _cptr(x), _cptr(h0), _cptr(c0),
                                         _cptr(w_ih), _cptr(w_hh), _cptr(b_ih), _cptr(b_hh),
                                         _cptr(w_hr), _cptr(peep), _iptr(lengths), _iptr(order), L)
    _raise_status(status)


cdef _backward(fastrnn_layer *L, floating[::1] dx, bint accumulate_dx, floating[::1] dh0,
               floating[::1] dc0, floating[::1] dw_ih, floating[::1] dw_hh,
               floating[::1] db_ih, floating[::1] db_hh, floating[::1] dw_hr,
               floating[::1] dpeep, floating[::1] work,
               const floating[::1] dy, int y_offset, const floating[::1] dh_n,
               const floating[::1] dc_n, const floating[::1] cache, const floating[::1] x,
               const floating[::1] w_ih, const floating[::1] w_hh, const floating[::1] w_hr,
               const floating[::1] peep, const int[::1] lengths, const int[::1] order):
    cdef int status
    cdef const floating *dyp = NULL
    if dy is not None:
        dyp = &dy[y_offset]
    with nogil:
        if floating is float:
            status = fastrnn_backward_f32(_ptr(dx), _ptr(dh0), _ptr(dc0), _ptr(dw_ih),
                                          _ptr(dw_hh), _ptr(db_ih), _ptr(db_hh), _ptr(dw_hr),
                                          _ptr(dpeep), _ptr(work),
                                          accumulate_dx, dyp, _cptr(dh_n), _cptr(dc_n),
                                          _cptr(cache), _cptr(x), _cptr(w_ih), _cptr(w_hh),
                                          _cptr(w_hr), _cptr(peep), _iptr(lengths), _iptr(order), L)
        else:
            status = fastrnn_backward_f64(_ptr(dx), _ptr(dh0), _ptr(dc0), _ptr(dw_ih),
                                          _ptr(dw_hh), _ptr(db_ih), _ptr(db_hh), _ptr(dw_hr),
                                          _ptr(dpeep), _ptr(work),
                                          accumulate_dx, dyp, _cptr(dh_n), _cptr(dc_n),
                                          _cptr(cache), _cptr(x), _cptr(w_ih), _cptr(w_hh),
                                          _cptr(w_hr), _cptr(peep), _iptr(lengths), _iptr(order), L)
    _raise_status(status)
