#!/usr/bin/env bash
# A/B timing of two revisions of kpalloc: builds benches/ab (this
# checkout's copy) against each revision, in a worktree of its own, and
# runs the two builds alternately, a process each, ROUNDS times. Each
# process prints the minimum and the tenth percentile of its batches: this
# machine's pace changes from second to second and a slow stretch only
# adds time, so compare those, over the rounds. About 8 s a process.
#
#   scripts/ab.sh REV_A REV_B [pairs|drain] [ROUNDS] [REGIONS]
#   e.g. scripts/ab.sh HEAD~1 HEAD pairs 6 3
#
# KPALLOC_AB_CACHES=off in the environment times kpalloc without its
# per-CPU caches (every call takes the lock), as kernels without a
# `cpu_id` hook run it.
#
# REV "." is the working tree as it is. The worktrees and builds stay in
# target/ab (removed at the start of the next run).
set -euo pipefail
cd "$(dirname "$0")/.."

a=${1:?usage: scripts/ab.sh REV_A REV_B [pairs|drain] [ROUNDS] [REGIONS]}
b=${2:?usage: scripts/ab.sh REV_A REV_B [pairs|drain] [ROUNDS] [REGIONS]}
mode=${3:-pairs}
rounds=${4:-6}
regions=${5:-1}
here=$(pwd)
work=target/ab

rm -rf "$work"
git worktree prune
mkdir -p "$work"

# Builds the harness against revision $2 as $work/$1.
build() {
  local name=$1 rev=$2 root
  if [ "$rev" = . ]; then
    root=$here
  else
    root=$here/$work/$name
    git worktree add --quiet --detach "$root" "$rev"
    rm -rf "$root/benches/ab"
    cp -r "$here/benches/ab" "$root/benches/ab"
  fi
  cargo build --quiet --release --manifest-path "$root/benches/ab/Cargo.toml" \
    --target-dir "$here/$work/build-$name"
  cp "$here/$work/build-$name/release/kpalloc-ab" "$here/$work/$name.bin"
}
build a "$a"
build b "$b"

echo "A = $a, B = $b: $mode, $regions region(s), caches ${KPALLOC_AB_CACHES:-on}"
for round in $(seq "$rounds"); do
  for side in a b; do
    printf '%s  ' "$(echo $side | tr ab AB)"
    "$work/$side.bin" "$mode" "$regions"
  done
done
