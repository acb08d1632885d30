"""The builds of the time loops (csrc/kernels_<isa>.c: one source compiled per instruction set):
the best one the CPU runs is chosen at run time, FASTLSTM_ISA or set_isa() forces a lower one, a
build the CPU lacks is refused rather than run, and every build the machine can run passes the
oracle tests. The rest of the suite tests the default build; here those oracle tests run again in
a subprocess for each other build."""
import os
import platform
import shlex
import shutil
import sys

import numpy as np
import pytest
from helpers import (KINDS, as64_tree, assert_functional_matches, random_problem,
                     run_functional, run_python)

import fastlstm
from fastlstm import native

AVAILABLE = native.available_isas()
DEFAULT = native.get_isa()


def cpu_flags():
    """The CPU's feature flags as Linux reports them (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].split() for line in f
                         if line.startswith("flags")), [])
    except OSError:
        return []


def expected_builds():
    """The builds this machine should run, from what /proc/cpuinfo says, best last."""
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return ("generic", "neon")
    flags = cpu_flags()
    builds = ("generic",)
    if machine in ("x86_64", "amd64") and "avx2" in flags and "fma" in flags:
        builds += ("avx2",) + ("avx512",) * ("avx512f" in flags)
    return builds


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/cpuinfo")
def test_the_builds_are_those_the_cpu_can_run_and_the_best_runs():
    assert AVAILABLE == expected_builds()
    chosen = os.environ.get("FASTLSTM_ISA") or AVAILABLE[-1]
    assert DEFAULT == chosen
    assert native.build_info()["isa"] == DEFAULT


@pytest.mark.parametrize("name", [i for i in native.ISAS if i not in AVAILABLE] + ["sse9"])
def test_a_build_the_cpu_cannot_run_is_refused(name):
    with pytest.raises(ValueError, match=f"set_isa: cannot run the '{name}' build"):
        native.set_isa(name)
    assert native.get_isa() == DEFAULT
    # Forced by the environment, it leaves the best build, with a warning, and never runs.
    code = ("import warnings; warnings.simplefilter('error'); import fastlstm")
    env = dict(os.environ, FASTLSTM_ISA=name)
    result = run_python(["-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert f"RuntimeWarning: FASTLSTM_ISA={name}:" in result.stderr
    code = "import fastlstm; print(fastlstm.native.get_isa())"
    result = run_python(["-W", "ignore", "-c", code], env=env, capture_output=True, text=True,
                        check=True)
    assert result.stdout.split() == [AVAILABLE[-1]]


AVX2_MACHINE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "tools", "avx2_machine", "run.sh")


@pytest.mark.skipif(not {"cpuid_fault", "avx2", "fma"} <= set(cpu_flags())
                    # $CC may be a command with words, "ccache gcc", as run.sh reads it
                    or not (shutil.which((shlex.split(os.environ.get("CC", "")) or ["cc"])[0])
                            and os.path.exists(AVX2_MACHINE)),
                    reason="needs an x86-64 AVX2 CPU with CPUID faulting, a C compiler and "
                           "tools/avx2_machine")
def test_a_cpu_without_avx512_gets_the_avx2_build_by_itself():
    """On an AVX-512 machine the run-time choice has only met CPUs with AVX-512: under
    tools/avx2_machine, which hides AVX-512 from CPUID, it must take the AVX2 build, and refuse
    the AVX-512 one when FASTLSTM_ISA asks for it, rather than run it; bench's report and
    `info` say that the CPU's AVX-512 was hidden."""
    env = {k: v for k, v in os.environ.items() if k != "FASTLSTM_ISA"}
    code = ("import fastlstm, fastlstm.bench; "
            "print(*fastlstm.native.available_isas(), fastlstm.native.get_isa(), "
            "fastlstm.bench.machine(with_torch=False).get('cpuid_hides_avx512'))")
    result = run_python(["-c", code], env=env, wrapper=["bash", AVX2_MACHINE],
                        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # and bench's report says that the CPU's AVX-512 was hidden, when /proc/cpuinfo lists it
    hidden = str(True) if "avx512f" in cpu_flags() else str(None)
    assert result.stdout.split() == ["generic", "avx2", "avx2", hidden]
    result = run_python(["-m", "fastlstm", "info"], env=env, wrapper=["bash", AVX2_MACHINE],
                        capture_output=True, text=True, check=True)
    assert "time loops:    avx2 build" in result.stdout
    assert ("CPU SIMD:      AVX-512 (hidden from this process's CPUID)" in result.stdout) == (
        "avx512f" in cpu_flags())
    env["FASTLSTM_ISA"] = "avx512"
    result = run_python(["-W", "error", "-c", "import fastlstm"], env=env,
                        wrapper=["bash", AVX2_MACHINE], capture_output=True, text=True)
    assert result.returncode == 1
    assert "RuntimeWarning: FASTLSTM_ISA=avx512: " in result.stderr


@pytest.fixture
def restore_isa():
    yield
    native.set_isa(DEFAULT)


# (T, B, I, H): steps whose rows per part leave every remainder of the builds' tiles of 4 and 8 rows
# (on 1 to 4 parts), panels that are partly used, and (on 2 parts or more) too few rows to add the
# input term in the steps' tiles (FUSE_ROWS); then deep products (K of 450 in the forward, 600 in
# dx), longer than the weights' panels that fit in any L1 cache, on enough rows to add it there;
# then one sequence, fewer than the parts of a machine of two processors or more: the steps of the
# forward and of the backward split by units (kernels_common.h, splits_units), H a multiple of every
# build's panel and the weights large enough for every cell. Last, one sequence on weights too small
# to split: tiles of a single row over every gate block, whose last panels run in groups of 4 and 2
# (kernels_impl.h, tile_rows), the last one partly used in some builds.
DISPATCH_SHAPES = [(41, 7, 13, 21), (4, 17, 300, 150), (9, 1, 5, 128), (9, 1, 7, 28)]


@pytest.mark.parametrize("shape", DISPATCH_SHAPES, ids=["rows", "deep", "units", "row"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_build_matches_the_reference_in_process(kind, dtype, shape, rng, restore_isa):
    """set_isa switches the build the next call runs: each one against the reference."""
    problem = random_problem(rng, kind, *shape, dtype=dtype, scale=0.2 if shape[2] < 100 else 0.05)
    _, ref = run_functional("reference", kind, problem)
    truth = (run_functional("reference", kind, as64_tree(problem))[1] if dtype == np.float32
             else None)
    results = {}
    for isa in AVAILABLE:
        native.set_isa(isa)
        names, results[isa] = run_functional("native", kind, problem)
        assert_functional_matches(names, results[isa], ref, truth)
    if dtype == np.float32 and "avx2" in AVAILABLE:
        # The vector builds round their gate math on FMAs and the generic one does not: the
        # switch really changed the code that ran.
        assert not all(np.array_equal(a, b) for a, b in zip(results["generic"], results["avx2"])
                       if a is not None)


ORACLE_TESTS = ["test_native_vs_reference.py", "test_gradcheck.py", "test_cells.py",
                "test_threads.py", "test_packed.py", "test_inference.py", "test_stream.py",
                "test_torch.py"]


@pytest.mark.parametrize("isa", [i for i in AVAILABLE if i != DEFAULT])
def test_every_other_build_passes_the_oracle_tests(isa):
    tests = os.path.dirname(__file__)
    env = dict(os.environ, FASTLSTM_ISA=isa)
    code = "import fastlstm; print(fastlstm.native.get_isa())"
    result = run_python(["-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.split() == [isa]
    result = run_python(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-x"]
                        + [os.path.join(tests, f) for f in ORACLE_TESTS],
                        env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_a_stream_keeps_the_build_it_was_made_in(restore_isa, rng):
    """A stream's scratch is sized for the build it was made in, and it keeps stepping in that
    build whatever set_isa says later."""
    if len(AVAILABLE) < 2:
        pytest.skip("one build on this machine")
    layer = fastlstm.LSTM(5, 9, num_layers=2, seed=0).eval()
    x = rng.standard_normal((6, 3, 5)).astype(np.float32)

    def steps(made_in, run_in):
        native.set_isa(made_in)
        stream = layer.stream(3)
        native.set_isa(run_in)
        return np.stack([stream.step(x[t]) for t in range(len(x))])

    first, best = AVAILABLE[0], AVAILABLE[-1]
    np.testing.assert_array_equal(steps(first, best), steps(first, first))
    np.testing.assert_array_equal(steps(best, first), steps(best, best))
    # float32 gate math rounds differently in the generic and the vector builds
    assert not np.array_equal(steps(first, first), steps(best, best))
