#!/usr/bin/env bash
# Boots the demo kernel (512 MiB), takes the page_dump it prints on the
# serial port, and draws it with kpalloc-map into docs/memory-map.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target kpalloc_kernel_top2g -j2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
examples/kernel/run-qemu.sh build/examples/kernel/kpalloc_kernel_top2g.bin 512M 120 >"$log"
cargo run --quiet --bin kpalloc-map -- "$log" -o docs/memory-map.svg
echo "wrote docs/memory-map.svg"
