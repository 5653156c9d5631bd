#!/usr/bin/env bash
# Configures and builds Verdant (Release, Ninja, ccache when present) into
# ${VERDANT_BUILD_DIR:-build}. Extra arguments go to CMake's configure step.
# Usage: scripts/build.sh [-DVERDANT_BUILD_BENCH=ON ...] [--target T]
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${VERDANT_BUILD_DIR:-build}
targets=()
cmake_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --target) targets+=(--target "$2"); shift 2 ;;
    *) cmake_args+=("$1"); shift ;;
  esac
done
if [ ! -f "$build_dir/build.ninja" ] || [ ${#cmake_args[@]} -gt 0 ]; then
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-Release}" "${cmake_args[@]}"
fi
jobs=${VERDANT_JOBS:-$(nproc)}
cmake --build "$build_dir" -j "$jobs" "${targets[@]}"
