#!/usr/bin/env bash
# GPU checks for rectrain's burn/CUDA path, to run on the GPU machine (no Rust, no network).
#
# Prepare on the build machine (dev profile; dependencies are optimised there anyway):
#   cargo build -p rectrain --example gpu_probe --features gpu-probe
#   mkdir -p gpu-bin && strip -o gpu-bin/gpu_probe target/debug/examples/gpu_probe
#   cp /work/shared/bench/torch_baseline.py gpu-bin/      # the PyTorch anchor
# then carry gpu-bin/ (about 50 MB stripped) and run:  bash scripts/gpu_check.sh
#
# Each run is wrapped in `timeout`; the probe prints one line per step after a device
# sync, so a killed run still shows how far it got (first steps include NVRTC kernel
# compilation and autotuning). Logs go to $LOGDIR (default gpu-logs/, or $OUT/gpu-logs
# when $OUT is set); the last thing printed is a table. Total worst case ≈ 9.5 minutes;
# set RUNS to a subset (e.g. RUNS="cold warm torch") to shorten.
#
# Environment: GPU_PROBE (binary, default gpu-bin/gpu_probe), TORCH_BASELINE (script),
# LOGDIR, RUNS, RECTRAIN_CACHE_DIR (kernel cache; default $LOGDIR/cubecl-cache, emptied
# first so that "cold" really is cold and "warm" measures the cache).
set -u

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
GPU_PROBE=${GPU_PROBE:-gpu-bin/gpu_probe}
LOGDIR=${LOGDIR:-${OUT:+$OUT/}gpu-logs}
RUNS=${RUNS:-"cold warm r18b256bf16 r50b128 r50infer torch"}
mkdir -p "$LOGDIR"
export LD_LIBRARY_PATH=/usr/local/cuda/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
export RECTRAIN_CACHE_DIR=${RECTRAIN_CACHE_DIR:-$LOGDIR/cubecl-cache}
export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-minimal}
rm -rf "$RECTRAIN_CACHE_DIR"

TORCH_BASELINE=${TORCH_BASELINE:-}
for c in gpu-bin/torch_baseline.py shared/bench/torch_baseline.py ../shared/bench/torch_baseline.py /work/shared/bench/torch_baseline.py; do
  [ -z "$TORCH_BASELINE" ] && [ -f "$c" ] && TORCH_BASELINE=$c
done

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  echo "probe: $GPU_PROBE  cache: $RECTRAIN_CACHE_DIR  autotune: $CUBECL_AUTOTUNE_LEVEL"
} | tee "$LOGDIR/env.txt"

declare -a ROWS
row() { ROWS+=("$(printf '%-14s %-40s %-8s %s' "$1" "$2" "$3" "$4")"); }

probe() { # name timeout_s args...
  local name=$1 t=$2; shift 2
  local log="$LOGDIR/$name.log"
  if [ ! -x "$GPU_PROBE" ]; then row "$name" "$*" "missing" "no $GPU_PROBE"; return; fi
  local start=$SECONDS
  timeout "$t" "$GPU_PROBE" "$@" >"$log" 2>"$LOGDIR/$name.err"
  local rc=$? wall=$((SECONDS - start))
  local result
  result=$(grep '^RESULT' "$log" | tail -1)
  if [ -n "$result" ]; then
    local img first
    img=$(sed -n 's/.*img_s=\([^ ]*\).*/\1/p' <<<"$result")
    first=$(sed -n 's/.*first_step_s=\([^ ]*\).*/\1/p' <<<"$result")
    row "$name" "$*" "ok ${wall}s" "${img} img/s (first step ${first}s)"
  else
    local last steps
    steps=$(grep -c '^step=' "$log")
    last=$(grep '^step=' "$log" | tail -1)
    if [ "$rc" = 124 ]; then
      row "$name" "$*" "TIMEOUT" "${t}s: $steps steps done ${last:+(last: $last)}"
    else
      row "$name" "$*" "rc=$rc" "$(tail -1 "$LOGDIR/$name.err" | cut -c1-90)"
    fi
  fi
  echo "== $name: ${ROWS[-1]}"
}

for r in $RUNS; do
  case $r in
    cold)        probe cold 170 --device cuda:0 --depth 18 --batch 64 --steps 6 ;;
    warm)        probe warm 70 --device cuda:0 --depth 18 --batch 64 --steps 6 ;;
    r18b256)     probe r18b256 90 --device cuda:0 --depth 18 --batch 256 --steps 8 ;;
    r18b256bf16) probe r18b256bf16 100 --device cuda:0 --precision bfloat16 --depth 18 --batch 256 --steps 8 ;;
    r50b128)     probe r50b128 100 --device cuda:0 --depth 50 --batch 128 --steps 6 ;;
    r50infer)    probe r50infer 60 --device cuda:0 --depth 50 --batch 256 --steps 10 --mode infer ;;
    torch)
      if [ -n "$TORCH_BASELINE" ]; then
        start=$SECONDS
        timeout 150 python3 "$TORCH_BASELINE" >"$LOGDIR/torch.log" 2>"$LOGDIR/torch.err"
        rc=$?
        while read -r line; do row "torch" "${line%%:*}" "rc=$rc" "${line#*: }"; done < <(grep '^torch ' "$LOGDIR/torch.log")
        [ "$rc" != 0 ] && row "torch" "torch_baseline.py" "rc=$rc" "$((SECONDS - start))s, see torch.err"
      else
        row "torch" "torch_baseline.py" "missing" "set TORCH_BASELINE"
      fi ;;
    *) row "$r" "-" "unknown" "no such run" ;;
  esac
done

du -sh "$RECTRAIN_CACHE_DIR" 2>/dev/null | sed 's/^/kernel cache: /'
echo
printf '%-14s %-40s %-8s %s\n' run args status result
for r in "${ROWS[@]}"; do echo "$r"; done | tee "$LOGDIR/table.txt"
