#!/usr/bin/env bash
# The C harness (harness.c): every cell in float32 and float64, forward and backward, through
# every build of the kernels the target CPU runs, against the NumPy reference's results.
#
# Usage: tools/harness/run.sh [aarch64|native]     (default aarch64)
#   aarch64: cross-compiled with Debian's gcc-aarch64-linux-gnu and run under qemu-user
#            (qemu-aarch64, which emulates a CPU with Advanced SIMD): the generic and NEON builds;
#   native:  this machine's compiler and CPU: its builds (on x86-64 generic, AVX2, AVX-512).
# The kernels are compiled with setup.py's flags, each build with its own target flags
# (csrc/builds.json), and linked with blas_shim.c's plain loops instead of OpenBLAS. Needs
# python with numpy and fastlstm's sources (for the reference) to write the cases.
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${1:-aarch64}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 - "$work/cases" <<'PY'
import importlib.util, sys, types
# fastlstm.reference needs only numpy and fastlstm/_functional.py: load them without the
# package's __init__, which needs the compiled extension this harness replaces.
pkg = types.ModuleType("fastlstm"); pkg.__path__ = ["fastlstm"]; sys.modules["fastlstm"] = pkg
spec = importlib.util.spec_from_file_location("write_cases", "tools/harness/write_cases.py")
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
module.main(sys.argv[1])
PY

flags=(-O2 -fno-trapping-math -ffp-contract=off -fopenmp -Itools/harness -Icsrc)
case "$target" in
    aarch64) cc=aarch64-linux-gnu-gcc; arch=aarch64; runner=(qemu-aarch64 -L /usr/aarch64-linux-gnu) ;;
    native) cc=gcc; arch="$(uname -m)"; runner=() ;;
    *) echo "run.sh: target aarch64 or native, got $target" >&2; exit 2 ;;
esac
# the architecture's builds and each one's target flags, as setup.py takes them: csrc/builds.json
declare -A isa_flags
builds=()
while read -r build build_flags; do
    builds+=("$build")
    isa_flags[$build]="$build_flags"
done < <(python3 -c "
import json, sys
for build, flags in json.load(open('csrc/builds.json')).get(sys.argv[1], {'generic': []}).items():
    print(build, ' '.join(flags))" "$arch")
objects=()
for build in "${builds[@]}"; do
    # shellcheck disable=SC2086
    $cc "${flags[@]}" ${isa_flags[$build]} -c "csrc/kernels_$build.c" -o "$work/$build.o" &
    objects+=("$work/$build.o")
done
wait
$cc "${flags[@]}" csrc/kernels.c tools/harness/harness.c tools/harness/blas_shim.c "${objects[@]}" \
    -lm -o "$work/harness"
"${runner[@]}" "$work/harness" "$work"/cases/*.case
