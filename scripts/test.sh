#!/usr/bin/env bash
# Every test, layer by layer:
#   cargo test   unit and property tests of the core (proptest against a
#                reference model), the Allocator and the RAII types, the C
#                ABI called from Rust, the 8-thread stress test and the
#                signal-reentrance test;
#   cargo test (32-bit)
#                the same on i586, as a 32-bit kernel (original Pintos)
#                would run kpalloc;
#   loom         every interleaving of the lock-free refcount protocol;
#   miri         the unit, Allocator, cache, Rust API and C-ABI tests under
#                Miri;
#   miri (32-bit)
#                the unit, Allocator and C-ABI tests under Miri for i686,
#                run beside the 64-bit run;
#   ctest        the C suite (cmocka, plain and ASan/UBSan), the Pintos
#                drop-in, the header check, the demo, the installed-package
#                consumer, the kernel link check and five QEMU boots;
#   fuzz         fuzzing: differential against the model, then the per-CPU
#                caches against their shadow, 45 s each;
#   benches      the benchmarks build, and each scenario runs once on every
#                allocator (the profile mode, no timing), as does the A/B
#                harness.
# Installs what is missing (scripts/setup.sh). Ends with "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

passed=0
failed=0
layer() {
  local name=$1
  shift
  echo
  echo "== $name"
  local start=$SECONDS
  if "$@"; then
    passed=$((passed + 1))
    echo "== $name: ok ($((SECONDS - start)) s)"
  else
    failed=$((failed + 1))
    echo "== $name: FAILED ($((SECONDS - start)) s)"
  fi
}

ctest_all() {
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null &&
    cmake --build build -j2 &&
    (cd build && ctest --output-on-failure -j2)
}

# Not timed: it checks that the benchmarks build, and that every
# scenario's setup and allocations succeed on every allocator (the benches
# stop on a refusal), so that scripts/bench.sh and scripts/ab.sh keep
# working.
benches_smoke() {
  local bench=(cargo bench --quiet --manifest-path benches/Cargo.toml)
  "${bench[@]}" --no-run &&
    for scenario in S1 S2 S2b S3 S4drain; do
      # (A 16 GiB arena, as under valgrind: the 2 TiB default is for S5's 64 GiB.)
      KPALLOC_BENCH_PROFILE=$scenario KPALLOC_BENCH_ARENA_GIB=16 "${bench[@]}" --bench table >/dev/null || return 1
    done &&
    cargo run --quiet --release --manifest-path benches/ab/Cargo.toml -- drain 2
}

# Also the build a Rust kernel makes (no default features), warning-free:
# dependencies' warnings do not show in the kernel's own build. And the API
# docs of both builds, without a broken link.
cargo_test() {
  cargo test --quiet && cargo clippy --quiet --lib --no-default-features -- -D warnings &&
    RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps &&
    RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps --no-default-features
}

layer "cargo test" cargo_test
layer "cargo test (32-bit)" cargo test --quiet --target i586-unknown-linux-gnu
layer "loom" env RUSTFLAGS="--cfg loom" cargo test --quiet --release --lib --target-dir target/loom refcount
# Under Miri: the unit tests and the tests that drive the allocator and the
# C ABI (the model walk, stress and signal tests are for native runs). Miri
# interprets on one core, so the 32-bit run goes beside the 64-bit one (in
# a target dir of its own: cargo locks one while it runs), its output held
# until the 64-bit layer ends. Fresh clones on 2026-12-07, 22:00 to 23:50:
# 401, 422 and 466 s for both side by side, against 462, 562 and 566 one
# after the other (the whole command 15.6 to 16.4 min against 16.0 to 18.6).
./scripts/miri.sh --setup || true
mkdir -p target
./scripts/miri.sh --target i686-unknown-linux-gnu --target-dir target/miri-i686 \
  --lib --test allocator --test c_abi >target/miri-i686.log 2>&1 &
miri_32bit=$!
miri_32bit_result() {
  local status=0
  wait "$miri_32bit" || status=$?
  cat target/miri-i686.log
  return "$status"
}
layer "miri" ./scripts/miri.sh --lib --test allocator --test c_abi --test rust_api --test miri_soundness --test cpu_cache
layer "miri (32-bit, run beside it)" miri_32bit_result
layer "ctest" ctest_all
layer "fuzz" ./scripts/fuzz.sh 45
layer "benches" benches_smoke

echo
echo "layers: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
