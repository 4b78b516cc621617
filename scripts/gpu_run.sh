#!/usr/bin/env bash
# One GPU session's checks, run on the GPU machine (no Rust, no network there).
#
# Prepare on the build machine (see README "GPU"): put xz-compressed, stripped binaries in
# gpu-run/bin/ (gpu_probe.xz, rectrain.xz, recpredict.xz: whichever exist), packed data in
# gpu-run/data/ (fm_train.rec, fm_val.rec, fm.classes from the demo dataset), and run
#   bash scripts/gpu_run.sh RUN...
# with RUN names from the case list below. Issue 11's check, in one call (about 9 minutes):
#   BUDGET_S=540 bash scripts/gpu_run.sh parity18 parity50 torch_bench r18_train_f32 r18_train_bf16 \
#     r50_train_f32 r50_train_bf16 r18_infer_f32 r18_infer_bf16 r50_infer_f32 r50_infer_bf16 \
#     r18_train_f32_nocudnn profile t32cold t32cpu t224
# (t32cold vs t32cpu: the demo's validation accuracy on the GPU and the CPU; t224 vs
# r18_train_f32: rectrain on a real .rec against the synthetic speed.) Every run is wrapped in `timeout`; each writes
# its stdout/stderr to $LOGDIR; the kernel caches go to $RECTRAIN_CACHE_DIR (kept between
# runs, so the first run that needs a kernel pays for its compilation and later ones
# do not). The last thing printed is a table.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
LOGDIR=${LOGDIR:-${OUT:+$OUT/}gpu-logs}
BIN=${BIN:-/tmp/gpu-bin}
mkdir -p "$LOGDIR" "$BIN"
export LD_LIBRARY_PATH=/usr/local/cuda/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
export RECTRAIN_CACHE_DIR=${RECTRAIN_CACHE_DIR:-${OUT:-/tmp}/cubecl-cache}
mkdir -p "$RECTRAIN_CACHE_DIR"
for f in gpu-run/bin/*.xz; do
  [ -f "$f" ] && xz -dc "$f" >"$BIN/$(basename "$f" .xz)" && chmod +x "$BIN/$(basename "$f" .xz)"
done
TORCH_BASELINE=${TORCH_BASELINE:-}
for c in shared/bench/torch_baseline.py ../shared/bench/torch_baseline.py gpu-run/torch_baseline.py; do
  [ -z "$TORCH_BASELINE" ] && [ -f "$c" ] && TORCH_BASELINE=$c
done
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  echo "bin: $(ls "$BIN" | tr '\n' ' ') cache: $RECTRAIN_CACHE_DIR autotune: ${CUBECL_AUTOTUNE_LEVEL:-default}"
} | tee "$LOGDIR/env.txt"

declare -a ROWS
row() { ROWS+=("$(printf '%-12s %-9s %s' "$1" "$2" "$3")"); echo "== ${ROWS[-1]}"; }

probe() { # name timeout args...
  local name=$1 t=$2; shift 2
  local log="$LOGDIR/$name.log" start=$SECONDS
  timeout -k 15 "$t" "$BIN/gpu_probe" "$@" >"$log" 2>"$LOGDIR/$name.err"
  local rc=$? wall=$((SECONDS - start)) result steps last
  result=$(grep '^RESULT' "$log" | tail -1)
  steps=$(grep -c '^step=' "$log")
  last=$(grep '^step=' "$log" | head -3 | tr '\n' ' ')
  if [ -n "$result" ]; then
    row "$name" "ok ${wall}s" "$* | ${result#RESULT } | $last"
  elif [ "$rc" = 124 ]; then
    row "$name" "TIMEOUT" "$* | ${t}s, $steps steps | $last"
  else
    row "$name" "rc=$rc" "$* | $(tail -2 "$LOGDIR/$name.err" | tr '\n' ' ' | cut -c1-200)"
  fi
}

tool() { # name timeout binary args...
  local name=$1 t=$2 exe=$3; shift 3
  local start=$SECONDS
  timeout -k 15 "$t" "$BIN/$exe" "$@" >"$LOGDIR/$name.out" 2>"$LOGDIR/$name.err"
  local rc=$? wall=$((SECONDS - start))
  row "$name" "rc=$rc ${wall}s" "$exe: $(grep -E 'Time cost|Validation-accuracy|rror|notice' "$LOGDIR/$name.err" | tail -6 | tr '\n' ' ' | cut -c1-400)"
}

# A deadline for the whole script (seconds from now): every run's timeout is cut to what is left.
DEADLINE=$((SECONDS + ${BUDGET_S:-560}))
left() { local l=$((DEADLINE - SECONDS)); [ "$l" -lt "$1" ] && echo "$l" || echo "$1"; }

D=gpu-run/data
D224=gpu-run/data224
fm() { # data dir, shape
  echo --train "$1/fm_train.rec" --validation "$1/fm_val.rec" --classes "$1/fm.classes" --num-layers 18 \
    --image-shape "$2" --mini-batch-size 64 --learning-rate 0.05 --seed 1
}
# Issue 11's bench: our synthetic training/inference and PyTorch's in the same call.
# bench NAME TIMEOUT DEPTH BATCH MODE PRECISION [env...]: one gpu_probe run, its img/s kept for the ratios.
declare -A OURS
bench() {
  local name=$1 t=$2 depth=$3 batch=$4 mode=$5 prec=$6; shift 6
  local log="$LOGDIR/$name.log" start=$SECONDS
  env "$@" timeout -k 15 "$t" "$BIN/gpu_probe" --device cuda:0 --depth "$depth" --batch "$batch" \
    --size 224 --steps "${BENCH_STEPS:-12}" --mode "$mode" --precision "$prec" >"$log" 2>"$LOGDIR/$name.err"
  local rc=$? result
  result=$(grep '^RESULT' "$log" | tail -1)
  if [ -n "$result" ]; then
    OURS[$name]=$(sed -n 's/.* img_s=\([0-9.]*\).*/\1/p' <<<"$result")
    row "$name" "ok $((SECONDS - start))s" "${result#RESULT }"
  else
    row "$name" "rc=$rc" "$(tail -2 "$LOGDIR/$name.err" | tr '\n' ' ' | cut -c1-200)"
  fi
}
ratios() { # ours/torch for every bench run that has both numbers
  echo
  printf '%-22s %10s %10s %7s\n' "work" "ours img/s" "torch" "ratio"
  local key ours torch
  for key in r18_train_f32:"train resnet18 256 fp32" r18_train_bf16:"train resnet18 256 amp" \
             r50_train_f32:"train resnet50 128 fp32" r50_train_bf16:"train resnet50 128 amp" \
             r18_infer_f32:"infer resnet18 256 fp32" r18_infer_bf16:"infer resnet18 256 amp" \
             r50_infer_f32:"infer resnet50 256 fp32" r50_infer_bf16:"infer resnet50 256 amp" \
             r18_train_f32_nocudnn:"train resnet18 256 fp32"; do
    ours=${OURS[${key%%:*}]:-}
    torch=$(grep "^TORCH ${key#*:} " "$LOGDIR/torch_bench.log" 2>/dev/null | awk '{print $6}')
    [ -n "$ours" ] && printf '%-22s %10s %10s %7s\n' "${key%%:*}" "$ours" "${torch:--}" \
      "$([ -n "$torch" ] && awk -v a="$ours" -v b="$torch" 'BEGIN{printf "%.3f", a/b}' || echo -)"
  done
}

for r in "$@"; do
  [ $((DEADLINE - SECONDS)) -lt 5 ] && { row "$r" "skipped" "no time left"; continue; }
  case $r in
    p32)       probe p32 "$(left 170)" --device cuda:0 --depth 18 --batch 64 --size 32 --steps 8 ;;
    p224)      probe p224 "$(left 90)" --device cuda:0 --depth 18 --batch 256 --size 224 --steps 10 ;;
    p224bf16)  probe p224bf16 "$(left 90)" --device cuda:0 --precision bfloat16 --depth 18 --batch 256 --size 224 --steps 10 ;;
    t32cold)   tool t32cold "$(left 200)" rectrain $(fm $D 3,32,32) --epochs 3 --device cuda --out /tmp/m32 ;;
    t32warm)   tool t32warm "$(left 60)" rectrain $(fm $D 3,32,32) --epochs 2 --device cuda --out /tmp/m32w ;;
    t224)      tool t224 "$(left ${T_224:-120})" rectrain $(fm $D224 3,224,224) --epochs 3 --device cuda --out /tmp/m224 ;;
    t224bf16)  tool t224bf16 "$(left ${T_224B:-90})" rectrain $(fm $D224 3,224,224) --epochs 2 --precision-dtype bfloat16 --device cuda --out /tmp/m224b ;;
    t32dp)     tool t32dp "$(left 90)" rectrain $(fm $D 3,32,32) --epochs 2 --device cuda:0,0 --out /tmp/m32dp ;;
    t32default) tool t32default "$(left 300)" rectrain-default $(fm $D 3,32,32) --epochs 1 --device cuda --out /tmp/m32d ;;
    predict)   tool predict "$(left 60)" recpredict --model /tmp/m32 --device cuda --evaluate --timings --rec $D/fm_val.rec ;;
    bench_predict) # recpredict against PyTorch inference (scripts/bench_recpredict.sh gpu), ratios last
      start=$SECONDS
      RECPREDICT="$BIN/recpredict" TORCH_BASELINE="$TORCH_BASELINE" PY=${PY:-python3} \
        N=${BENCH_N:-1024} RUN_TIMEOUT=${BENCH_RUN_S:-150} TORCH_TIMEOUT=${BENCH_TORCH_S:-240} \
        timeout -k 15 "$(left 480)" bash scripts/bench_recpredict.sh gpu >"$LOGDIR/bench_predict.log" 2>&1
      rc=$?
      row bench_predict "rc=$rc" "$((SECONDS - start))s, whole table in $LOGDIR/bench_predict.log"
      while read -r line; do row bench_predict "" "$line"; done < \
        <(sed -n '/== recpredict \/ PyTorch/,/^(img/p' "$LOGDIR/bench_predict.log" | grep '^resnet') ;;
    torch)
      start=$SECONDS
      timeout "$(left 110)" python3 "$TORCH_BASELINE" >"$LOGDIR/torch.log" 2>"$LOGDIR/torch.err"
      rc=$?
      while read -r line; do row torch "rc=$rc" "$line"; done < <(grep '^torch ' "$LOGDIR/torch.log")
      [ "$rc" != 0 ] && row torch "rc=$rc" "$((SECONDS - start))s $(tail -1 "$LOGDIR/torch.err")" ;;
    parity18)  probe parity18 "$(left 120)" --device cuda:0 --mode parity --depth 18 --batch 8 --size 224 ;;
    parity50)  probe parity50 "$(left 120)" --device cuda:0 --mode parity --depth 50 --batch 4 --size 224 ;;
    r18_train_f32)  bench r18_train_f32 "$(left 90)" 18 256 train float32 ;;
    r18_train_bf16) bench r18_train_bf16 "$(left 90)" 18 256 train bfloat16 ;;
    r50_train_f32)  bench r50_train_f32 "$(left 90)" 50 128 train float32 ;;
    r50_train_bf16) bench r50_train_bf16 "$(left 90)" 50 128 train bfloat16 ;;
    r18_infer_f32)  bench r18_infer_f32 "$(left 60)" 18 256 infer float32 ;;
    r18_infer_bf16) bench r18_infer_bf16 "$(left 60)" 18 256 infer bfloat16 ;;
    r50_infer_f32)  bench r50_infer_f32 "$(left 60)" 50 256 infer float32 ;;
    r50_infer_bf16) bench r50_infer_bf16 "$(left 60)" 50 256 infer bfloat16 ;;
    r18_train_f32_nocudnn) bench r18_train_f32_nocudnn "$(left 90)" 18 256 train float32 RECTRAIN_NO_CUDNN=1 ;;
    profile) # cubecl kernel launches and GPU time per training step (cuDNN's own launches are not in it)
      BENCH_STEPS=4 bench profile "$(left 90)" 18 64 train bfloat16 \
        CUBECL_DEBUG_LOG="$LOGDIR/profile.txt" CUBECL_DEBUG_OPTION=profile
      row profile "" "cubecl launches per step: $(($(grep -c '|' "$LOGDIR/profile.txt" 2>/dev/null || echo 0) / 4)); \
top: $(grep '|' "$LOGDIR/profile.txt" 2>/dev/null | awk -F'|' '{n[$3]++} END{for(k in n) print n[k], k}' | sort -rn | head -4 | tr '\n' ';' | cut -c1-300)" ;;
    t32cpu)    tool t32cpu "$(left 240)" rectrain $(fm $D 3,32,32) --epochs 3 --device cpu --out /tmp/m32cpu ;;
    torch_bench)
      start=$SECONDS
      timeout "$(left 150)" python3 scripts/torch_bench.py >"$LOGDIR/torch_bench.log" 2>"$LOGDIR/torch_bench.err"
      row torch_bench "rc=$? $((SECONDS - start))s" "$(grep -c '^TORCH' "$LOGDIR/torch_bench.log") measurements" ;;
    *) row "$r" "unknown" "no such run" ;;
  esac
done
du -sh "$RECTRAIN_CACHE_DIR" 2>/dev/null | sed 's/^/kernel cache: /'
echo
printf '%-12s %-9s %s\n' run status result
for r in "${ROWS[@]}"; do echo "$r"; done | tee "$LOGDIR/table.txt"
ratios | tee -a "$LOGDIR/table.txt"
