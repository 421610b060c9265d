#!/usr/bin/env bash
# The main demonstration: builds kpalloc and runs the demo through its C API.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target kpalloc_demo -j2
./build/kpalloc_demo
