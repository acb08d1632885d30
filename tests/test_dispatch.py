"""The time loops have two builds (csrc/kernels_impl.h): AVX-512 with weights packed once per
call, chosen at run time on CPUs that have it, and a generic build whose products go through the
BLAS. FASTLSTM_VECTOR_KERNELS=0 forces the generic one; both must pass the native-vs-reference,
cell and thread-invariance tests, so on an AVX-512 machine those run again in a subprocess with
the generic build."""
import os

import pytest
from helpers import run_python

import fastlstm


def cpu_has_avx512f():
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and "avx512f" in line.split() for line in f)
    except OSError:
        return False


def test_the_vector_build_runs_where_the_cpu_has_avx512():
    expected = cpu_has_avx512f() and os.environ.get("FASTLSTM_VECTOR_KERNELS") != "0"
    assert fastlstm.native.build_info()["vector_kernels"] == expected


@pytest.mark.skipif(not fastlstm.native.build_info()["vector_kernels"],
                    reason="the generic build is the one the rest of the suite tests here")
def test_the_generic_build_passes_the_oracle_tests():
    tests = os.path.dirname(__file__)
    env = dict(os.environ, FASTLSTM_VECTOR_KERNELS="0")
    code = ("import fastlstm, sys; sys.exit(fastlstm.native.build_info()['vector_kernels'])")
    assert run_python(["-c", code], env=env).returncode == 0
    files = ["test_native_vs_reference.py", "test_cells.py", "test_threads.py", "test_packed.py",
             "test_inference.py"]
    result = run_python(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-x"]
                        + [os.path.join(tests, f) for f in files],
                        env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
