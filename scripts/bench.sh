#!/usr/bin/env bash
# Benchmarks kpalloc (C ABI and Rust API) against buddy_system_allocator,
# bitmap-allocator and a KeOS-style bitmap on the scenarios of
# benches/scenarios/mod.rs, in one run: prints the markdown table, writes it
# to docs/bench.md and the plot (ns per pair against memory size) to
# docs/bench.png. A few minutes on 2 cores.
#
#   scripts/bench.sh              the table and the plot
#   scripts/bench.sh --criterion  also the criterion benches (cargo bench --bench pairs)
#   scripts/bench.sh --callgrind  also instructions per pair (valgrind), S1 S2 S2b S3
set -euo pipefail
cd "$(dirname "$0")/.."

# The plot's font (plotters draws text with ab_glyph from a TTF file).
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
  echo "bench: installing fonts-dejavu-core"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq fonts-dejavu-core >/dev/null
fi

cargo bench --bench table

for arg in "$@"; do
  case "$arg" in
    --criterion)
      cargo bench --bench pairs
      ;;
    --callgrind)
      command -v valgrind >/dev/null || {
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
      }
      bin=$(cargo bench --bench table --no-run --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*table[^"]*\)".*/\1/p' | tail -1)
      out=$(mktemp -d)
      for sc in S1 S2 S2b S3; do
        KPALLOC_BENCH_PROFILE=$sc valgrind --tool=callgrind --callgrind-out-file="$out/$sc.cg" \
          --toggle-collect='*profiled_pairs*' "$bin" >/dev/null 2>&1
        echo "== $sc: instructions per pair (100000 pairs each)"
        callgrind_annotate --inclusive=yes "$out/$sc.cg" 2>/dev/null |
          grep 'profiled_pairs' | grep -v '^--' |
          awk '{gsub(",","",$1); n=$1/100000; sub(/.*profiled_pairs</,"",$0); sub(/>.*/,"",$0); printf "  %8.1f  %s\n", n, $0}'
      done
      ;;
    *) echo "unknown option $arg" >&2; exit 2 ;;
  esac
done
