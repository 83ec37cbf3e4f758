"""Build of fastrnn's compiled extension: the whole build is this one table.

FASTRNN_NATIVE=1  adds -march=native (fast on the build machine only).
FASTRNN_DEBUG=1   builds -O0 -g with Cython bounds checks and the address and
                  undefined-behaviour sanitizers (run Python with
                  LD_PRELOAD=$(gcc -print-file-name=libasan.so)).
"""
import glob
import os

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

extensions = [
    Extension(
        "fastrnn._kernels",
        # kernels_f32.c / kernels_f64.c once per instruction set; dispatch.c
        # picks one at run time, so the default build needs no -march flag
        sources=["fastrnn/_kernels.pyx", "csrc/common.c", "csrc/dispatch.c",
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



class build_ext_into_checkout(build_ext):
    """Also copy the built extension next to the sources. pip builds a local
    checkout in place, so `pip install . && python -m fastrnn`, run from the
    checkout (whose fastrnn/ then shadows the installed one), finds its kernels;
    elsewhere (a wheel or sdist build in a temporary copy) the copy is harmless."""

    def run(self):
        super().run()
        if not self.inplace:
            self.copy_extensions_to_source()


setup(ext_modules=cythonize(extensions, compiler_directives=directives),
      cmdclass={"build_ext": build_ext_into_checkout})
