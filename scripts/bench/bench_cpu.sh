#!/usr/bin/env bash
# CPU training and inference speed against PyTorch eager on the same machine, in one call: ResNet-18/50
# synthetic training steps (forward, cross-entropy, backward, SGD with momentum) and inference forwards,
# with rectrain's `gpu_probe --device cpu` and the same work in PyTorch (torchvision's ResNets; oneDNN
# inside). Prints one table with the median img/s of each side and the ratio ours/PyTorch, plus our
# figure on burn-flex's kernels (RECTRAIN_NO_ONEDNN=1) for reference.
#
#   bash scripts/bench/bench_cpu.sh                    # every case, 3 rounds
#   ROUNDS=5 CASES="train 18 16 224 6" bash scripts/bench/bench_cpu.sh
#
# PyTorch: TORCH_PY names a python with torch + torchvision; without it this script installs them
# into scripts/.venv-torch with pip (about 5.4 GB, once) and says so. The probe is built in the dev
# profile (the test suite's build: dependencies at opt-level 3) unless PROFILE=release. Each round
# runs both sides of a case back to back, so that drifts in the machine's speed hit both; the median
# over rounds is reported. Needs oneDNN (libdnnl2) for our CPU kernels; without it the table shows
# burn-flex's figures in both of our columns. PROBE=path times that gpu_probe binary instead of building one.
set -u
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
PROFILE=${PROFILE:-dev}
CASES=${CASES:-"train 18 16 224 6
train 18 64 28 8
train 50 8 224 5
infer 18 32 224 6
infer 18 64 28 8
infer 50 16 224 5"}

if [ -z "${TORCH_PY:-}" ]; then
  TORCH_PY=scripts/.venv-torch/bin/python
  if ! "$TORCH_PY" -c 'import torch, torchvision' 2>/dev/null; then
    echo "bench_cpu: installing PyTorch (torch, torchvision) into scripts/.venv-torch with pip (~5.4 GB)" >&2
    python3 -m venv scripts/.venv-torch && scripts/.venv-torch/bin/pip install -q torch torchvision >&2 ||
      { echo "bench_cpu: PyTorch could not be installed" >&2; exit 2; }
  fi
fi

if [ -n "${PROBE:-}" ]; then
  P=$PROBE # a gpu_probe built elsewhere (e.g. an earlier commit's, for A/B runs): no build
elif [ "$PROFILE" = release ]; then
  cargo build --release -p rectrain --example gpu_probe --features gpu-probe -q || exit 2
  P=target/release/examples/gpu_probe
else
  cargo test --workspace --no-run --features rectrain/gpu-probe -q 2>/dev/null || exit 2
  P=target/debug/examples/gpu_probe
fi

ours() { # env mode depth batch size steps
  local e=$1; shift
  env $e "$P" --device cpu --mode "$1" --depth "$2" --batch "$3" --size "$4" --steps "$5" --classes 1000 2>/dev/null |
    sed -n 's/^RESULT .* img_s=\([0-9.]*\).*/\1/p'
}
torch() { # mode depth batch size steps
  "$TORCH_PY" - "$@" <<'PYEOF'
import os, sys, time, torch, torchvision
mode, depth, batch, size, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(os.cpu_count())
m = getattr(torchvision.models, f"resnet{depth}")(num_classes=1000)
x = torch.randn(batch, 3, size, size); y = torch.arange(batch) % 1000
ts = []
if mode == "train":
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9); lf = torch.nn.CrossEntropyLoss()
    for _ in range(steps):
        t = time.perf_counter(); loss = lf(m(x), y); opt.zero_grad(); loss.backward(); opt.step()
        ts.append(time.perf_counter() - t)
else:
    m.eval()
    with torch.inference_mode():
        for _ in range(steps):
            t = time.perf_counter(); m(x); ts.append(time.perf_counter() - t)
ts = ts[2:] if len(ts) > 3 else ts[1:]  # as gpu_probe: the steady state after the first steps
print(f"{batch * len(ts) / sum(ts):.2f}")
PYEOF
}
median() { tr ' ' '\n' | grep -E '^[0-9.]+$' | sort -g | awk '{v[NR]=$1} END {if (NR) print (NR % 2 ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2)}'; }

echo "bench_cpu: $(date -u +%Y-%m-%d), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores," \
  "torch $("$TORCH_PY" -c 'import torch; print(torch.__version__)'), $ROUNDS rounds, probe $P"
printf '%-22s %11s %11s %7s %14s\n' case torch_img_s ours_img_s ratio ours_burn_flex
while read -r mode depth batch size steps; do
  [ -n "$mode" ] || continue
  t=() o=() f=()
  for _ in $(seq "$ROUNDS"); do
    t+=("$(torch "$mode" "$depth" "$batch" "$size" "$steps")")
    o+=("$(ours X=1 "$mode" "$depth" "$batch" "$size" "$steps")")
  done
  f+=("$(ours RECTRAIN_NO_ONEDNN=1 "$mode" "$depth" "$batch" "$size" "$steps")")
  tm=$(echo "${t[*]}" | median) om=$(echo "${o[*]}" | median) fm=$(echo "${f[*]}" | median)
  ratio=$(awk -v a="${om:-0}" -v b="${tm:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "?" }')
  printf '%-22s %11s %11s %7s %14s\n' "$mode r$depth b$batch ${size}px" "${tm:-fail}" "${om:-fail}" "$ratio" "${fm:-fail}"
done <<<"$CASES"
