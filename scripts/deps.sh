#!/usr/bin/env bash
# Installs the Debian 12 packages Verdant builds and runs with, if any is
# missing. Idempotent and quick when everything is there (one dpkg query).
# Usage: scripts/deps.sh [--bench]   (also used by demo.sh and test.sh)
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config ccache git
  libasio-dev libprotobuf-dev protobuf-compiler libsodium-dev libssl-dev libeigen3-dev zlib1g-dev
  libtorch-dev libopenblas0-pthread
  doctest-dev libcli11-dev libtomlplusplus-dev libspdlog-dev nlohmann-json3-dev
  libsqlite3-dev libcpp-httplib-dev libbenchmark-dev
  dataset-fashion-mnist
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
