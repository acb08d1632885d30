#!/usr/bin/env bash
# Runs a command as on an AVX2 + FMA machine without AVX-512, on a CPU that has AVX-512: every
# library in it, fastlstm, numpy, OpenBLAS, PyTorch and ONNX Runtime, picks the kernels it would
# pick there (hide_avx512.c). The numbers then measure that machine's code on this machine's
# cores, which run 256-bit instructions at their own rates: an emulation, to be labelled so.
#
# Usage: tools/avx2_machine/run.sh COMMAND [ARG...]
#   e.g. tools/avx2_machine/run.sh python -m fastlstm bench --json avx2.json
# Linux on x86-64 with CPUID faulting (the flag cpuid_fault in /proc/cpuinfo) and a C compiler.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if ! grep -qw cpuid_fault /proc/cpuinfo; then
    echo "$0: this CPU or its hypervisor has no CPUID faulting (cpuid_fault in /proc/cpuinfo)" >&2
    exit 1
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
library="$work/hide_avx512.so"
"${CC:-cc}" -O2 -shared -fPIC -o "$library" "$here/hide_avx512.c"
# after what is preloaded already: a sanitizer runtime must come first
export LD_PRELOAD="${LD_PRELOAD:+$LD_PRELOAD:}$library"
# Two choices made from /proc/cpuinfo, the kernel's view, which CPUID faulting does not reach:
# fastlstm's kernels for its own OpenBLAS (fastlstm/_blas.py), and glibc's string functions.
export FASTLSTM_BLAS_CORETYPE="${FASTLSTM_BLAS_CORETYPE-Haswell}"
export GLIBC_TUNABLES="glibc.cpu.hwcaps=-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD"
"$@"
