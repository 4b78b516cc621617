#!/usr/bin/env bash
# Multi-process training on this machine: rectrain on the demo's Fashion-MNIST subset (960 training
# images at 28x28, ResNet-18, one epoch) as 1 process and as 2 and 4 MPI ranks on loopback, each rank
# with the same mini-batch (the global batch grows with the ranks, SageMaker's rule). Prints, per run,
# the global batch, the training img/s (all ranks together, from rank 0's epoch line), the share of the
# training pass spent summing the gradients across the ranks, and the bytes each rank sends per step
# (rank 0's "Rank 0 epoch 0: ..." line). On a 2-core machine the ranks share the cores: this shows the
# cost of the exchange, not a speed-up.
#
# Usage: scripts/bench/bench_distributed.sh          (after `cargo test --workspace --no-run`)
# Variables: BIN (folder of the tools, target/debug), WORK (target/bench-distributed), NPS ("1 2 4"),
# BATCH (per-rank mini-batch, 32), EPOCHS (1). Needs Open MPI's mpirun (Debian: openmpi-bin).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/debug}
WORK=${WORK:-target/bench-distributed}
NPS=${NPS:-"1 2 4"}
BATCH=${BATCH:-32}
EPOCHS=${EPOCHS:-1}
command -v mpirun >/dev/null || { echo "bench_distributed: mpirun not found (Debian: apt-get install openmpi-bin)" >&2; exit 2; }
for t in im2list im2rec rectrain; do
  [ -x "$BIN/$t" ] || { echo "bench_distributed: $BIN/$t missing: run cargo test --workspace --no-run" >&2; exit 2; }
done
mkdir -p "$WORK"
if [ ! -f "$WORK/fm_train.rec" ]; then
  "$BIN/im2list" --recursive --train-ratio 0.8 "$WORK/fm" data/fashion-mnist >/dev/null 2>&1
  "$BIN/im2rec" --num-thread 2 "$WORK/fm" data/fashion-mnist >/dev/null 2>&1
fi
cores=$(nproc)
echo "rectrain, ResNet-18 3x28x28, $EPOCHS epoch(s) of 960 images, $BATCH images per rank and step, $cores CPU cores, $(date -u +%F)"
printf '%-6s %-13s %-11s %-22s %-13s\n' ranks global_batch img_s gradient_sum_share MB_per_step
for np in $NPS; do
  out=$WORK/out$np
  rm -rf "$out"
  threads=$(( cores / np )); [ "$threads" -ge 1 ] || threads=1
  args=(--train "$WORK/fm_train.rec" --validation "$WORK/fm_val.rec" --out "$out" --num-layers 18
    --image-shape 3,28,28 --epochs "$EPOCHS" --mini-batch-size "$BATCH" --optimizer adam
    --learning-rate 0.001 --device cpu --workers 1 --seed 1)
  if [ "$np" = 1 ]; then
    OMP_NUM_THREADS=$threads "$BIN/rectrain" "${args[@]}" >"$WORK/np$np.jsonl" 2>"$WORK/np$np.log"
  else
    mpirun --allow-run-as-root --oversubscribe --bind-to none --mca btl self,tcp \
      --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo -x OMP_NUM_THREADS="$threads" \
      -x RAYON_NUM_THREADS="$threads" -np "$np" "$BIN/rectrain" "${args[@]}" \
      </dev/null >"$WORK/np$np.jsonl" 2>"$WORK/np$np.log"
  fi
  python3 - "$np" "$BATCH" "$WORK/np$np.jsonl" "$WORK/np$np.log" <<'PY'
import json, re, sys
np_, batch, jsonl, log = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
epochs = [json.loads(l) for l in open(jsonl) if l.strip()]
img_s = sum(e["images_per_second"] for e in epochs) / len(epochs)
share, mb = "-", "-"
for line in open(log):
    m = re.search(r"Rank 0 epoch \d+: .* \((\d+)%\), ([\d.]+) MB per step", line)
    if m and not line.startswith("[rank"):
        share, mb = m.group(1) + "%", m.group(2)
print(f"{np_:<6} {np_ * batch:<13} {img_s:<11.1f} {share:<22} {mb:<13}")
PY
done
echo "(logs and epoch lines in $WORK/np*.log, np*.jsonl)"
