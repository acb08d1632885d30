"""The command line, run as a user runs it: `python -m fastlstm ...` in a fresh process."""
import json
import os
import re

import pytest
from helpers import run_python


# ONNX Runtime's two columns, when it is installed: its ms and ratio, or dashes for a row it does
# not run (a training step)
ORT_DASHES = r"(?:\s+-\s+-|\s+\d+\.\d+\s+\d+\.\d+x)?"


def run_cli(*args):
    env = dict(os.environ, OMP_NUM_THREADS="2")
    proc = run_python(["-m", "fastlstm", *args], capture_output=True, text=True, timeout=120,
                      env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_info_reports_version_openmp_threads_blas_and_simd():
    import fastlstm
    out = run_cli("info")
    assert f"fastlstm {fastlstm.__version__}" in out
    assert re.search(r"OpenMP:\s+(on|off)", out)
    assert re.search(r"threads:\s+\d+ \(OMP_NUM_THREADS=2\)", out)
    assert re.search(r"BLAS library:\s+OpenBLAS", out)
    assert re.search(r"BLAS kernel:\s+\S+", out)
    assert re.search(r"CPU SIMD:\s+\S+", out)
    import fastlstm.native as native
    assert re.search(rf"time loops:\s+{native.get_isa()} build .*builds this CPU can run: "
                     rf"{', '.join(native.available_isas())}", out)


def test_demo_runs_both_models_and_reports_against_the_baseline():
    # A tiny run: it checks the plumbing and the report, not that the LSTM learns (that takes
    # the full demo's 1500 steps).
    out = run_cli("demo", "--seq-len", "12", "--steps", "6", "--hidden", "4", "--batch", "8")
    assert "baseline" in out.lower()
    assert re.search(r"LSTM\s+\d\.\d{4}", out)
    assert re.search(r"Elman RNN\s+\d\.\d{4}", out)


def test_bench_prints_a_row_per_case_with_times_ratios_and_gflops():
    cells = ("lstm", "rnn", "gru", "lstmp", "peephole")
    args = [a for cell in cells for a in ("--case", f"{cell},5,2,8")]
    out = run_cli("bench", *args, "--case", "lstm,5,2,8,infer", "--section", "goals",
                  "--repeat", "1", "--no-torch", "--reference")
    assert re.search(r"Matrix peak .*float32 \d+", out)
    rows = [line for line in out.splitlines()
            if re.match(r"(LSTM|RNN|GRU|LSTMP|PEEPHOLE) f32 (train|inference) T=5", line)]
    assert len(rows) == len(cells) + 1
    for row in rows:
        # native ms, reference ms, ref/native, ONNX Runtime's columns, GFLOP/s, % peak
        assert re.search(r"\d+\.\d+\s+\d+\.\d+\s+\d+\.\dx" + ORT_DASHES + r"\s+\d+\s+\d+%$",
                         row), row
    assert "below goal" not in out      # these cases have no goals


def test_bench_times_the_builds_side_by_side_in_the_dtype_asked():
    import fastlstm.native as native
    builds = native.available_isas()[::-1]
    out = run_cli("bench", "--case", "lstm,5,2,8", "--dtype", "float64", "--section", "goals",
                  "--repeat", "1", "--no-torch", "--isa", ",".join(builds))
    assert f"fastlstm kernels: the {builds[0]} build (native)" in out
    head = next(line for line in out.splitlines() if line.startswith("case"))
    for build in builds[1:]:
        assert f"{build} ms" in head and f"{build}/native" in head
    row = next(line for line in out.splitlines() if line.startswith("LSTM f64 train T=5"))
    # native ms, then each other build's ms and ratio, GFLOP/s, % peak
    assert re.search(r"\d+\.\d+" + r"\s+\d+\.\d+\s+\d+\.\d+x" * (len(builds) - 1)
                     + ORT_DASHES + r"\s+\d+\s+\d+%$", row), row


@pytest.mark.parametrize("isas", ["sse9", "generic,generic"])
def test_bench_refuses_builds_it_cannot_run(isas):
    proc = run_python(["-m", "fastlstm", "bench", "--isa", isas], capture_output=True,
                      text=True, timeout=60)
    assert proc.returncode == 2 and "distinct builds this machine can run" in proc.stderr


def test_bench_runs_onnx_runtime_beside_the_inference_rows(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    report = tmp_path / "bench.json"
    out = run_cli("bench", "--case", "gru,4,2,8,infer", "--case", "lstm,4,2,8", "--case",
                  "lstmp,4,2,8,infer", "--section", "goals", "--repeat", "1", "--no-torch",
                  "--json", str(report))
    infer, train, projected = json.loads(report.read_text())["rows"]
    assert infer["onnxruntime"] > 0
    assert infer["ort_speedup"] == pytest.approx(infer["onnxruntime"] / infer["native"])
    # a training step, and a cell ONNX has not, run without it
    assert "onnxruntime" not in train and "onnxruntime" not in projected
    assert re.search(r"against ONNX Runtime: geometric mean \d+\.\d+x", out)


def test_bench_writes_json_and_plot(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    report, png = tmp_path / "bench.json", tmp_path / "bench.png"
    run_cli("bench", "--case", "gru,4,2,8", "--case", "lstm,3,1,4,infer", "--section", "goals",
            "--repeat", "1", "--json", str(report), "--plot", str(png))
    data = json.loads(report.read_text())
    assert data["machine"]["num_threads"] == 2 and "torch" in data["machine"]
    assert data["peak_gflops"]["float32"] > 0
    assert [(r["cell"], r["mode"]) for r in data["rows"]] == [("gru", "train"),
                                                              ("lstm", "infer")]
    for r in data["rows"]:
        assert r["native"] > 0 and r["torch"] > 0
        assert r["speedup"] == pytest.approx(r["torch"] / r["native"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("case", ["lstm2,5,2,8", "lstm,5,2", "lstm,0,2,8", "lstm,a,2,8",
                                  "lstm,5,2,8,fast", "lstm,5,2,8,infer,x"])
def test_bench_refuses_a_bad_case(case):
    proc = run_python(["-m", "fastlstm", "bench", "--case", case], capture_output=True,
                      text=True, timeout=60)
    assert proc.returncode == 2
    assert "CELL,T,B,H" in proc.stderr and case in proc.stderr
