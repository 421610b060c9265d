#!/usr/bin/env bash
# Every test: Rust unit, property and C-ABI tests (cargo test), then the C
# suite and the header check through CMake (ctest).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

echo "== cargo test"
cargo test --quiet

echo "== ctest"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j2
(cd build && ctest --output-on-failure -j2)
