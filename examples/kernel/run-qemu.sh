#!/usr/bin/env bash
# Boots a demo kernel image in QEMU (TCG or KVM, whatever is there) with its
# serial port on stdout, and succeeds only if the kernel exits through
# isa-debug-exit with its success code (0x10 -> qemu status 33) after
# printing "N passed, 0 failed".
#   usage: run-qemu.sh KERNEL.bin MEMORY [TIMEOUT_SECONDS]
set -u
kernel=$1
mem=$2
limit=${3:-60}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s%N)
timeout "$limit" qemu-system-x86_64 -kernel "$kernel" -m "$mem" \
  -nographic -serial stdio -monitor none -no-reboot \
  -device isa-debug-exit,iobase=0xf4,iosize=0x04 </dev/null | tee "$log"
status=${PIPESTATUS[0]}
elapsed=$(( ($(date +%s%N) - start) / 1000000 ))
echo "run-qemu: $(basename "$kernel") -m $mem: ${elapsed} ms, qemu exit status $status"
last=$(tr -d '\r' <"$log" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -n 1)
if [ -z "$last" ]; then
  echo "run-qemu: no result line (timeout after ${limit}s or crash)"
  exit 1
fi
echo "run-qemu: $last"
# isa-debug-exit: the kernel writes 0x10 on success, qemu exits (0x10 << 1) | 1.
[ "$status" -eq 33 ] && [ "${last% passed, 0 failed}" != "$last" ]
