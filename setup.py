"""Build of the native extension: fastlstm.native from fastlstm/native.pyx and csrc/*.c.

The time loops are one source (csrc/kernels_isa.h) compiled once per instruction set, each
translation unit csrc/kernels_<isa>.c with its own target flags (ISA_FLAGS below): the generic
build for the architecture's baseline, and on x86-64 the AVX2 and AVX-512 builds, on aarch64 the
NEON build. No unit is compiled for the build machine's own CPU (-march=native): the library
chooses among them at run time. The units compile in parallel.

OpenMP is used when the compiler accepts -fopenmp; otherwise the build warns and the kernels run
on one thread (``python -m fastlstm info`` reports which). Set FASTLSTM_DEBUG=1 for a debug build:
no optimisation, debug symbols, and Cython's bounds and initialisation checks on.
"""
import json
import os
import platform
import shlex
import sys
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor

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


def target_machine():
    """The architecture the extension is built for: ARCHFLAGS's on macOS, where a wheel for the
    other architecture is cross-compiled (cibuildwheel sets -arch x86_64 or -arch arm64), else
    this machine's."""
    arches = shlex.split(os.environ.get("ARCHFLAGS", ""))[1::2]
    return arches[0].lower() if len(arches) == 1 else platform.machine().lower()


# The builds of the time loops for the target's architecture, with the target flags of each
# csrc/kernels_<isa>.c, from csrc/builds.json (which tools/harness/run.sh reads too): on x86-64
# AVX2 + FMA and AVX-512 beside the generic build, on aarch64 NEON (Advanced SIMD, its
# baseline: no flags). The vector builds need GCC's vector extensions (GCC or clang), as
# csrc/platform.h says, which picks the same units; MSVC builds the generic one alone.
MACHINE = {"amd64": "x86_64", "arm64": "aarch64"}.get(target_machine(), target_machine())
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "builds.json")) as f:
    ISA_FLAGS = json.load(f).get(MACHINE) if os.name != "nt" else None
ISA_FLAGS = ISA_FLAGS or {"generic": []}

# Every unit builds at -O2. -O3 took the AVX-512 unit over three minutes to compile (loop
# unswitching, on the gate and tile loops' constant flags) and made the AVX2 unit's training
# steps slower in side-by-side runs; the AVX-512 unit gains, as fast as at -O3 and in a fifth of
# its compile time, from -O3's vectorizer cost model alone. That model made the AVX2 unit's
# steps of one sequence slower, so it keeps -O2's, which vectorizes a loop of unknown length
# only when told to: such loops in the kernels say "omp simd", or copy whole vectors.
ISA_OPTIMISE = {"avx512": ["-fvect-cost-model=dynamic"]}


def isa_flags(source):
    """The flags of one source file: for csrc/kernels_<isa>.c its build's target flags (and in
    a release build its optimisation), else none."""
    name = os.path.splitext(os.path.basename(source))[0]
    isa = name[len("kernels_"):] if name.startswith("kernels_") else None
    return ISA_FLAGS.get(isa, []) + ([] if DEBUG else ISA_OPTIMISE.get(isa, []))


class BuildExtWithOpenMP(build_ext):
    def build_extensions(self):
        # MSVC spells it /openmp (and links its runtime itself); GCC and clang -fopenmp. Apple's
        # clang takes neither: CFLAGS="-Xpreprocessor -fopenmp" and LDFLAGS="-lomp" bring
        # libomp in (pyproject.toml's cibuildwheel settings), and the flag test then fails.
        flag = "/openmp" if self.compiler.compiler_type == "msvc" else "-fopenmp"
        if compiler_accepts(self.compiler, flag):
            for ext in self.extensions:
                ext.extra_compile_args.append(flag)
                if flag == "-fopenmp":
                    ext.extra_link_args.append(flag)
        else:
            warnings.warn(f"the C compiler does not support OpenMP ({flag}): fastlstm is built "
                          "without it and its kernels will run on one thread")
        if hasattr(self.compiler, "_compile"):      # the Unix compilers: GCC, clang
            self.compiler.compile = compile_in_parallel.__get__(self.compiler)
        super().build_extensions()


def compile_in_parallel(self, sources, output_dir=None, macros=None, include_dirs=None, debug=0,
                        extra_preargs=None, extra_postargs=None, depends=None):
    """CCompiler.compile, with every source compiled at once on its own thread (each a compiler
    process) and each ISA unit with its own target flags. Uses the steps distutils' own compile
    runs, one source at a time."""
    macros, objects, extra_postargs, pp_opts, build = self._setup_compile(
        output_dir, macros, include_dirs, sources, depends, extra_postargs)
    cc_args = self._get_cc_args(pp_opts, debug, extra_preargs)

    def compile_one(obj):
        src, ext = build[obj]
        self._compile(obj, src, ext, cc_args, extra_postargs + isa_flags(src), pp_opts)

    with ThreadPoolExecutor(max_workers=max(1, len(objects))) as pool:
        list(pool.map(compile_one, objects))
    return objects


native = Extension(
    "fastlstm.native",
    sources=["fastlstm/native.pyx", "csrc/kernels.c"]
    + [f"csrc/kernels_{isa}.c" for isa in ISA_FLAGS],
    depends=[os.path.join("csrc", f) for f in os.listdir("csrc") if f.endswith(".h")],
    include_dirs=["csrc", scipy_openblas32.get_include_dir()],
    library_dirs=[scipy_openblas32.get_lib_dir()],
    libraries=[scipy_openblas32.get_library()],
    # The BLAS is the scipy-openblas32 wheel installed beside fastlstm; `import fastlstm` loads it
    # first (importing scipy_openblas32 does), and this rpath finds it in the same site-packages.
    extra_link_args=[] if os.name == "nt" else [
        "-Wl,-rpath," + ("@loader_path" if sys.platform == "darwin" else "$ORIGIN")
        + "/../scipy_openblas32/lib"],
    # -fno-trapping-math: no floating-point exception is ever read, so comparisons may become
    # vector selects; the gate loops, exp's range clamps included, vectorize. Results unchanged.
    # -ffp-contract=off: a * b + c is rounded twice, as written, in every build, so that the same
    # expression gives the same bits in every variant of a loop (a peephole LSTM with zero
    # peepholes is exactly the plain one); the packed product asks for its FMAs explicitly.
    # MSVC (the generic build alone) contracts nothing unless asked (/fp:contract).
    extra_compile_args=["/Od" if DEBUG else "/O2"] if os.name == "nt" else
    (["-O0", "-g"] if DEBUG else ["-O2", "-fno-trapping-math"]) + ["-ffp-contract=off"],
)

setup(
    ext_modules=cythonize(
        [native],
        compiler_directives={"boundscheck": DEBUG, "wraparound": False,
                             "initializedcheck": DEBUG, "language_level": 3},
    ),
    cmdclass={"build_ext": BuildExtWithOpenMP},
)
