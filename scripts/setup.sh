#!/usr/bin/env bash
# Installs what kpalloc's build, demo and tests need, when it is missing.
# Sourced by scripts/kernel-demo.sh and scripts/test.sh; safe to run again.
set -euo pipefail

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)
command -v gcc >/dev/null || need_apt+=(gcc)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
command -v qemu-system-x86_64 >/dev/null || need_apt+=(qemu-system-x86)
[ -f /usr/include/cmocka.h ] || need_apt+=(libcmocka-dev)
dpkg -s gcc-multilib >/dev/null 2>&1 || need_apt+=(gcc-multilib) # 32-bit tests and kernel library
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  # rustup installs into ~/.cargo/bin.
  export PATH="$HOME/.cargo/bin:$PATH"
fi
for target in x86_64-unknown-none i586-unknown-linux-gnu; do
  if ! rustup target list --installed | grep -qx "$target"; then
    echo "setup: adding the $target target"
    rustup target add "$target"
  fi
done
# scripts/test.sh lints the build a Rust kernel makes with clippy.
if ! cargo clippy --version >/dev/null 2>&1; then
  echo "setup: adding clippy"
  rustup component add clippy
fi
