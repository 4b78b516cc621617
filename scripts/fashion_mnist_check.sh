#!/usr/bin/env bash
# rectrain on real data, on the CPU: Fashion-MNIST (Debian's dataset-fashion-mnist)
# through the whole chain  PNG class folders → im2list → im2rec → rectrain.
#
#  1. ResNet-18 at 32×32 on 2,000 training / 500 validation images (10 classes):
#     prints the validation accuracy of every epoch.
#  2. Transfer learning: train on classes 0–4, then fine-tune on classes 5–9 with
#     --pretrained (the first model's weights, head re-initialised) against the same
#     run from scratch; prints both accuracies.
#
# Usage: scripts/fashion_mnist_check.sh [WORK_DIR]     (default: target/fashion-mnist-check)
# Knobs (environment): EPOCHS (3), TL_EPOCHS (3), TRAIN_PER_CLASS (200), VAL_PER_CLASS (50),
#   TL_TRAIN_PER_CLASS (60), BATCH (32), WORKERS (2), BIN_DIR (use these binaries, skip the build).
# Takes about 10–20 minutes on 2 CPU cores. Builds the tools in the dev profile (which
# optimises dependencies); never --release, to share the workspace's one burn build.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
work=${1:-$repo/target/fashion-mnist-check}
EPOCHS=${EPOCHS:-3}
TL_EPOCHS=${TL_EPOCHS:-3}
TRAIN_PER_CLASS=${TRAIN_PER_CLASS:-200}
VAL_PER_CLASS=${VAL_PER_CLASS:-50}
TL_TRAIN_PER_CLASS=${TL_TRAIN_PER_CLASS:-60}
BATCH=${BATCH:-32}
WORKERS=${WORKERS:-2}
src=/usr/share/datasets/fashion-mnist

if [ ! -f "$src/train-images-idx3-ubyte.gz" ]; then
  echo "installing dataset-fashion-mnist" >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo=sudo; fi
  $sudo apt-get install -y dataset-fashion-mnist >&2 || {
    $sudo apt-get update >&2 && $sudo apt-get install -y dataset-fashion-mnist >&2
  }
fi

python=python3
if [ -x "$here/.venv-mxnet/bin/python" ]; then python=$here/.venv-mxnet/bin/python; fi

if [ -n "${BIN_DIR:-}" ]; then
  bin=$BIN_DIR   # already built binaries (e.g. copied aside while others rebuild)
else
  echo "building im2list, im2rec, rectrain (dev profile)" >&2
  (cd "$repo" && cargo build -q -p im2list -p im2rec -p rectrain)
  bin=$repo/target/debug
fi

rm -rf "$work"
mkdir -p "$work"
convert() { "$python" "$here/fashion_mnist_to_folders.py" "$@" >&2; }
# Disjoint subsets: validation comes from the t10k file.
convert "$work/img/train" --split train --per-class "$TRAIN_PER_CLASS"
convert "$work/img/val" --split t10k --per-class "$VAL_PER_CLASS"
convert "$work/img/a_train" --split train --per-class "$TRAIN_PER_CLASS" --classes 0,1,2,3,4
convert "$work/img/a_val" --split t10k --per-class "$VAL_PER_CLASS" --classes 0,1,2,3,4
convert "$work/img/b_train" --split train --per-class "$TL_TRAIN_PER_CLASS" \
  --offset "$TRAIN_PER_CLASS" --classes 5,6,7,8,9
convert "$work/img/b_val" --split t10k --per-class "$VAL_PER_CLASS" --classes 5,6,7,8,9

# im2list → im2rec: 28×28 grey PNGs stored as 32×32 JPEG-free PNG records.
pack() { # name
  "$bin/im2list" --recursive "$work/$1" "$work/img/$1" >&2
  "$bin/im2rec" --resize 32 --encoding .png "$work/$1" "$work/img/$1" >&2
}
for s in train val a_train a_val b_train b_val; do pack "$s"; done

common=(--num-layers 18 --image-shape 3,32,32 --mini-batch-size "$BATCH" --device cpu
        --workers "$WORKERS" --seed 1)
accuracies() { # metrics.jsonl → "0.812 0.845 ..."
  "$python" -c 'import json,sys; print(" ".join("%.4f" % json.loads(l)["validation_accuracy"] for l in open(sys.argv[1])))' "$1"
}
best() {
  "$python" -c 'import json,sys; print("%.4f" % max(json.loads(l)["validation_accuracy"] for l in open(sys.argv[1])))' "$1"
}
train() { # out train val epochs [extra...]
  local out=$1 tr=$2 va=$3 ep=$4; shift 4
  local t0=$SECONDS
  "$bin/rectrain" --train "$work/$tr.rec" --validation "$work/$va.rec" --out "$work/$out" \
    "${common[@]}" --epochs "$ep" "$@" >"$work/$out.jsonl" 2>"$work/$out.log"
  echo "$((SECONDS - t0))"
}

echo "== 1. ResNet-18, 32x32, $((TRAIN_PER_CLASS * 10)) train / $((VAL_PER_CLASS * 10)) val, $EPOCHS epochs (sgd, lr 0.05)"
secs=$(train full train val "$EPOCHS" --learning-rate 0.05)
grep -E "Epoch\[[0-9]+\] (Train-accuracy|Validation-accuracy|Time cost)" "$work/full.log" | sed 's/^\[[^]]*\] //'
echo "validation accuracy per epoch: $(accuracies "$work/full/metrics.jsonl")  (${secs}s)"

echo "== 2. transfer learning: classes 0-4 -> classes 5-9 ($((TL_TRAIN_PER_CLASS * 5)) train images, $TL_EPOCHS epochs, adam lr 0.001)"
secs_a=$(train tl_a a_train a_val "$EPOCHS" --learning-rate 0.05)
echo "source model (classes 0-4): validation accuracy per epoch $(accuracies "$work/tl_a/metrics.jsonl") (${secs_a}s)"
tl=(--optimizer adam --learning-rate 0.001)
secs_ft=$(train tl_ft b_train b_val "$TL_EPOCHS" "${tl[@]}" --pretrained "$work/tl_a/model.safetensors")
secs_sc=$(train tl_scratch b_train b_val "$TL_EPOCHS" "${tl[@]}")
grep -m1 "Loaded pretrained weights" "$work/tl_ft.log" | sed 's/^\[[^]]*\] //' || true
echo "fine-tuned from classes 0-4: per epoch $(accuracies "$work/tl_ft/metrics.jsonl"), best $(best "$work/tl_ft/metrics.jsonl") (${secs_ft}s)"
echo "from scratch:               per epoch $(accuracies "$work/tl_scratch/metrics.jsonl"), best $(best "$work/tl_scratch/metrics.jsonl") (${secs_sc}s)"
