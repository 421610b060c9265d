#!/usr/bin/env bash
# Benchmarks kpalloc (C ABI and Rust API) against buddy_system_allocator,
# bitmap-allocator and a KeOS-style bitmap on the scenarios of
# benches/scenarios/mod.rs, in one run: prints the markdown table, writes it
# to docs/bench.md and the plot (ns per pair against memory size) to
# docs/bench.png. A few minutes on 2 cores.
#
#   scripts/bench.sh              the table and the plot
#   scripts/bench.sh --criterion  also the criterion benches (cargo bench --manifest-path benches/Cargo.toml --bench pairs)
#   scripts/bench.sh --callgrind  also instructions per pair (valgrind), S1 S2 S2b S3,
#                                 appended to docs/bench.md
set -euo pipefail
cd "$(dirname "$0")/.."

# The plot's font (plotters draws text with ab_glyph from a TTF file).
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
  echo "bench: installing fonts-dejavu-core"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq fonts-dejavu-core >/dev/null
fi

cargo bench --manifest-path benches/Cargo.toml --bench table

for arg in "$@"; do
  case "$arg" in
    --criterion)
      cargo bench --manifest-path benches/Cargo.toml --bench pairs
      ;;
    --callgrind)
      command -v valgrind >/dev/null || {
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
      }
      bin=$(cargo bench --manifest-path benches/Cargo.toml --bench table --no-run --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*table[^"]*\)".*/\1/p' | tail -1)
      out=$(mktemp -d)
      names=("kpalloc C ABI" "kpalloc Rust" "KeOS-style" "buddy_system_allocator" "bitmap-allocator")
      {
        echo
        echo "## Instructions per alloc+free pair (callgrind, 100000 pairs; S4 drain: per free, every page of 1 GiB; load-independent)"
        echo
        echo "| scenario | ${names[0]} | ${names[1]} | ${names[2]} | ${names[3]} | ${names[4]} |"
        echo "|---|--:|--:|--:|--:|--:|"
        for sc in S1 S2 S2b S3 S4drain; do
          if [ "$sc" = S4drain ]; then fn=free_each; else fn=profiled_pairs; fi
          row="| ${sc/S4drain/S4 drain} |"
          for i in 0 1 2 3 4; do
            # The drain prints how many frees it made; pairs are 100000.
            calls=$(KPALLOC_BENCH_PROFILE=$sc KPALLOC_BENCH_SUBJECT=$i KPALLOC_BENCH_ARENA_GIB=16 \
              valgrind --tool=callgrind --callgrind-out-file="$out/$sc-$i.cg" \
              --toggle-collect="*$fn*" "$bin" 2>/dev/null | tail -1)
            calls=${calls:-100000}
            # Only the toggled function is collected: the totals are its cost.
            ir=$(callgrind_annotate "$out/$sc-$i.cg" 2>/dev/null |
              awk -v calls="$calls" '/PROGRAM TOTALS/ && !done {gsub(",","",$1); printf "%.0f", $1/calls; done=1}')
            row="$row $ir |"
          done
          echo "$row"
        done
      } | tee -a docs/bench.md
      echo "(callgrind outputs in $out; \`callgrind_annotate $out/S1-0.cg\` shows where kpalloc's instructions go)"
      ;;
    *) echo "unknown option $arg" >&2; exit 2 ;;
  esac
done
