#!/usr/bin/env bash
# Runs the unit tests and the tests that drive the Allocator and the C ABI
# under Miri (undefined behaviour, data races, leaks of unsafe code).
# Heavy tests are #[cfg_attr(miri, ignore)] or shrink under cfg(miri);
# the signal test is skipped (Miri has no signals). scripts/test.sh's
# 64-bit selection took 4 to 8 minutes here on 2026-12-07, the build
# included. (The "finished in" of each test binary is Miri's own clock,
# which counts work, not the wall's.)
#
# Provenance: kpalloc turns physical addresses into pointers with
# ptr::with_exposed_provenance (a kernel's direct map), so
# -Zmiri-strict-provenance cannot work; -Zmiri-permissive-provenance accepts
# those casts (from exposed allocations) and still checks every access.
# Leaks: add_region's contract gives the memory to the allocator for the rest
# of the program, so the tests leak their fake physical memory on purpose:
# -Zmiri-ignore-leaks. Stacked Borrows (Miri's default) and the data-race
# detector stay on; -Zmiri-symbolic-alignment-check rejects alignment that
# holds only by chance.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "miri: installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly miri --version >/dev/null 2>&1 \
  || ! rustup +nightly component list --installed | grep -q '^rust-src'; then
  echo "miri: adding miri and rust-src to nightly"
  rustup +nightly component add miri rust-src
fi
# `--setup` only installs (scripts/test.sh, before two runs side by side).
if [ "${1:-}" = --setup ]; then exit 0; fi

export MIRIFLAGS="${MIRIFLAGS:--Zmiri-permissive-provenance -Zmiri-symbolic-alignment-check -Zmiri-ignore-leaks}"
echo "miri: MIRIFLAGS=$MIRIFLAGS"
start=$(date +%s)
# Arguments replace the default selection, e.g. `scripts/miri.sh --test c_abi`.
if [ $# -eq 0 ]; then set -- --lib --tests; fi
cargo +nightly miri test "$@"
echo "miri: done in $(( $(date +%s) - start )) s"
