"""Build of fastrnn's compiled extension: the whole build is this one table.

The package lives in src/ (pyproject.toml): the checkout's own directory never
holds an importable fastrnn, so `python -m fastrnn` or `pytest` run from it
import the installed package, and the build writes nothing into the sources.

FASTRNN_NATIVE=1  adds -march=native (fast on the build machine only).
FASTRNN_DEBUG=1   builds -O0 -g with Cython bounds checks and the address and
                  undefined-behaviour sanitizers (run Python with
                  LD_PRELOAD=$(gcc -print-file-name=libasan.so)).
"""
import glob
import os
import sysconfig

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("FASTRNN_DEBUG") == "1"
NATIVE = os.environ.get("FASTRNN_NATIVE") == "1"

# -fno-trapping-math lets GCC vectorize the branch-free selects of the
# elementwise passes; it changes no result. -ffp-contract=fast lets a*b + c
# become one FMA where the target has it (ISO C modes turn contraction off):
# half the instructions in the GEMM kernels and the exp/tanh polynomials, and
# one rounding instead of two.
# -falign-loops=64 starts every loop on a cache line: where the packed GEMM's
# inner loop happened to land moved by unrelated edits, and a start at byte 48
# of a line made the LSTM's inference 1.2-1.3x slower (AMD Zen 3).
compile_args = ["-std=c99", "-O0", "-g"] if DEBUG else [
    "-std=c99", "-O3", "-fno-trapping-math", "-ffp-contract=fast", "-falign-loops=64"]
compile_args += ["-pthread"]
link_args = ["-pthread"]   # the time loop's threads (csrc/common.c)
if DEBUG:
    compile_args += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    link_args += ["-fsanitize=address,undefined"]
if NATIVE:
    compile_args += ["-march=native"]

# The instruction-set variants of the kernels, each compiled with its target's
# flags (x86-64 only: elsewhere those files compile to nothing). GCC would
# also take them from the `#pragma GCC target` at the top of each file, but
# clang (and zig cc, which builds the manylinux wheels: tools/build_wheel.sh)
# ignores that pragma and would compile the "AVX2" kernels for SSE2.
X86_64 = sysconfig.get_platform().endswith(("x86_64", "amd64"))
AVX2 = ["-mavx2", "-mfma"]
AVX512 = ["-mavx512f", "-mavx512vl"] + AVX2
ISA_FLAGS = {} if not X86_64 else {
    "csrc/kernels_f32_avx2.c": AVX2, "csrc/kernels_f64_avx2.c": AVX2,
    "csrc/kernels_f32_avx512.c": AVX512, "csrc/kernels_f64_avx512.c": AVX512}

extensions = [
    Extension(
        "fastrnn._kernels",
        # kernels_f32.c / kernels_f64.c once per instruction set; dispatch.c
        # picks one at run time, so the default build needs no -march flag
        sources=["src/fastrnn/_kernels.pyx", "csrc/common.c", "csrc/dispatch.c",
                 "csrc/kernels_f32.c", "csrc/kernels_f32_avx2.c", "csrc/kernels_f32_avx512.c",
                 "csrc/kernels_f64.c", "csrc/kernels_f64_avx2.c", "csrc/kernels_f64_avx512.c"],
        depends=sorted(glob.glob("csrc/*.h")) + ["csrc/kernels_f32.c", "csrc/kernels_f64.c"],
        include_dirs=["csrc"],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        libraries=["m"],
    )
]

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}



class build_ext_isa(build_ext):
    """Compiles each instruction-set variant (ISA_FLAGS) with its own flags, the
    rest of the extension as usual."""

    def build_extension(self, ext):
        variants = [src for src in ext.sources if src in ISA_FLAGS]
        objects = []
        for src in variants:
            objects += self.compiler.compile(
                [src], output_dir=self.build_temp, macros=ext.define_macros,
                include_dirs=ext.include_dirs, debug=self.debug, depends=ext.depends,
                extra_postargs=ext.extra_compile_args + ISA_FLAGS[src])
        ext.sources = [src for src in ext.sources if src not in ISA_FLAGS]
        ext.extra_objects = list(ext.extra_objects or []) + objects
        super().build_extension(ext)


# Cython's C output goes to build/, not beside the .pyx in the sources
setup(ext_modules=cythonize(extensions, compiler_directives=directives,
                            include_path=["src"], build_dir="build/cython"),
      cmdclass={"build_ext": build_ext_isa})
