#!/usr/bin/env bash
# Runs a command as on an AVX2 + FMA machine without AVX-512, on a CPU that has AVX-512: every
# library in it, fastlstm, numpy, OpenBLAS, PyTorch and ONNX Runtime, picks the kernels it would
# pick there (hide_avx512.c). The numbers then measure that machine's code on this machine's
# cores, which run 256-bit instructions at their own rates: an emulation, to be labelled so.
#
# Usage: tools/avx2_machine/run.sh COMMAND [ARG...]
#   e.g. tools/avx2_machine/run.sh python -m fastlstm bench --json avx2.json
# Linux on x86-64 with CPUID faulting (the flag cpuid_fault in /proc/cpuinfo) and a C compiler
# ($CC, default cc).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if ! grep -qw cpuid_fault /proc/cpuinfo; then
    echo "$0: this CPU or its hypervisor has no CPUID faulting (cpuid_fault in /proc/cpuinfo)" >&2
    exit 1
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
library="$work/hide_avx512.so"
read -ra cc <<< "${CC:-cc}"
"${cc[@]}" -O2 -shared -fPIC -o "$library" "$here/hide_avx512.c"
# after what is preloaded already: a sanitizer's runtime must come first
export LD_PRELOAD="${LD_PRELOAD:+$LD_PRELOAD:}$library"
# Python's faulthandler would take the faults of CPUID over (hide_avx512.c)
unset PYTHONFAULTHANDLER PYTHONDEVMODE
# Two choices made before the preload runs, or from the kernel's view (/proc/cpuinfo), which
# CPUID faulting does not reach: glibc's string functions, picked by the dynamic loader as the
# process starts, and the kernels fastlstm loads its own OpenBLAS with (fastlstm/_blas.py).
hwcaps="glibc.cpu.hwcaps=-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD"
export GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}$hwcaps"
export FASTLSTM_BLAS_CORETYPE="${FASTLSTM_BLAS_CORETYPE-Haswell}"
"$@"
