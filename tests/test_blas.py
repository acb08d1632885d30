"""fastlstm's own BLAS gets the kernels fastlstm chooses, and nothing else in the process changes.

See fastlstm/_blas.py: on an AMD CPU with AVX-512, fastlstm loads its private OpenBLAS with the
SkylakeX kernels, whatever OPENBLAS_CORETYPE says; numpy's OpenBLAS and the environment must not
notice. The subprocess tests run with OPENBLAS_CORETYPE=Haswell, as this project's machines do.
"""
import json
import os

import pytest
from helpers import run_python

from fastlstm import _blas

AMD_AVX512 = ("AuthenticAMD", set(_blas.SKYLAKEX_FLAGS) | {"sse4_2", "avx2", "fma"})
AMD_AVX2 = ("AuthenticAMD", {"sse4_2", "avx2", "fma"})
AMD_PARTIAL = ("AuthenticAMD", {"avx2", "avx512f"})          # AVX-512F without BW/DQ/VL
INTEL_AVX512 = ("GenuineIntel", set(_blas.SKYLAKEX_FLAGS))


@pytest.mark.parametrize("cpu, environ, expected", [
    (AMD_AVX512, {}, "SKYLAKEX"),
    (AMD_AVX512, {"OPENBLAS_CORETYPE": "Haswell"}, "SKYLAKEX"),  # that one is for other copies
    (AMD_AVX2, {}, None),
    (AMD_PARTIAL, {}, None),
    (INTEL_AVX512, {}, None),                                   # OpenBLAS knows Intel's cores
    (("", set()), {}, None),                                    # no /proc/cpuinfo
    (AMD_AVX512, {"FASTLSTM_BLAS_CORETYPE": "Haswell"}, "Haswell"),
    (AMD_AVX512, {"FASTLSTM_BLAS_CORETYPE": ""}, None),
    (AMD_AVX2, {"FASTLSTM_BLAS_CORETYPE": "Zen"}, "Zen"),
], ids=["amd-avx512", "amd-avx512-env", "amd-avx2", "amd-partial", "intel", "unknown",
        "override", "override-empty", "override-other"])
def test_coretype_choice(cpu, environ, expected):
    assert _blas.coretype(environ, lambda: cpu) == expected


def test_cpuinfo_reads_the_first_processor_alone(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: First\n"
                    "flags\t\t: fpu avx2\n\nprocessor\t: 1\nmodel name\t: Second\n"
                    "only_later\t: x\n\n")
    assert _blas.cpuinfo(path) == {"processor": "0", "vendor_id": "AuthenticAMD",
                                   "model name": "First", "flags": "fpu avx2"}
    assert _blas.cpuinfo(tmp_path / "missing") is None


def test_this_machines_cpu_is_read():
    vendor, flags = _blas._cpu()
    if not os.path.exists("/proc/cpuinfo"):
        assert (vendor, flags) == ("", set())
    else:
        assert vendor and "fpu" in flags


# fastlstm is imported before numpy (when it is imported at all): the harder order.
PROBE = r"""
import ctypes, json, os, sys
if sys.argv[1] == "fastlstm":
    import fastlstm
import numpy

def corename(fragment, symbol):
    for line in open("/proc/self/maps"):
        path = line.split()[-1]
        if fragment in path and "openblas" in path:
            f = getattr(ctypes.CDLL(path), symbol, None)
            if f is not None:
                f.restype = ctypes.c_char_p
                return f().decode()
    return None

result = {"numpy": corename("numpy.libs", "scipy_openblas_get_corename64_")}
if sys.argv[1] == "fastlstm":
    result["fastlstm"] = fastlstm.native.build_info()["blas_core"]
result["env"] = os.environ.get("OPENBLAS_CORETYPE")
print(json.dumps(result))
"""


def probe(what, **env):
    environ = {k: v for k, v in os.environ.items() if k != "FASTLSTM_BLAS_CORETYPE"}
    environ.update(OPENBLAS_CORETYPE="Haswell", **env)
    out = run_python(["-c", PROBE, what], capture_output=True, text=True, env=environ,
                     timeout=120, check=True).stdout
    return json.loads(out)


def test_fastlstm_leaves_numpy_and_the_environment_alone():
    alone = probe("numpy")
    with_fastlstm = probe("fastlstm")
    if alone["numpy"] is None:
        pytest.skip("numpy is not built with scipy-openblas here")
    assert with_fastlstm["numpy"] == alone["numpy"] == "Haswell"
    assert with_fastlstm["env"] == "Haswell"
    if _blas.coretype({}) == "SKYLAKEX":
        assert with_fastlstm["fastlstm"] == "SkylakeX"
    else:
        assert with_fastlstm["fastlstm"] == "Haswell"


def test_fastlstm_blas_coretype_overrides_for_fastlstm_only():
    got = probe("fastlstm", FASTLSTM_BLAS_CORETYPE="Sandybridge")
    assert got["fastlstm"] == "Sandybridge"
    assert got["env"] == "Haswell"
    assert got["numpy"] in (None, "Haswell")
