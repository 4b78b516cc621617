#!/usr/bin/env bash
# Benchmark recpredict: images/s and where the time goes (decode+preprocess vs the
# model), from recpredict's own `--timings` breakdown on stderr. Prints a table last.
#
#   scripts/bench/bench_recpredict.sh [cpu]    build, prepare data and models, CPU runs A-E
#   scripts/bench/bench_recpredict.sh prepare  build, prepare data and models only
#   scripts/bench/bench_recpredict.sh gpu      GPU runs (the GPU machine: no cargo, see below)
#   scripts/bench/bench_recpredict.sh one NAME MODEL_DIR DEVICE [recpredict options] -- INPUT...
#                                        one run of $RECPREDICT on any artifact and images
#
# cpu/prepare build the four tools in the dev profile the tests use (optimised
# dependencies; never --release for burn crates on the shared machine), write N
# synthetic 500x375 JPEGs (Pillow), train a throwaway ResNet for one short epoch at
# 3x28x28 (the weights do not matter for speed; ResNet's adaptive pooling lets the same
# weights run at any input size, so the 224x224 models are the same weights with another
# image_shape in config.json), then the CPU runs are:
#   A. the 1,200 Fashion-MNIST PNGs (28x28, data/fashion-mnist), ResNet-18 at 3x28x28
#   B. $N synthetic 500x375 JPEGs, ResNet-18 at 3x224x224 (decode-heavy photos)
#   C. the same JPEGs, ResNet-50 at 3x224x224 (skipped with SKIP_R50=1)
#   D. B with --squash (SageMaker endpoint's resize instead of resize+crop)
#   E. B with one decoding thread (how much the worker pool hides decoding)
#
# gpu needs no Rust toolchain: only $RECPREDICT (default $BIN/recpredict; build it on the
# build machine and strip it: `strip -o recpredict target/debug/recpredict`), a python
# with Pillow (the JPEGs are written there when $WORK/jpeg$N is missing) and models:
# $WORK/models/r18_224 and r50_224 from `prepare`, or, when missing and the python has
# torch + torchvision, randomly initialised torchvision ResNets written as rectrain
# artifacts (the very networks of the PyTorch baseline). It runs recpredict with
# --device cuda at float32 and bfloat16, batch 128, after a warm-up run (kernel
# compilation), then PyTorch's inference on the same networks, batch and precision in
# the same run: torch_baseline.py's own infer() on synthetic tensors (model only; the
# file is $TORCH_BASELINE, else gpu-run/torch_baseline.py as scripts/gpu/gpu_bundle.sh copies it),
# and the same JPEG files decoded with Pillow and torchvision's transforms in a
# DataLoader with one worker per CPU (end to end). It prints the ratios last.
# BENCH_DEVICE=cpu BATCH=16 N=32 PRECISIONS=float32 runs the same comparison on the CPU
# (a dry run of the GPU mode where there is no GPU, with a CPU build of torch).
#
# one: e.g. RECPREDICT=./recpredict scripts/bench/bench_recpredict.sh one r50 model/ cuda \
#        --batch-size 128 -- images/
#
# Environment: N (JPEG count, default 96 cpu / 2048 gpu), BIN (default target/debug),
# RECPREDICT, WORK (scratch dir, default scripts/work/bench_recpredict; $OUT/bench when
# $OUT is set in gpu mode), PY (python with Pillow; default python3 if it has PIL, else
# the MXNet venv from scripts/compat/mxnet_venv.sh), NO_BUILD=1, SKIP_R50=1, RUN_TIMEOUT
# (seconds per run, default 900); gpu mode: BENCH_DEVICE (default cuda), BATCH (128),
# PRECISIONS ("float32 bfloat16"), TORCH_BASELINE, TORCH_TIMEOUT (600). Logs go to
# $WORK/logs.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
mode=${1:-cpu}
[[ $mode == --gpu ]] && mode=gpu
case $mode in cpu | prepare | gpu | one) ;; *) sed -n '2,40p' "$0" >&2; exit 2 ;; esac
[[ $# -gt 0 ]] && shift
if [[ $mode == gpu && -n "${OUT:-}" ]]; then WORK=${WORK:-$OUT/bench}; fi
WORK=${WORK:-$repo/scripts/work/bench_recpredict}
BIN=${BIN:-$repo/target/debug}
RECPREDICT=${RECPREDICT:-$BIN/recpredict}
mkdir -p "$WORK/logs"
results="$WORK/logs/results.tsv"

log() { echo "bench_recpredict: $*" >&2; }

# --- one run and the table -------------------------------------------------------
# results.tsv: name, lines, images/s, loop s, process s, decode wall s, decode thread
# ms/image, model s, model ms/image, waited-for-decoding s, model load s, status
bench() { # name model device [recpredict options] -- inputs...
  local name=$1 model=$2 device=$3
  shift 3
  local args=()
  while [[ $# -gt 0 && $1 != -- ]]; do args+=("$1"); shift; done
  [[ $# -gt 0 ]] && shift
  local out="$WORK/logs/$name.jsonl" err="$WORK/logs/$name.log"
  log "run $name"
  local t0 t1 rc=0
  t0=$(date +%s.%N)
  timeout "${RUN_TIMEOUT:-900}" "$RECPREDICT" -m "$model" --device "$device" --timings \
    "${args[@]}" "$@" >"$out" 2>"$err" || rc=$?
  t1=$(date +%s.%N)
  local lines
  lines=$(wc -l <"$out")
  if ! grep -q 'timings:' "$err"; then
    log "$name failed (exit $rc): $(tail -1 "$err")"
    printf '%s\t%s\t-\t-\t%.1f\t-\t-\t-\t-\t-\t-\texit %s\n' "$name" "$lines" \
      "$(awk "BEGIN{print $t1 - $t0}")" "$rc" >>"$results"
    return 0
  fi
  # recpredict: timings: 96 images in 9.871 s = 9.7 images/s (batch size 16, ...)
  local rate loop dwall dms msec mms wait load
  rate=$(sed -n 's/.*timings: .* = \([0-9.]*\) images\/s.*/\1/p' "$err")
  loop=$(sed -n 's/.*timings: [0-9]* images in \([0-9.]*\) s.*/\1/p' "$err")
  load=$(sed -n 's/.*model load *\([0-9.]*\) s.*/\1/p' "$err")
  dwall=$(sed -n 's/.*decode+preprocess *\([0-9.]*\) s wall.*/\1/p' "$err")
  dms=$(sed -n 's/.*decode+preprocess.*(\([0-9.]*\) ms\/image).*/\1/p' "$err")
  msec=$(sed -n 's/.*model (forward) *\([0-9.]*\) s.*/\1/p' "$err")
  mms=$(sed -n 's/.*model (forward).*(\([0-9.]*\) ms\/image).*/\1/p' "$err")
  wait=$(sed -n 's/.*waiting for decoding *\([0-9.]*\) s.*/\1/p' "$err")
  local status=ok
  [[ $rc != 0 ]] && status="exit $rc"
  printf '%s\t%s\t%s\t%s\t%.1f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$lines" "$rate" \
    "$loop" "$(awk "BEGIN{print $t1 - $t0}")" "$dwall" "$dms" "$msec" "$mms" "$wait" \
    "$load" "$status" >>"$results"
}

table() {
  echo
  echo "== recpredict benchmark ($mode) =="
  {
    printf 'run\tlines\timg/s\tloop_s\tprocess_s\tdecode_wall_s\tdecode_ms/img(thread)\tmodel_s\tmodel_ms/img\twaited_for_decode_s\tload_s\tstatus\n'
    cat "$results"
  } | column -t -s $'\t'
  [[ -f "$WORK/logs/extra.txt" ]] && cat "$WORK/logs/extra.txt"
  echo "(img/s = images / prediction loop wall time, model load excluded; decode = read +"
  echo " decode + preprocess, summed over decoding threads; model = forward incl. transfers)"
}

if [[ $mode == one ]]; then
  [[ $# -ge 4 ]] || { sed -n '2,40p' "$0" >&2; exit 2; }
  [[ -x "$RECPREDICT" ]] || { log "missing $RECPREDICT"; exit 2; }
  : >"$results"
  : >"$WORK/logs/extra.txt"
  bench "$@"
  table
  exit 0
fi

# --- python (for the JPEGs, and torch on the GPU machine) ---------------------------
if [[ -z "${PY:-}" ]]; then
  if python3 -c 'import PIL' 2>/dev/null; then PY=python3; else PY=$("$here/../compat/mxnet_venv.sh"); fi
fi

if [[ $mode != gpu && -z "${NO_BUILD:-}" ]]; then
  log "building (dev profile)"
  (cd "$repo" && cargo build -q -p im2list -p im2rec -p rectrain -p recpredict)
fi
tools=(recpredict)
[[ $mode != gpu ]] && tools=(im2list im2rec rectrain recpredict)
for t in "${tools[@]}"; do
  exe=$BIN/$t
  [[ $t == recpredict ]] && exe=$RECPREDICT
  [[ -x "$exe" ]] || { log "missing $exe"; exit 2; }
done

# --- data ---------------------------------------------------------------------------
if [[ $mode == gpu ]]; then N=${N:-2048}; else N=${N:-96}; fi
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

# --- models -------------------------------------------------------------------------
# A throwaway model: one epoch on 70 Fashion-MNIST images at 28x28 (CPU).
make_model() { # layers out_dir
  local layers=$1 out=$2
  [[ -f "$out/config.json" ]] && return 0
  local d="$WORK/train$layers"
  rm -rf "$d" && mkdir -p "$d/img"
  for c in "$repo"/data/fashion-mnist/*/; do
    local name
    name=$(basename "$c")
    mkdir -p "$d/img/$name"
    find "$c" -maxdepth 1 -name '*.png' | sort | sed -n '1,7p' | xargs -I{} cp {} "$d/img/$name/"
  done
  "$BIN/im2list" --recursive "$d/fm" "$d/img" 2>"$WORK/logs/im2list$layers.log"
  "$BIN/im2rec" "$d/fm" "$d/img" 2>"$WORK/logs/im2rec$layers.log"
  log "training a throwaway ResNet-$layers (1 epoch, CPU)"
  timeout 900 "$BIN/rectrain" --train "$d/fm.rec" --validation "$d/fm.rec" --out "$out" \
    --num-layers "$layers" --image-shape 3,28,28 --epochs 1 --mini-batch-size 16 \
    --device cpu >"$WORK/logs/rectrain$layers.jsonl" 2>"$WORK/logs/rectrain$layers.log"
}
reshape() { # src dst size: the same weights with image_shape 3xSIZExSIZE
  local src=$1 dst=$2 size=$3
  rm -rf "$dst" && mkdir -p "$dst"
  cp "$src/model.safetensors" "$dst/"
  "$PY" - "$src/config.json" "$dst/config.json" "$size" <<'EOF'
import json, sys
src, dst, s = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = json.load(open(src))
c["image_shape"] = [3, s, s]
c["resize"] = s * 256 // 224
json.dump(c, open(dst, "w"), indent=2)
EOF
}
# A randomly initialised torchvision ResNet (4 classes) as a rectrain artifact.
torch_model() { # torchvision_name layers out_dir
  "$PY" - "$1" "$2" "$3" <<'EOF'
import json, os, struct, sys
import torch, torchvision
name, layers, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
torch.manual_seed(0)
sd = getattr(torchvision.models, name)(num_classes=4).eval().state_dict()
header, blobs, off = {}, [], 0
for k, v in sd.items():
    v = v.detach().cpu().contiguous()
    dtype = {torch.float32: "F32", torch.int64: "I64"}[v.dtype]
    b = v.numpy().tobytes()
    header[k] = {"dtype": dtype, "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
    blobs.append(b)
    off += len(b)
h = json.dumps(header, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    for b in blobs:
        f.write(b)
json.dump({"format": "rectrain-model", "format_version": 1, "architecture": "resnet",
           "num_layers": layers, "num_classes": 4, "image_shape": [3, 224, 224], "resize": 256,
           "multi_label": False,
           "normalization": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
           "class_names": None, "hyperparameters": {}, "training": {}},
          open(os.path.join(out, "config.json"), "w"), indent=2)
EOF
}

models="$WORK/models"
mkdir -p "$models"
if [[ $mode == gpu ]]; then
  for m in 18 50; do
    [[ $m == 50 && -n "${SKIP_R50:-}" ]] && continue
    if [[ ! -f "$models/r${m}_224/config.json" ]]; then
      log "writing a random torchvision resnet$m as $models/r${m}_224"
      torch_model "resnet$m" "$m" "$models/r${m}_224" ||
        log "no torch here: prepare $models/r${m}_224 on the build machine"
    fi
  done
else
  make_model 18 "$models/r18_28"
  reshape "$models/r18_28" "$models/r18_224" 224
  if [[ -z "${SKIP_R50:-}" ]]; then
    make_model 50 "$models/r50_28"
    reshape "$models/r50_28" "$models/r50_224" 224
  fi
fi
[[ $mode == prepare ]] && { log "prepared $WORK"; exit 0; }

# --- runs ---------------------------------------------------------------------------
: >"$results"
: >"$WORK/logs/extra.txt"
if [[ $mode == cpu ]]; then
  bench A_fmnist_r18_28 "$models/r18_28" cpu --batch-size 32 -- "$repo/data/fashion-mnist"
  bench B_jpeg_r18_224 "$models/r18_224" cpu --batch-size 16 -- "$jpegs"
  if [[ -d "$models/r50_224" ]]; then
    bench C_jpeg_r50_224 "$models/r50_224" cpu --batch-size 16 -- "$jpegs"
  fi
  bench D_jpeg_r18_224_squash "$models/r18_224" cpu --batch-size 16 --squash -- "$jpegs"
  bench E_jpeg_r18_224_1thread "$models/r18_224" cpu --batch-size 16 --workers 1 -- "$jpegs"
  echo "machine: $(nproc) CPUs,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)" >>"$WORK/logs/extra.txt"
else
  DEV=${BENCH_DEVICE:-cuda}
  BATCH=${BATCH:-128}
  PRECISIONS=${PRECISIONS:-float32 bfloat16}
  [[ $DEV == cuda* ]] && export LD_LIBRARY_PATH=/usr/local/cuda/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader >>"$WORK/logs/extra.txt" 2>/dev/null ||
    echo "device: $DEV (no nvidia-smi)" >>"$WORK/logs/extra.txt"
  workers=$(nproc)
  # A short warm-up first: kernel compilation (NVRTC) and autotuning happen on the
  # first batches and would otherwise be counted.
  bench G0_warmup_r18 "$models/r18_224" "$DEV" --batch-size "$BATCH" -- "$jpegs/c0"
  for prec in $PRECISIONS; do
    for m in 18 50; do
      [[ -d "$models/r${m}_224" ]] || continue
      bench "G_jpeg_r${m}_224_b${BATCH}_$prec" "$models/r${m}_224" "$DEV" --batch-size "$BATCH" \
        --workers "$workers" --precision-dtype "$prec" -- "$jpegs"
    done
  done
  # The PyTorch side: torch_baseline.py's own infer() (synthetic tensors, model only),
  # then the same JPEG files through Pillow + torchvision's transforms (end to end).
  TORCH_BASELINE=${TORCH_BASELINE:-}
  [[ -z "$TORCH_BASELINE" && -f "$repo/gpu-run/torch_baseline.py" ]] && TORCH_BASELINE=$repo/gpu-run/torch_baseline.py
  torch_tsv="$WORK/logs/torch.tsv"
  : >"$torch_tsv"
  log "PyTorch inference on the same networks (${TORCH_BASELINE:-no torch_baseline.py found}; then the same JPEGs)"
  torch_failed() { echo "torch baseline FAILED (see $WORK/logs/torch.log)" >>"$WORK/logs/extra.txt"; }
  timeout "${TORCH_TIMEOUT:-600}" "$PY" - "$jpegs" "$workers" "$DEV" "$BATCH" "${TORCH_BASELINE:-missing}" \
    "$PRECISIONS" "$torch_tsv" >>"$WORK/logs/extra.txt" 2>"$WORK/logs/torch.log" <<'EOF' || torch_failed
import ast, contextlib, glob, io, re, sys, time
import torch, torchvision
from torchvision import transforms
from PIL import Image
jpegs, workers, dev, batch = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
baseline, precisions, tsv = sys.argv[5], sys.argv[6].split(), sys.argv[7]
if dev == "cpu":
    torch.cuda.synchronize = lambda *a, **k: None  # torch_baseline.py syncs CUDA
# torch_baseline.py's infer(), without the runs at its module level
tree = ast.parse(open(baseline).read(), baseline)
tree.body = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.Assign))]
base = {}
exec(compile(tree, baseline, "exec"), base)
base["dev"] = dev
files = sorted(glob.glob(jpegs + "/*/*.jpg"))
tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                         transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
class Files(torch.utils.data.Dataset):
    def __len__(self): return len(files)
    def __getitem__(self, i): return tf(Image.open(files[i]).convert("RGB"))
def end_to_end(m, amp):
    dl = torch.utils.data.DataLoader(Files(), batch_size=batch, num_workers=workers)
    t = time.perf_counter(); n = 0
    for x in dl:
        with torch.autocast(dev.split(":")[0], dtype=torch.bfloat16, enabled=amp):
            m(x.to(dev, non_blocking=True).to(memory_format=torch.channels_last)).float().softmax(1).cpu()
        n += x.shape[0]
    return n / (time.perf_counter() - t)
name = torch.cuda.get_device_name(0) if dev.startswith("cuda") else "cpu"
print(torch.__version__, torchvision.__version__, name, flush=True)
out = open(tsv, "w")
with torch.inference_mode():
    for layers in (18, 50):
        net = f"resnet{layers}"
        for prec in precisions:
            amp = prec == "bfloat16"  # recpredict's bfloat16 <-> autocast bf16; float32 <-> TF32 convs
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                base["infer"](net, batch, amp)
            print(buf.getvalue().strip(), flush=True)
            model_only = float(re.search(r": (\d+) img/s", buf.getvalue()).group(1))
            m = getattr(torchvision.models, net)(num_classes=4).to(dev).eval().to(memory_format=torch.channels_last)
            e = end_to_end(m, amp)
            print(f"torch {net} b{batch} {prec}: {len(files)} JPEGs end to end {e:.0f} img/s", flush=True)
            out.write(f"{layers}\t{prec}\t{model_only:.1f}\t{e:.1f}\n"); out.flush()
EOF
  # Ratios, recpredict over PyTorch, from the same run.
  printf '\n== recpredict / PyTorch (same device, network, batch %s, precision; this run) ==\n' \
    "$BATCH" >>"$WORK/logs/extra.txt"
  {
    printf 'network\tprecision\trecpredict_img/s\ttorch_model_only_img/s\tratio\ttorch_end_to_end_img/s\tratio\n'
    while IFS=$'\t' read -r layers prec model_only e2e; do
      ours=$(awk -F'\t' -v n="G_jpeg_r${layers}_224_b${BATCH}_$prec" '$1 == n { print $3 }' "$results")
      [[ -z "$ours" || $ours == - ]] && ours=0
      awk -v l="$layers" -v p="$prec" -v o="$ours" -v mo="$model_only" -v e="$e2e" 'BEGIN {
        printf "resnet%s\t%s\t%.1f\t%.0f\t%.3fx\t%.0f\t%.3fx\n", l, p, o, mo, o / mo, e, o / e }'
    done <"$torch_tsv"
  } | column -t -s $'\t' >>"$WORK/logs/extra.txt"
fi
table
