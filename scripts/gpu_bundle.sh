#!/usr/bin/env bash
# Prepares gpu-run/ (git-ignored) for scripts/gpu_run.sh on the GPU machine, which has no Rust:
#   gpu-run/bin/{rectrain,recpredict,gpu_probe}.xz   stripped binaries (dev profile, as the tests;
#                                                    dependencies are optimised there)
#   gpu-run/data/fm_{train,val}.rec, fm.classes      the demo's Fashion-MNIST subset at 28x28
#   gpu-run/data224/...                              the same packed at 224x224 (real-.rec speed)
# Then, with the device tool: run `bash scripts/gpu_run.sh RUN...` carrying gpu-run (see gpu_run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --no-run --features rectrain/gpu-probe >/dev/null
mkdir -p gpu-run/bin gpu-run/data gpu-run/data224
for b in target/debug/rectrain target/debug/recpredict target/debug/examples/gpu_probe; do
  strip -o "gpu-run/bin/$(basename "$b")" "$b"
  xz -T0 -6 -f "gpu-run/bin/$(basename "$b")"
done
data=data/fashion-mnist
for side in 28 224; do
  dir=gpu-run/data; [ "$side" = 224 ] && dir=gpu-run/data224
  target/debug/im2list --recursive --train-ratio 0.8 "$dir/fm" "$data" >/dev/null
  resize=(); [ "$side" = 224 ] && resize=(--resize 224)
  target/debug/im2rec --num-thread 2 "${resize[@]}" "$dir/fm" "$data" >/dev/null 2>&1
done
du -sh gpu-run/bin/* gpu-run/data gpu-run/data224
