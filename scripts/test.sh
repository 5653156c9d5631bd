#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite through
# CTest. On a fresh Debian 12 machine this is the one command to run.
# Usage: scripts/test.sh [--sanitize] [extra ctest args, e.g. -L server]
#   --sanitize   build with AddressSanitizer + UBSan into build-asan/ and run
#                the unit tests (labels crash, load and e2e excluded)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

sanitize=0
ctest_args=()
for a in "$@"; do
  case "$a" in
    --sanitize) sanitize=1 ;;
    *) ctest_args+=("$a") ;;
  esac
done

if [ "$sanitize" -eq 1 ]; then
  export VERDANT_BUILD_DIR=${VERDANT_BUILD_DIR:-build-asan}
  CMAKE_BUILD_TYPE=RelWithDebInfo scripts/build.sh -DVERDANT_SANITIZE=address,undefined
  export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  ctest_args+=(-LE "crash|load|e2e")
else
  scripts/build.sh
fi

cd "${VERDANT_BUILD_DIR:-build}"
ctest --output-on-failure --timeout 900 -j "${VERDANT_TEST_JOBS:-2}" "${ctest_args[@]}"
