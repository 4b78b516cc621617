#!/usr/bin/env bash
# Build the four tools and run the whole pipeline on the embedded Fashion-MNIST subset (data/):
# im2list -> im2rec -> rectrain -> recpredict -> jq report. Uses a GPU when one is usable, else the CPU
# (a few minutes on 2 cores). Extra arguments go to make, e.g. `scripts/demo.sh EPOCHS=2`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
if ! command -v jq >/dev/null 2>&1; then
  echo "demo: installing jq (apt-get)" >&2
  ($SUDO apt-get update -qq && $SUDO apt-get install -y -qq jq) >&2
fi
# oneDNN, the CPU's convolution library (loaded at run time; without it the tools run on burn-flex's
# kernels, about 3x slower on the CPU, and say so). Best effort: the demo runs either way.
if ! ldconfig -p 2>/dev/null | grep 'libdnnl\.so\.2 ' >/dev/null; then
  echo "demo: installing oneDNN (apt-get install libdnnl2)" >&2
  ($SUDO apt-get install -y -qq libdnnl2 || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libdnnl2; }) >&2 ||
    echo "demo: oneDNN not installed; training runs on burn-flex's kernels" >&2
fi
# The workspace's dev profile optimises every dependency (burn's kernels, the image codecs) at
# opt-level 3, so these binaries train at full speed. They come from the same build as
# `cargo test --workspace` (burn is compiled once for both commands); a plain `cargo build`
# resolves features without the dev-dependencies and would compile burn a second time.
cargo test --workspace --no-run
make -C scripts clean
make -C scripts demo BIN=../target/debug "$@"
