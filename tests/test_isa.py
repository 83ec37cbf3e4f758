"""Every compiled instruction-set variant of the kernels (baseline x86-64, AVX2,
AVX-512: those this CPU runs) agrees with the NumPy reference; the build picks the
best variant this CPU has, and each variant is compiled for its instruction set."""
from __future__ import annotations

import functools
import platform
import re
import shutil
import subprocess
from typing import Dict, FrozenSet, Optional, Set, Tuple

import numpy as np
import pytest

import fastrnn
from fastrnn import _kernels

T, B, I, H = 7, 3, 5, 9          # H not a multiple of any vector width
LENGTHS = np.array([7, 3, 0])


@pytest.fixture(params=_kernels.available_isas())
def isa(request):
    _kernels.set_isa(request.param)
    yield request.param
    _kernels.set_isa(None)


X86_64 = platform.machine().lower() in ("x86_64", "amd64")
# the CPU flags each variant needs, as Linux names them in /proc/cpuinfo (the
# kernel lists AVX and AVX-512 only when it saves their registers)
NEEDS = {"avx512": {"avx512f", "avx512vl", "avx2", "fma"}, "avx2": {"avx2", "fma"}}


def cpu_flags() -> Optional[Set[str]]:
    """The first CPU's flags from /proc/cpuinfo, None where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def test_best_variant_is_the_default():
    assert _kernels.isa() == _kernels.available_isas()[-1]
    with pytest.raises(ValueError, match="isa"):
        _kernels.set_isa("sse9")


def test_best_variant_is_the_cpus():
    """The build detects the best variant the CPU runs, by an account independent of
    the build's own detection: a wheel whose detection fails (__builtin_cpu_supports
    under zig cc found nothing) runs the baseline kernels, 2-3x slower, and fails here."""
    flags = cpu_flags()
    if not X86_64 or flags is None:
        pytest.skip("the CPU's flags are read from Linux's /proc/cpuinfo on x86-64")
    expected = next((isa for isa, needs in NEEDS.items() if needs <= flags), "baseline")
    assert _kernels.available_isas()[-1] == expected, \
        f"this CPU runs {expected!r} (/proc/cpuinfo), the build detected {_kernels.available_isas()}"
    assert _kernels.isa() == expected


VARIANTS = ("_f32_base", "_f64_base", "_f32_avx2", "_f64_avx2", "_f32_avx512", "_f64_avx512")


@functools.lru_cache(maxsize=None)
def vector_registers() -> Dict[str, Tuple[int, FrozenSet[str]]]:
    """Per variant: how many of the extension's functions belong to it, and which of
    ymm and zmm their instructions name (objdump -d, read line by line: the whole
    disassembly is tens of MB, which the test process should not hold)."""
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed")
    functions = {v: 0 for v in VARIANTS}
    seen: Dict[str, Set[str]] = {v: set() for v in VARIANTS}
    current = None
    with subprocess.Popen([objdump, "-d", "--no-show-raw-insn", _kernels.__file__],
                          stdout=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:
            head = re.match(r"[0-9a-f]+ <([^>]+)>:", line)
            if head:
                current = next((v for v in VARIANTS if v in head.group(1)), None)
                if current:
                    functions[current] += 1
            elif current:
                seen[current].update(re.findall(r"%([yz]mm)", line))
    assert proc.returncode == 0, f"objdump -d {_kernels.__file__} failed"
    return {v: (functions[v], frozenset(seen[v])) for v in VARIANTS}


@pytest.mark.parametrize("variant,register", [
    ("_f32_base", None), ("_f64_base", None),
    ("_f32_avx2", "ymm"), ("_f64_avx2", "ymm"),
    ("_f32_avx512", "zmm"), ("_f64_avx512", "zmm"),
])
def test_variant_compiled_for_its_isa(variant, register):
    """Each variant's code uses its instruction set's registers (ymm: AVX2, zmm:
    AVX-512), and the baseline uses neither, whatever compiler built it (clang, and so
    zig cc, ignores the `#pragma GCC target` of kernels_*_avx2.c: setup.py gives
    those files their flags), whichever CPU runs the test."""
    if not X86_64:
        pytest.skip("instruction-set variants exist on x86-64 only")
    functions, registers = vector_registers()[variant]
    if not functions:
        pytest.skip(f"no symbols of the {variant} variant (a stripped build)")
    if register is None:
        assert not registers, (f"the baseline variant {variant} uses {sorted(registers)}: "
                               f"not portable to any x86-64")
    else:
        assert register in registers, \
            f"no {register} register in the {functions} functions of {variant}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind,kw", [
    ("rnn", {}), ("lstm", dict(proj_size=4)), ("gru", {}), ("gru", dict(reset_after=False)),
    ("lstm", dict(peepholes=True, activations=["hard_sigmoid", "softsign", "tanh"], clip=2.0)),
], ids=["rnn", "lstm-proj", "gru", "gru-rb", "lstm-general"])
@pytest.mark.parametrize("batch", [1, 3, 12], ids=["B1", "B3", "B12-blas"])
def test_variant_matches_reference(isa, kind, kw, dtype, batch):
    cls = {"rnn": fastrnn.RNN, "lstm": fastrnn.LSTM, "gru": fastrnn.GRU}[kind]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, batch, I)).astype(dtype)
    lengths = rng.integers(0, T + 1, batch)
    results = {}
    for backend in ("c", "numpy"):
        layer = cls(I, H, bidirectional=True, dtype=dtype, backend=backend, seed=1, **kw)
        out, _ = layer(x, lengths=lengths)
        dx, _ = layer.backward(np.ones_like(out))
        infer, _ = layer(x, lengths=lengths, training=False)
        results[backend] = [out, dx, infer] + [g.copy() for g in layer.grads.values()]
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    for got, want in zip(results["c"], results["numpy"]):
        np.testing.assert_allclose(got, want, err_msg=isa, **tol)
