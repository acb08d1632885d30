"""Loading fastlstm's own BLAS (the scipy-openblas32 wheel) with the best kernels for this CPU.

OpenBLAS picks its kernels once, when the library loads: the core named by the environment
variable OPENBLAS_CORETYPE, else the CPU it detects, whose detection does not know every
processor. Either way an AMD Zen 4/5, which has AVX-512, can end up on the AVX2 "Haswell"
kernels at about half its matrix peak (on the machine this was written on, the environment sets
OPENBLAS_CORETYPE=Haswell for every OpenBLAS in the process). fastlstm's instance is private, so
fastlstm chooses its kernels itself: on an AMD CPU with the AVX-512 subsets that OpenBLAS's
SkylakeX kernels use, those kernels (the ones OpenBLAS itself runs on the Zen processors it
recognises); elsewhere OpenBLAS's own choice. FASTLSTM_BLAS_CORETYPE overrides this for
fastlstm's instance alone: a core name such as "Haswell", or empty for OpenBLAS's own choice.

The choice reaches only fastlstm's instance: numpy is imported first (its OpenBLAS has then
chosen its kernels), OPENBLAS_CORETYPE is set just while scipy-openblas32 loads, and it is
restored at once. OpenBLAS runs a forced core type even on a CPU without its instructions (and
crashes), so nothing is forced unless /proc/cpuinfo lists every flag the kernels need.
"""
import os

# The instruction subsets of OpenBLAS's SkylakeX kernels (built for -march=skylake-avx512).
SKYLAKEX_FLAGS = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})


def cpuinfo(path="/proc/cpuinfo"):
    """The first processor's fields in Linux's /proc/cpuinfo (``path``) as {field: value}
    ("vendor_id", "model name", "cpu family", "model", "flags" as one string, ...), or None where
    there is no such file. It stops at the end of that processor's block: a server lists
    hundreds, and this runs when fastlstm is imported. The one reader of the file in fastlstm:
    the BLAS's kernels here, `info`'s SIMD level and `bench`'s machine."""
    fields = {}
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key:
                    fields.setdefault(key, value.strip())
                elif fields:
                    break
    except OSError:
        return None
    return fields


def _cpu():
    """(vendor, set of flags) of the first processor in /proc/cpuinfo; ("", set()) elsewhere."""
    fields = cpuinfo() or {}
    return fields.get("vendor_id", ""), set(fields.get("flags", "").split())


def coretype(environ=os.environ, cpu=_cpu):
    """The OPENBLAS_CORETYPE to load fastlstm's BLAS with, or None for OpenBLAS's own choice."""
    if "FASTLSTM_BLAS_CORETYPE" in environ:
        return environ["FASTLSTM_BLAS_CORETYPE"] or None
    vendor, flags = cpu()
    if vendor == "AuthenticAMD" and SKYLAKEX_FLAGS <= flags:
        return "SKYLAKEX"
    return None


def load():
    """Load scipy-openblas32, with :func:`coretype`'s kernels if it names any."""
    import numpy  # noqa: F401  numpy's OpenBLAS first, from the untouched environment

    core = coretype()
    if core is None:
        import scipy_openblas32  # noqa: F401
        return
    saved = os.environ.get("OPENBLAS_CORETYPE")
    os.environ["OPENBLAS_CORETYPE"] = core
    try:
        import scipy_openblas32  # noqa: F401
    finally:
        if saved is None:
            del os.environ["OPENBLAS_CORETYPE"]
        else:
            os.environ["OPENBLAS_CORETYPE"] = saved
