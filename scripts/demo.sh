#!/usr/bin/env bash
# Installs what is missing, builds the `verdant` binary and runs the demo: a
# coordinator and 10 LibTorch clients training an MLP on Fashion-MNIST over
# loopback for 20 rounds. Extra arguments are passed to `verdant demo`
# (later flags win), e.g. scripts/demo.sh --partition dirichlet:0.5 --rounds 30
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh --target verdant
exec build/verdant demo --clients 10 --rounds 20 --model mlp --partition iid --seed 1 --out out/demo "$@"
