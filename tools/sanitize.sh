#!/usr/bin/env bash
# Sanitizers: build fastlstm with AddressSanitizer and UndefinedBehaviorSanitizer and run the tests
# under them.
#
# Usage: tools/sanitize.sh [pytest arguments]      (default: the whole suite, tests/)
#
# What it does:
#   1. makes a throwaway virtual environment (deleted on exit) and installs fastlstm into it from
#      a copy of the tree, built with FASTLSTM_DEBUG=1 (-O0 -g, Cython's bounds checks on) and
#      every C file compiled and linked with -fsanitize=address,undefined. The flags go into CC,
#      not CFLAGS/LDFLAGS, so that setup.py's OpenMP probe links its test program with them too
#      (it gets no LDFLAGS and would otherwise fail to link and build without OpenMP). -fno-wrapv
#      undoes the -fwrapv of Python's own CFLAGS, under which signed overflow is defined and UBSan
#      would not look for it;
#   2. runs pytest with the ASan runtime preloaded (the Python interpreter is not built with ASan,
#      and the runtime must be the first library loaded). ASan stops at the first memory error,
#      UBSan at the first undefined behaviour (halt_on_error); both print a stack trace and pytest
#      then dies with a non-zero exit code. Leak detection is off: CPython keeps its own
#      allocations until exit by design, so every run would "leak". allocator_may_return_null
#      makes an allocation too large to satisfy return NULL, as malloc does, instead of ending
#      the process: the tests ask for impossible sizes to check that they raise MemoryError.
#
# PyTorch works under the preloaded ASan runtime, so the bridge's tests run too when torch is
# installed: set FASTLSTM_SANITIZE_TORCH=1 to install torch into the throwaway environment.
# Exit code: pytest's.
set -euo pipefail
cd "$(dirname "$0")/.."

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
py="$work/venv/bin/python"

if [[ "${FASTLSTM_SANITIZE_TORCH:-0}" == 1 ]]; then
    "$py" -m pip install --quiet torch==2.13.0
fi
# From a copy of the tree without its build products: pip builds in the tree it installs from,
# and would leave the sanitized objects in ./build, where a later `setup.py build_ext --inplace`
# takes them as up to date and copies the sanitized library into fastlstm/.
mkdir "$work/src"
tar --exclude=./build --exclude=./.git --exclude='*.egg-info' --exclude='*.so' \
    --exclude='./fastlstm/*.c' --exclude=__pycache__ -cf - . |
    tar -xf - -C "$work/src"
CC="gcc -fsanitize=address,undefined -fno-omit-frame-pointer" CFLAGS="-fno-wrapv" \
    FASTLSTM_DEBUG=1 "$py" -m pip install --quiet "$work/src[test]"

# A run whose build silently lacked the sanitizers would pass without having checked anything.
site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')"
# ldd's whole output first: `ldd | grep -q` under pipefail fails whenever grep, done at its first
# match, closes the pipe before ldd has written the rest (ldd then dies of SIGPIPE)
libraries="$(ldd "$site"/fastlstm/native*.so)"
if ! grep -q libasan <<< "$libraries"; then
    echo "sanitize.sh: fastlstm.native was not linked with ASan" >&2
    exit 1
fi

sanitized() {
    # libstdc++ is preloaded too: ASan's interceptor of C++ throws finds the real __cxa_throw only
    # in a library loaded before it starts, and a throw without it (torch raises its errors as
    # C++ exceptions) stops the process with "CHECK failed: ... real___cxa_throw".
    LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)" \
        ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1" \
        UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
        "$@"
}
# From $work: run from this source tree's root, `python -c` would import the tree's fastlstm/,
# which has no extension built in it.
(cd "$work" && sanitized "$py" -c \
    'import fastlstm; assert fastlstm.native.build_info()["openmp"], "no OpenMP"')
sanitized "$work/venv/bin/pytest" -p no:cacheprovider "${@:-tests}"
