#!/usr/bin/env bash
# Prepares gpu-run/ (git-ignored) for scripts/gpu/gpu_run.sh on the GPU machine, which has no Rust:
#   gpu-run/bin/{rectrain,recpredict,gpu_probe}.xz   stripped binaries (dev profile, as the tests;
#                                                    dependencies are optimised there)
#   gpu-run/data/fm_{train,val}.rec, fm.classes      the demo's Fashion-MNIST subset at 28x28
#   gpu-run/data224/...                              the same packed at 224x224 (real-.rec speed)
# Then, with the device tool: run `bash scripts/gpu/gpu_run.sh` (the default list, within 420 s) or
# `bash scripts/gpu/gpu_run.sh RUN...`, carrying gpu-run (see gpu_run.sh; everything carried must stay
# under 64 MiB). It brings back $OUT/gpu-logs.tar.xz and $OUT/summary.txt and prints the summary last.
# `bash scripts/gpu/test_gpu_run.sh` checks gpu_run.sh here first, with fake binaries (no GPU, no cargo).
# TORCH_BASELINE=FILE (PyTorch's reference script, e.g. ../shared/bench/torch_baseline.py where the team keeps
# it) is copied to gpu-run/torch_baseline.py for gpu_run.sh's `torch` step; without it that step says missing.
#
# The CPU baseline of the demo's accuracy (what gpu_run.sh's t32cold is compared with) is measured on this
# machine, not the GPU one, and not by this script: it takes minutes of CPU. After bundling, run rectrain
# with t32cold's flags on the CPU:
#   target/debug/rectrain --train gpu-run/data/fm_train.rec --validation gpu-run/data/fm_val.rec \
#     --classes gpu-run/data/fm.classes --num-layers 18 --image-shape 3,32,32 --mini-batch-size 64 \
#     --learning-rate 0.05 --seed 1 --epochs 3 --device cpu --out /tmp/m32cpu
# (or `bash scripts/gpu/gpu_run.sh t32cpu`, the same command under a timeout) and note its last
# `Validation-accuracy=` beside the GPU session's t32cold row.
set -euo pipefail
cd "$(dirname "$0")/../.."
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
if [ -n "${TORCH_BASELINE:-}" ]; then
  cp "$TORCH_BASELINE" gpu-run/torch_baseline.py
fi
du -sh gpu-run/bin/* gpu-run/data gpu-run/data224
# The device tool carries at most 64 MiB in all.
kib=$(du -sk gpu-run | awk '{print $1}')
[ "$kib" -le 65536 ] || echo "gpu_bundle: gpu-run is $((kib / 1024)) MiB, over the 64 MiB the device tool carries" >&2
