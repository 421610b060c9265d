#!/bin/sh
# Turns cargo's libkpalloc.a into the library C kernels link: one relocatable
# object in which only the page_*/kpalloc_* symbols are global (every Rust
# and core symbol becomes local), unreachable code is dropped, the
# per-function sections are merged into .text, .rodata, .data and .bss
# (tools/prelink.ld), rustc's embedded bitcode is removed, and LLVM's bcmp
# calls become memcmp calls.
#   usage: prelink.sh IN.a OUT.a
set -eu
in=$1
out=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

nm -g --defined-only "$in" 2>/dev/null | awk '$3 ~ /^(page_|kpalloc_)/ { print $3 }' | sort -u > "$work/exports"
[ -s "$work/exports" ] || { echo "prelink: no page_/kpalloc_ symbols in $in" >&2; exit 1; }

roots=$(sed 's/^/-u /' "$work/exports")
# ld links for its default machine unless told: a 32-bit library stays 32-bit.
emulation=
if objdump -f "$in" 2>/dev/null | grep -q 'file format elf32-i386'; then
  emulation="-m elf_i386"
fi
# shellcheck disable=SC2086
ld $emulation -r -T "$(dirname "$0")/prelink.ld" --whole-archive "$in" --gc-sections $roots -o "$work/kpalloc.o"
keep=$(sed 's/^/--keep-global-symbol=/' "$work/exports")
# shellcheck disable=SC2086
objcopy -R .llvmbc -R .llvmcmd --redefine-sym bcmp=memcmp $keep "$work/kpalloc.o" "$work/kpalloc-prelinked.o"
rm -f "$out"
ar rcs "$out" "$work/kpalloc-prelinked.o"
