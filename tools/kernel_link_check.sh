#!/bin/sh
# ctest kernel_link_check: links the freestanding libkpalloc.a into an object
# compiled like kernel code and fails if
#   - the final link needs anything beyond memcpy, memset, memmove, memcmp,
#   - the library defines a global symbol outside page_* / kpalloc_*, or a
#     section beyond .text, .rodata, .data and .bss (.ltext ... when large),
#   - its code uses an SSE/AVX register (xmm/ymm/zmm) or the x87 FPU,
#   - an exported function needs more than 1 KiB of stack
#     (tools/stack_usage.py on STACK_LIB, a -Zemit-stack-sizes build of the
#     same library, or on LIB itself from its disassembly when STACK_LIB is "").
# usage: kernel_link_check.sh [--large | --i386] LIB STACK_LIB INCLUDE_DIR WORK_DIR
#   (default: x86-64, -mcmodel=kernel; --large: x86-64 above 4 GiB, as KAIST
#   Pintos; --i386: a 32-bit kernel at 3 GiB, as the original Pintos)
set -eu
arch_flags="-mno-red-zone -mcmodel=kernel"
emulation=elf_x86_64
base=0xffffffff80100000
case $1 in
  --large)
    arch_flags="-mno-red-zone -mcmodel=large"
    base=0x8004200000
    shift
    ;;
  --i386)
    arch_flags="-m32"
    emulation=elf_i386
    base=0xc0100000
    shift
    ;;
esac
lib=$1
stack_lib=$2
include=$3
work=$4
here=$(cd "$(dirname "$0")" && pwd)
limit=1024
mkdir -p "$work"
fail=0

cflags="-ffreestanding -nostdlib -fno-pic $arch_flags -mno-sse -mno-mmx -O2 -Wall -Werror -fno-stack-protector -fno-asynchronous-unwind-tables"
# shellcheck disable=SC2086
gcc $cflags -I"$include" -c "$here/kernel-link-check/user.c" -o "$work/user.o"
# shellcheck disable=SC2086
gcc $cflags -c "$here/../examples/kernel/mem.c" -o "$work/mem.o"
exports=$(nm -g --defined-only "$lib" | awk '$3 ~ /^(page_|kpalloc_)/ { printf " -u %s", $3 }')
link() { # output, objects...
  out=$1
  shift
  # shellcheck disable=SC2086
  ld -m $emulation -static -nostdlib -e _start -Ttext="$base" -z noexecstack $exports -o "$out" "$@"
}

echo "kernel_link_check: $lib ($arch_flags, linked at $base)"
size "$lib" | tail -n 1 | awk '{ printf "library: text %s, data %s, bss %s bytes\n", $1, $2, $3 }'

# 1. Undefined symbols of the final link, without the kernel's mem* functions.
undefined=$(link "$work/nomem.elf" "$work/user.o" "$lib" 2>&1 |
  sed -n "s/.*undefined reference to \`\([^']*\)'.*/\1/p" | sort -u | tr '\n' ' ')
echo "undefined without the kernel's mem*: ${undefined:-none}"
for sym in $undefined; do
  case $sym in
    memcpy | memset | memmove | memcmp) ;;
    *) echo "FAIL: the library needs $sym"; fail=1 ;;
  esac
done
# ... and the complete link with them must succeed.
if link "$work/kernel.elf" "$work/user.o" "$work/mem.o" "$lib"; then
  echo "final link with mem* from the kernel: ok ($(size "$work/kernel.elf" | awk 'NR == 2 { print $4 }') bytes)"
else
  echo "FAIL: the final link failed"
  fail=1
fi

# 2. Global symbols of the library.
others=$(nm -g --defined-only "$lib" | awk 'NF == 3 && $3 !~ /^(page_|kpalloc_)/ { print $3 }' | tr '\n' ' ')
globals=$(nm -g --defined-only "$lib" | awk 'NF == 3' | wc -l)
echo "global symbols: $globals, outside page_*/kpalloc_*: ${others:-none}"
[ -z "$others" ] || fail=1

# 2b. Only the classic sections (tools/prelink.ld), so that a kernel script
#     naming just .text, .rodata, .data and .bss (as Pintos') takes it all,
#     its statics inside the .bss the kernel zeroes.
extra=$(objdump -h "$lib" | awk '$1 ~ /^[0-9]+$/ { print $2 }' |
  grep -vxE '\.l?(text|rodata|data|bss)|\.debug_[a-z]+|\.comment|\.note\.GNU-stack' | tr '\n' ' ' || true)
echo "sections beyond .text, .rodata, .data, .bss (and .l*): ${extra:-none}"
[ -z "$extra" ] || fail=1

# 3. No SSE/AVX register and no x87 instruction anywhere in the library's
#    code: a kernel does not save that state on entry (an AtomicU64 load is
#    an x87 fild/fistp pair on i586).
objdump -d --no-show-raw-insn "$lib" > "$work/lib.dis"
insns=$(grep -c '^ *[0-9a-f]*:' "$work/lib.dis" || true)
fpu='%[xyz]mm[0-9]|^ *[0-9a-f]+:[[:space:]]+f[a-z0-9]*([[:space:]]|$)'
vector=$(grep -E "$fpu" "$work/lib.dis" | grep -cvE '^ *[0-9a-f]+:[[:space:]]+fs[[:space:]]' || true)
echo "instructions: $insns, using xmm/ymm/zmm or the x87 FPU: $vector"
if [ "$vector" -ne 0 ]; then
  grep -E "$fpu" "$work/lib.dis" | head -5
  fail=1
fi

# 4. Stack use of every exported function.
if [ -n "$stack_lib" ]; then
  link "$work/stack.elf" "$work/user.o" "$work/mem.o" "$stack_lib"
  elf=$work/stack.elf
else
  elf=$work/kernel.elf
fi
python3 "$here/stack_usage.py" "$elf" "$limit" || fail=1

if [ "$fail" -ne 0 ]; then
  echo "kernel_link_check: FAILED"
  exit 1
fi
echo "kernel_link_check: passed"
