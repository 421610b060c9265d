#!/usr/bin/env bash
# Fuzzing, two targets one after the other, SECONDS each:
#   differential  the allocator against the reference model
#                 (fuzz/fuzz_targets/differential.rs, model in tests/model/mod.rs);
#   cached        the allocator with per-CPU caches against the shadow
#                 (fuzz/fuzz_targets/cached.rs, shadow in tests/cache_model/mod.rs).
#   scripts/fuzz.sh [SECONDS]     default 60; needs the nightly toolchain.
# New inputs go to fuzz/corpus/work/<target> (not committed); the committed
# seeds in fuzz/corpus/differential (differential only) are read only; cached
# starts from its work corpus alone. A crash lands in fuzz/artifacts/<target>/;
# replay it with
#   cargo +nightly fuzz run --no-trace-compares differential fuzz/artifacts/differential/crash-...
#   cargo +nightly fuzz run --no-trace-compares cached fuzz/artifacts/cached/crash-...
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

# --no-trace-compares: libFuzzer's comparison hooks took about two thirds
# of the time (perf), mostly in the loops of the check() run after every
# operation, and buy nothing the decoder needs (it picks from ranges, not
# magic values). 45 s each from an empty work corpus: differential 6286
# runs and coverage 1237 without them, 2448 and 1228 with; cached 14174
# and 1614 without, 7611 and 1593 with.
build=(--no-trace-compares)
options=(-max_total_time="$seconds" -max_len=2048 -print_final_stats=1 -timeout=20 -rss_limit_mb=4096)
mkdir -p fuzz/corpus/work/differential fuzz/corpus/work/cached
echo "fuzz: differential, $seconds s"
cargo +nightly fuzz run "${build[@]}" differential fuzz/corpus/work/differential fuzz/corpus/differential -- "${options[@]}"
echo "fuzz: cached, $seconds s"
# No seeds: without -len_control=0 libFuzzer grows inputs a few bytes at a
# time, and 45 s would see only sequences of a dozen operations (a 30 s
# run: coverage 1418 with the default, 1557 with it).
cargo +nightly fuzz run "${build[@]}" cached fuzz/corpus/work/cached -- "${options[@]}" -len_control=0
