"""Build of the native extension: fastlstm.native from fastlstm/native.pyx and csrc/*.c.

OpenMP is used when the compiler accepts -fopenmp; otherwise the build warns and the kernels run
on one thread (``python -m fastlstm info`` reports which). Set FASTLSTM_DEBUG=1 for a debug build:
no optimisation, debug symbols, and Cython's bounds and initialisation checks on.
"""
import os
import shlex
import tempfile
import warnings

import scipy_openblas32
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("FASTLSTM_DEBUG", "") not in ("", "0")


def compiler_accepts(compiler, flag):
    """Whether the compiler can build and link a small OpenMP program with ``flag``."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "check_openmp.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
        try:
            objects = compiler.compile([src], output_dir=tmp, extra_postargs=[flag])
            # The extension's link line carries LDFLAGS (a libomp's -L, say), an executable's
            # does not: give it them.
            compiler.link_executable(objects, os.path.join(tmp, "check_openmp"),
                                     extra_postargs=[flag, *shlex.split(os.environ.get("LDFLAGS",
                                                                                       ""))])
        except Exception:
            return False
    return True


class BuildExtWithOpenMP(build_ext):
    def build_extensions(self):
        if compiler_accepts(self.compiler, "-fopenmp"):
            for ext in self.extensions:
                ext.extra_compile_args.append("-fopenmp")
                ext.extra_link_args.append("-fopenmp")
        else:
            warnings.warn("the C compiler does not support OpenMP (-fopenmp): fastlstm is built "
                          "without it and its kernels will run on one thread")
        super().build_extensions()


native = Extension(
    "fastlstm.native",
    sources=["fastlstm/native.pyx", "csrc/kernels.c"],
    include_dirs=["csrc", scipy_openblas32.get_include_dir()],
    library_dirs=[scipy_openblas32.get_lib_dir()],
    libraries=[scipy_openblas32.get_library()],
    # The BLAS is the scipy-openblas32 wheel installed beside fastlstm; `import fastlstm` loads it
    # first (importing scipy_openblas32 does), and this rpath finds it in the same site-packages.
    extra_link_args=["-Wl,-rpath,$ORIGIN/../scipy_openblas32/lib"],
    # -fno-trapping-math: no floating-point exception is ever read, so comparisons may become
    # vector selects; the gate loops, exp's range clamps included, vectorize. Results unchanged.
    # -ffp-contract=off: a * b + c is rounded twice, as written, in every build, so that the same
    # expression gives the same bits in every variant of a loop (a peephole LSTM with zero
    # peepholes is exactly the plain one); the packed product asks for its FMAs explicitly.
    extra_compile_args=(["-O0", "-g"] if DEBUG else ["-O3", "-fno-trapping-math"])
    + ["-ffp-contract=off"],
)

setup(
    ext_modules=cythonize(
        [native],
        compiler_directives={"boundscheck": DEBUG, "wraparound": False,
                             "initializedcheck": DEBUG, "language_level": 3},
    ),
    cmdclass={"build_ext": BuildExtWithOpenMP},
)
