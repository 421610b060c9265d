#!/usr/bin/env bash
# The kernel demonstration: builds the demo kernel of examples/kernel (C and
# a little assembly, kpalloc linked in as the freestanding library) and
# boots it in QEMU, its serial console on this terminal. The kernel hands
# the Multiboot memory map to kpalloc, exercises it in ring 0 (exhaustion,
# page tables and a CR3 switch, sharing, splitting, 2 MiB alignment, DMA32,
# allocation from the timer interrupt) and exits QEMU with its verdict.
#   usage: scripts/kernel-demo.sh [--pintos | --i386] [MEMORY]
#     --pintos  the kernel linked at 0x8004200000 like KAIST Pintos
#               (-mcmodel=large); default: the top 2 GiB (-mcmodel=kernel)
#     --i386    the 32-bit kernel laid out like the original Pintos (RAM at
#               0xc0000000), through the Pintos drop-in (pintos32.c)
#     MEMORY    guest memory for qemu -m (default 4G: memory above 4 GiB)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

layout=top2g
mem=4G
for arg in "$@"; do
  case $arg in
    --pintos) layout=pintos ;;
    --i386) layout=i386 ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) mem=$arg ;;
  esac
done

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target kpalloc_kernel_$layout -j2
exec examples/kernel/run-qemu.sh build/examples/kernel/kpalloc_kernel_$layout.bin "$mem" 120
