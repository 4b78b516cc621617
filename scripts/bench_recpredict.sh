#!/usr/bin/env bash
# Benchmark recpredict: images/s and where the time goes (decode+preprocess vs the
# model), from recpredict's own `--timings` breakdown on stderr.
#
#   scripts/bench_recpredict.sh            CPU runs (this machine)
#   scripts/bench_recpredict.sh --gpu      GPU runs (the GPU machine; binaries prebuilt)
#
# CPU (default): builds the four tools in the dev profile the tests use (optimised
# dependencies; never --release for burn crates on the shared machine), trains a
# throwaway model for one short epoch (the weights do not matter for speed; ResNet's
# adaptive pooling lets the same weights run at any input size, so the 224×224
# variants are the same weights with another image_shape in config.json), then runs:
#   A. 1,200 Fashion-MNIST PNGs (28×28, data/fashion-mnist), ResNet-18 at 3×32×32
#   B. $N synthetic 500×375 JPEGs, ResNet-18 at 3×224×224 (decode-heavy photos)
#   C. the same JPEGs, ResNet-50 at 3×224×224
#   D. B with --squash (SageMaker endpoint's resize instead of resize+crop)
#   E. B with one decoding thread (how much the worker pool hides decoding)
# GPU (--gpu): expects the binaries in $BIN (default target/debug; build them here,
# strip and carry them: no Rust toolchain there) and CUDA libraries; runs B and C
# bigger with --device cuda at float32 and bfloat16, and PyTorch's ResNet-50
# inference from shared/bench/torch_baseline.py in the same run for the ratio.
#
# Environment: N (JPEG count, default 96 CPU / 2048 GPU), BIN, WORK (scratch dir,
# default scripts/work/bench_recpredict), PY (a python with Pillow; default: python3
# if it has PIL, else the MXNet venv from scripts/mxnet_venv.sh).
# Every run is wrapped in `timeout`; logs go to $WORK/logs; a table is printed last.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
mode=cpu
[[ "${1:-}" == "--gpu" ]] && mode=gpu
WORK=${WORK:-$repo/scripts/work/bench_recpredict}
BIN=${BIN:-$repo/target/debug}
mkdir -p "$WORK/logs"
results="$WORK/logs/results.txt"
: >"$results"

log() { echo "bench_recpredict: $*" >&2; }

if [[ -z "${PY:-}" ]]; then
  if python3 -c 'import PIL' 2>/dev/null; then PY=python3; else PY=$("$here/mxnet_venv.sh"); fi
fi

if [[ $mode == cpu && -z "${NO_BUILD:-}" ]]; then
  log "building (dev profile)"
  (cd "$repo" && cargo build -q -p im2list -p im2rec -p rectrain -p recpredict)
fi
for t in im2list im2rec rectrain recpredict; do
  [[ -x "$BIN/$t" ]] || { log "missing $BIN/$t"; exit 2; }
done

# --- data -------------------------------------------------------------------------
if [[ $mode == cpu ]]; then N=${N:-96}; else N=${N:-2048}; fi
jpegs="$WORK/jpeg$N"
if [[ ! -d "$jpegs" ]]; then
  log "writing $N synthetic 500x375 JPEGs to $jpegs"
  "$PY" - "$jpegs" "$N" <<'EOF'
import os, sys, random
from PIL import Image, ImageDraw
out, n = sys.argv[1], int(sys.argv[2])
tmp = out + ".tmp"
for c in range(4):
    os.makedirs(os.path.join(tmp, f"c{c}"), exist_ok=True)
rng = random.Random(1)
for i in range(n):
    img = Image.effect_noise((500, 375), 40).convert("RGB")
    d = ImageDraw.Draw(img)
    for _ in range(12):
        x, y = rng.randrange(500), rng.randrange(375)
        d.ellipse([x, y, x + rng.randrange(20, 160), y + rng.randrange(20, 160)],
                  fill=tuple(rng.randrange(256) for _ in range(3)))
    img.save(os.path.join(tmp, f"c{i % 4}", f"{i:05d}.jpg"), quality=90)
os.rename(tmp, out)
EOF
fi

# --- a throwaway model ------------------------------------------------------------
# Trained for one epoch on 64 Fashion-MNIST images at 32×32 (seconds on the CPU).
make_model() { # layers out_dir
  local layers=$1 out=$2
  [[ -f "$out/config.json" ]] && return 0
  local d="$WORK/train$layers"
  rm -rf "$d" && mkdir -p "$d/img"
  for c in "$repo"/data/fashion-mnist/*/; do
    name=$(basename "$c"); mkdir -p "$d/img/$name"
    ls "$c" | head -7 | while read -r f; do cp "$c/$f" "$d/img/$name/"; done
  done
  "$BIN/im2list" --recursive "$d/fm" "$d/img" 2>"$WORK/logs/im2list$layers.log"
  "$BIN/im2rec" "$d/fm" "$d/img" 2>"$WORK/logs/im2rec$layers.log"
  log "training a throwaway ResNet-$layers (1 epoch, CPU)"
  timeout 900 "$BIN/rectrain" --train "$d/fm.rec" --validation "$d/fm.rec" --out "$out" \
    --num-layers "$layers" --image-shape 3,32,32 --epochs 1 --mini-batch-size 16 \
    --device cpu >"$WORK/logs/rectrain$layers.jsonl" 2>"$WORK/logs/rectrain$layers.log"
}
reshape() { # src dst size: the same weights with image_shape 3×size×size
  local src=$1 dst=$2 size=$3
  rm -rf "$dst" && cp -r "$src" "$dst"
  "$PY" - "$dst/config.json" "$size" <<'EOF'
import json, sys
p, s = sys.argv[1], int(sys.argv[2])
c = json.load(open(p))
c["image_shape"] = [3, s, s]
c["resize"] = s * 256 // 224
json.dump(c, open(p, "w"), indent=2)
EOF
}

models="$WORK/models"
mkdir -p "$models"
make_model 18 "$models/r18_32"
reshape "$models/r18_32" "$models/r18_224" 224
if [[ -n "${SKIP_R50:-}" ]]; then :; else
  make_model 50 "$models/r50_32"
  reshape "$models/r50_32" "$models/r50_224" 224
fi

# --- runs -------------------------------------------------------------------------
bench() { # name model device extra-args... -- inputs...
  local name=$1 model=$2 device=$3; shift 3
  local args=() ; while [[ $1 != -- ]]; do args+=("$1"); shift; done; shift
  log "run $name"
  local t0=$(date +%s.%N)
  if timeout "${RUN_TIMEOUT:-900}" "$BIN/recpredict" -m "$model" --device "$device" --timings \
      "${args[@]}" "$@" >"$WORK/logs/$name.jsonl" 2>"$WORK/logs/$name.log"; then :; else
    log "$name failed (exit $?), see $WORK/logs/$name.log"; echo "$name FAILED" >>"$results"; return 0
  fi
  local t1=$(date +%s.%N)
  local lines=$(wc -l <"$WORK/logs/$name.jsonl")
  local total=$(grep -o 'images in [0-9.]* s = [0-9.]* images/s' "$WORK/logs/$name.log" | head -1)
  local dec=$(grep -o 'decode+preprocess.*' "$WORK/logs/$name.log" | sed 's/decode+preprocess *//')
  local mod=$(grep -o 'model (forward).*' "$WORK/logs/$name.log" | sed 's/model (forward) *//')
  local wait=$(grep -o 'waiting for decoding.*' "$WORK/logs/$name.log" | sed 's/waiting for decoding *//')
  printf '%-26s %5s lines | %s | process %.1f s\n    decode+preprocess: %s\n    model: %s | model waited for decoding: %s\n' \
    "$name" "$lines" "$total" "$(awk "BEGIN{print $t1 - $t0}")" "$dec" "$mod" "$wait" >>"$results"
}

if [[ $mode == cpu ]]; then
  nproc_=$(nproc)
  bench A_fmnist_r18_32 "$models/r18_32" cpu --batch-size 32 -- "$repo/data/fashion-mnist"
  bench B_jpeg_r18_224 "$models/r18_224" cpu --batch-size 16 -- "$jpegs"
  [[ -d "$models/r50_224" ]] && bench C_jpeg_r50_224 "$models/r50_224" cpu --batch-size 16 -- "$jpegs"
  bench D_jpeg_r18_224_squash "$models/r18_224" cpu --batch-size 16 --squash -- "$jpegs"
  bench E_jpeg_r18_224_1thread "$models/r18_224" cpu --batch-size 16 --workers 1 -- "$jpegs"
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)" >>"$results"
else
  export LD_LIBRARY_PATH=/usr/local/cuda/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >>"$results" || true
  # A short warm-up run first: kernel compilation (NVRTC) and autotuning happen on
  # the first batches and would otherwise be counted.
  bench G0_warmup_r18 "$models/r18_224" cuda --batch-size 64 -- "$jpegs/c0"
  for prec in float32 bfloat16; do
    bench "G_jpeg_r18_224_b128_$prec" "$models/r18_224" cuda --batch-size 128 --precision-dtype $prec -- "$jpegs"
    [[ -d "$models/r50_224" ]] && bench "G_jpeg_r50_224_b128_$prec" "$models/r50_224" cuda --batch-size 128 --precision-dtype $prec -- "$jpegs"
  done
  log "PyTorch ResNet-50 inference (as shared/bench/torch_baseline.py)"
  timeout 600 python3 - >>"$results" 2>"$WORK/logs/torch.log" <<'EOF' || echo "torch baseline FAILED" >>"$results"
import time, torch, torchvision
torch.backends.cudnn.benchmark = True
def infer(name, batch, amp, steps=30, warm=5):
    m = getattr(torchvision.models, name)(num_classes=1000).to("cuda").eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    with torch.inference_mode():
        for i in range(warm + steps):
            if i == warm: torch.cuda.synchronize(); t = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp): m(x)
    torch.cuda.synchronize(); dt = time.perf_counter() - t
    print(f"torch infer {name} b{batch} amp={amp}: {batch*steps/dt:.0f} img/s (synthetic tensors, no decoding)", flush=True)
for name in ("resnet18", "resnet50"):
    infer(name, 128, False); infer(name, 128, True)
EOF
fi

echo
echo "== recpredict benchmark ($mode) =="
cat "$results"
