#!/usr/bin/env bash
# Valgrind memcheck on the native kernels: every cell in float32 and float64, forward and
# backward, packed and plain batches, streams (tools/memcheck_cells.py), on the optimised build
# users get. Complements tools/sanitize.sh, whose ASan build is unoptimised.
#
# Usage: tools/valgrind.sh       (needs valgrind: Debian's package; there is none on PyPI)
#
# A throwaway virtual environment (deleted on exit) gets fastlstm as `pip install .` builds it,
# and the workout runs under memcheck with:
#   PYTHONMALLOC=malloc   CPython's small-object allocator would hide its blocks from memcheck;
#   FASTLSTM_BLAS_CORETYPE=Haswell FASTLSTM_ISA=avx2, then =generic   valgrind cannot decode
#       AVX-512 and stops at the first such instruction, which the BLAS's SkylakeX kernels and
#       fastlstm's own AVX-512 time loops (both its choice on an AVX-512 machine) are full of:
#       the AVX2 BLAS kernels and the AVX2 and generic builds of the time loops instead, one
#       run each (tools/sanitize.sh covers the AVX-512 build, whose code is the same source);
#   tools/valgrind-python.supp   suppresses the reports CPython and the dynamic loader draw by
#       themselves (`python -c pass` draws some), each by its innermost frame only.
# Leaks are not checked here (CPython and numpy leave blocks unfreed at exit by design):
# tests/test_memory.py checks that memory stays flat over thousands of calls.
# Exit code: 1 when memcheck reports an error or a result is wrong, else 0.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null; then
    echo "valgrind.sh: valgrind is not installed (apt-get install valgrind)" >&2
    exit 1
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet .

for isa in avx2 generic; do
    PYTHONMALLOC=malloc FASTLSTM_BLAS_CORETYPE=Haswell FASTLSTM_ISA=$isa \
        valgrind --tool=memcheck --error-exitcode=1 --leak-check=no --num-callers=30 \
        --suppressions=tools/valgrind-python.supp \
        "$work/venv/bin/python" tools/memcheck_cells.py
done
