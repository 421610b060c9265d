#!/usr/bin/env bash
# Differential fuzzing of the allocator against the reference model
# (fuzz/fuzz_targets/differential.rs, model in tests/model/mod.rs).
#   scripts/fuzz.sh [SECONDS]     default 60; needs the nightly toolchain.
# New inputs go to fuzz/corpus/work (not committed); the committed seeds in
# fuzz/corpus/differential are read only. A crash lands in
# fuzz/artifacts/differential/; replay it with
#   cargo +nightly fuzz run differential fuzz/artifacts/differential/crash-...
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
seconds="${1:-60}"

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz: installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

mkdir -p fuzz/corpus/work
cargo +nightly fuzz run differential fuzz/corpus/work fuzz/corpus/differential -- \
  -max_total_time="$seconds" -max_len=2048 -print_final_stats=1 -timeout=20 -rss_limit_mb=4096
