#!/usr/bin/env bash
# One GPU session's checks, run on the GPU machine (no Rust, no network there).
#
# Prepare on the build machine: `bash scripts/gpu/gpu_bundle.sh` puts xz-compressed, stripped binaries in
# gpu-run/bin/ (gpu_probe.xz, rectrain.xz, recpredict.xz: whichever exist) and the packed demo data in
# gpu-run/data/ and gpu-run/data224/. Then, with the device tool, carrying gpu-run:
#   bash scripts/gpu/gpu_run.sh              # the default list below, within BUDGET_S (default 420 s)
#   bash scripts/gpu/gpu_run.sh RUN...       # runs named from the case list further down
# The default list is ordered by value, so that a budget cut loses the least useful runs:
#   parity18 torch_bench r18_train_f32 r18_train_bf16 r50_train_f32 r50_train_bf16 r18_infer_f32
#   r18_infer_bf16 r50_infer_f32 r50_infer_bf16 t32cold parity50 r18_train_f32_nocudnn profile t224
# Its timeouts add up to 420 s: one device call may run about 540 s, and 420 s leaves room for a second
# call in the session's 15 minutes of device time. BUDGET_S is a deadline for the whole script: each run's
# timeout is cut to what is left, and the runs after it get a row saying they were skipped.
# (parity: cuDNN against burn's own CUDA kernels; torch_bench and the r*_ runs: our img/s against PyTorch
# eager's from the same call; t32cold: the demo's validation accuracy on the GPU with an empty kernel
# cache; t224 vs r18_train_f32: rectrain on a real .rec against the synthetic speed.)
# t32cpu, the demo's validation accuracy on the CPU (t32cold's baseline), is for the CPU build machine,
# not this one: it would spend minutes of device time on the CPU. See gpu_bundle.sh.
#
# Results: the device tool brings back at most 8 files from $OUT, at most 2 folders down, and shows the
# last 12,000 characters of the output. So every log goes to a folder under /tmp ($LOGDIR), packed at the
# end into ONE $OUT/gpu-logs.tar.xz, with $OUT/summary.txt beside it (without $OUT the logs stay in
# $LOGDIR, printed last). The kernel cache stays in /tmp ($RECTRAIN_CACHE_DIR, kept between runs, so only
# the first run that needs a kernel compiles it), never under $OUT. The summary printed last holds what a
# reader needs: the table, the ratios to PyTorch, the worst PARITY lines, each bench's step times and which
# libcudnn was loaded.
#
# Every run is wrapped in `timeout`, and every case runs in a subshell: a failing, hanging or missing
# binary, no GPU, or even a bug in one case is a row in the table, and the loop goes on. No `set -e`
# (exit codes are looked at), and numbers read from logs are checked before any arithmetic.
#
# Knobs (scripts/gpu/test_gpu_run.sh uses most of them): BIN (where the binaries are unpacked), GPU_RUN_DIR
# (the bundle, default gpu-run), LOGDIR, BUDGET_S, T_<run> (one run's timeout, e.g. T_t224=120), T_MAX
# (caps every run's timeout), KILL_S (SIGKILL this long after SIGTERM), BENCH_STEPS, PY (the python
# with torch), TORCH_BENCH (default scripts/gpu/torch_bench.py), TORCH_VENV (default /opt/torch/.venv).
set -u
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
export LC_ALL=C # byte-wise greps and sorts, whatever the machine's locale

# int VALUE DEFAULT: VALUE if it is a plain non-negative integer, else DEFAULT. Every number that comes
# from the environment or a log goes through it: bash arithmetic on an empty or garbage value stops the
# script (or evaluates the garbage).
int() { case $1 in '' | *[!0-9]*) echo "$2" ;; *) echo "$((10#$1))" ;; esac; }
# count PATTERN FILE: lines matching (extended regex); 0 when none or no file. `grep -c || echo 0`
# prints "0" twice when nothing matches (grep prints 0 and fails), which broke the arithmetic.
count() { local n; n=$(grep -acE -- "$1" "$2" 2>/dev/null); int "$n" 0; }

START=$SECONDS
BUDGET_S=$(int "${BUDGET_S:-}" 420)
DEADLINE=$((SECONDS + BUDGET_S))
MIN_S=$(int "${MIN_S:-}" 5) # a run with less time than this left is skipped
KILL_S=$(int "${KILL_S:-}" 15)
[ "$KILL_S" -ge 1 ] || KILL_S=1
GPU_RUN_DIR=${GPU_RUN_DIR:-gpu-run}
BIN=${BIN:-/tmp/gpu-bin}
PY=${PY:-python3}
TORCH_BENCH=${TORCH_BENCH:-scripts/gpu/torch_bench.py}
TORCH_VENV=${TORCH_VENV:-/opt/torch/.venv}
OUT=${OUT:-}
# A fresh folder per call: a warm machine keeps /tmp between calls, and old logs must not mix in.
LOGDIR=${LOGDIR:-$(mktemp -d /tmp/gpu-run.XXXXXX)/gpu-logs}
mkdir -p "$LOGDIR" "$BIN" ${OUT:+"$OUT"}
LOGDIR=$(cd "$LOGDIR" && pwd) # absolute: the runs' env and the packing refer to it
: >"$LOGDIR/rows.txt"
: >"$LOGDIR/ours.txt"
export RECTRAIN_CACHE_DIR=${RECTRAIN_CACHE_DIR:-/tmp/cubecl-cache}
case $RECTRAIN_CACHE_DIR in "$OUT"/* | "$OUT") [ -n "$OUT" ] && RECTRAIN_CACHE_DIR=/tmp/cubecl-cache ;; esac
mkdir -p "$RECTRAIN_CACHE_DIR"

for f in "$GPU_RUN_DIR"/bin/*.xz; do
  [ -f "$f" ] || continue
  b=$BIN/$(basename "$f" .xz)
  { xz -dc "$f" >"$b" && chmod +x "$b"; } || echo "gpu_run: cannot unpack $f" >&2
done
# PyTorch's reference script: $TORCH_BASELINE, else the copy gpu_bundle.sh made from its TORCH_BASELINE.
TORCH_BASELINE=${TORCH_BASELINE:-}
[ -z "$TORCH_BASELINE" ] && [ -f "$GPU_RUN_DIR/torch_baseline.py" ] && TORCH_BASELINE=$GPU_RUN_DIR/torch_baseline.py

# Libraries. cudarc dlopens `libcudnn.so.9` by name: the system-wide cuDNN 9 (found by ldconfig) when
# there is one, else the PyTorch venv's copy, which only LD_LIBRARY_PATH makes visible.
export LD_LIBRARY_PATH=/usr/local/cuda/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
ldconfig_p() { ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null; }
ldconfig_p | grep libcudnn >"$LOGDIR/ldconfig-cudnn.txt"
venv_lib=
if grep -q 'libcudnn\.so\.9 ' "$LOGDIR/ldconfig-cudnn.txt"; then
  CUDNN_NOTE="libcudnn.so.9 system-wide (ldconfig)"
else
  for d in "$TORCH_VENV"/lib/python3*/site-packages/nvidia/cudnn/lib; do
    [ -e "$d/libcudnn.so.9" ] && venv_lib=$d
  done
  if [ -z "$venv_lib" ]; then # torch's python knows where its nvidia-cudnn wheel is
    d=$(timeout 60 "$PY" -c 'import nvidia.cudnn as m, os
print(os.path.dirname(m.__file__) if m.__file__ else list(m.__path__)[0])' 2>/dev/null | tail -1)
    [ -n "$d" ] && [ -e "$d/lib/libcudnn.so.9" ] && venv_lib=$d/lib
  fi
  if [ -n "$venv_lib" ]; then
    export LD_LIBRARY_PATH=$venv_lib:$LD_LIBRARY_PATH
    CUDNN_NOTE="no libcudnn.so.9 in ldconfig; the PyTorch venv's on LD_LIBRARY_PATH: $venv_lib"
  else
    CUDNN_NOTE="no libcudnn.so.9 in ldconfig nor in a PyTorch venv: the runs fall back to burn's kernels"
  fi
fi
cudnn_candidates() {
  ls -l /lib/x86_64-linux-gnu/libcudnn.so* /usr/lib/x86_64-linux-gnu/libcudnn.so* \
    "$TORCH_VENV"/lib/python3*/site-packages/nvidia/cudnn/lib/libcudnn.so* ${venv_lib:+"$venv_lib"/libcudnn.so*} \
    2>/dev/null | sort -u -k9
}

{
  date -u
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -4
  else
    echo "no nvidia-smi: no GPU driver here"
  fi
  echo "bin: $(ls "$BIN" | tr '\n' ' ') cache: $RECTRAIN_CACHE_DIR autotune: ${CUBECL_AUTOTUNE_LEVEL:-default}"
  echo "budget: ${BUDGET_S}s; logs: $LOGDIR"
  echo "cuDNN: $CUDNN_NOTE"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  cudnn_candidates
} | tee "$LOGDIR/env.txt"

if [ $# = 0 ]; then
  set -- parity18 torch_bench r18_train_f32 r18_train_bf16 r50_train_f32 r50_train_bf16 \
    r18_infer_f32 r18_infer_bf16 r50_infer_f32 r50_infer_bf16 t32cold \
    parity50 r18_train_f32_nocudnn profile t224
fi

# The table lives in a file, not an array: the cases run in subshells.
row() { # NAME STATUS RESULT: one line of the final table, also printed as it happens
  local line
  line=$(printf '%-21s %-13s %s' "$1" "$2" "$3" | tr '\n\r' '  ' | cut -c1-300) # the tool shows 12,000 characters
  echo "$line" >>"$LOGDIR/rows.txt"
  echo "== $line"
}
nrows() { count '' "$LOGDIR/rows.txt"; }

# tmo NAME DEFAULT: NAME's timeout: T_NAME if set, capped by T_MAX, cut to what is left of the budget.
tmo() {
  local v="T_$1" t l
  t=$(int "${!v:-}" "$2")
  [ -n "${T_MAX:-}" ] && [ "$t" -gt "$(int "$T_MAX" "$t")" ] && t=$(int "$T_MAX" "$t")
  l=$((DEADLINE - SECONDS))
  [ "$l" -lt "$t" ] && t=$l
  [ "$t" -ge 1 ] || t=1
  echo "$t"
}

need() { # NAME EXE: true if $BIN/EXE can run, else a row saying it is missing
  [ -x "$BIN/$2" ] && return 0
  row "$1" "missing" "no $BIN/$2 (no $GPU_RUN_DIR/bin/$2.xz? run scripts/gpu/gpu_bundle.sh on the build machine)"
  return 1
}

tree_pids() { # PID and its descendants
  local p
  echo "$1"
  for p in $(pgrep -P "$1" 2>/dev/null || cat /proc/"$1"/task/*/children 2>/dev/null); do tree_pids "$p"; done
}
# watch_libs PID: prints each libcudnn file mapped by PID or its descendants, polled until PID is gone.
# cudarc dlopens cuDNN by name, so /proc/PID/maps is where to see which of the installed copies won.
watch_libs() {
  local seen=" " p f
  while kill -0 "$1" 2>/dev/null; do
    for p in $(tree_pids "$1"); do
      for f in $(grep -ao '/[^ ]*libcudnn[^ ]*' "/proc/$p/maps" 2>/dev/null | sort -u); do
        case $seen in *" $f "*) ;; *) seen="$seen$f " && echo "$f" ;; esac
      done
    done
    sleep 0.5
  done
}
# run NAME TIMEOUT CMD...: CMD under `timeout`, stdout to NAME.log, stderr to NAME.err, the libcudnn files
# it mapped to NAME.libs; sets RC and WALL. GPU_RUN_CASE tells a test's fake binary which case it is in.
run() {
  local name=$1 t=$2 start=$SECONDS pid wpid
  RUN_T=$t
  shift 2
  GPU_RUN_CASE=$name timeout -k "$KILL_S" "$t" "$@" >"$LOGDIR/$name.log" 2>"$LOGDIR/$name.err" </dev/null &
  pid=$!
  watch_libs "$pid" >"$LOGDIR/$name.libs" &
  wpid=$!
  wait "$pid"
  RC=$?
  wait "$wpid" # ends within 0.5 s: the run was reaped by the `wait` above
  WALL=$((SECONDS - start))
}
status() { # the status of the last run, from RC
  case $RC in 124 | 137) echo "TIMEOUT ${RUN_T}s" ;; *) echo "rc=$RC ${WALL}s" ;; esac
}
why() { # NAME: why a run has no RESULT, in one line
  local n last
  n=$(count '^step=' "$LOGDIR/$1.log")
  last=$(grep -a '^step=' "$LOGDIR/$1.log" 2>/dev/null | tail -1)
  echo "$n steps${last:+ (last: $last)}; $(grep -av '^$' "$LOGDIR/$1.err" 2>/dev/null | tail -2 | tr '\n' ' ' | cut -c1-200)"
}
firststeps() { grep -a '^step=' "$LOGDIR/$1.log" 2>/dev/null | head -3 | sed 's/ img_s=.*//; 1s/^/ | /' | tr '\n' ' '; }

probe() { # NAME DEFAULT_TIMEOUT ARGS...: one gpu_probe run
  local name=$1 t result
  t=$(tmo "$1" "$2")
  shift 2
  need "$name" gpu_probe || return 0
  run "$name" "$t" "$BIN/gpu_probe" "$@"
  result=$(grep -a '^RESULT' "$LOGDIR/$name.log" | tail -1)
  if [ -n "$result" ]; then
    row "$name" "ok ${WALL}s" "${result#RESULT }$(firststeps "$name")"
  else
    row "$name" "$(status)" "no RESULT: $(why "$name") | $*"
  fi
}

tool() { # NAME DEFAULT_TIMEOUT BINARY ARGS...: one rectrain/recpredict run
  local name=$1 t exe=$3
  t=$(tmo "$1" "$2")
  shift 3
  need "$name" "$exe" || return 0
  run "$name" "$t" "$BIN/$exe" "$@"
  row "$name" "$(status)" "$exe: $(grep -aE 'Time cost|Validation-accuracy|rror|notice|CUDA kernels' \
    "$LOGDIR/$name.err" | tail -6 | tr '\n' ' ' | cut -c1-400)"
}

D=$GPU_RUN_DIR/data
D224=$GPU_RUN_DIR/data224
fm() { # data dir, shape
  echo --train "$1/fm_train.rec" --validation "$1/fm_val.rec" --classes "$1/fm.classes" --num-layers 18 \
    --image-shape "$2" --mini-batch-size 64 --learning-rate 0.05 --seed 1
}

# Issue 11's bench: our synthetic training/inference and PyTorch's in the same call.
# bench NAME DEFAULT_TIMEOUT DEPTH BATCH MODE PRECISION [VAR=value...]: one gpu_probe run, its img/s
# kept in ours.txt for the ratios.
bench() {
  local name=$1 t depth=$3 batch=$4 mode=$5 prec=$6 result img
  t=$(tmo "$1" "$2")
  shift 6
  need "$name" gpu_probe || return 0
  run "$name" "$t" env "$@" "$BIN/gpu_probe" --device cuda:0 --depth "$depth" --batch "$batch" \
    --size 224 --steps "$(int "${BENCH_STEPS:-}" 12)" --mode "$mode" --precision "$prec"
  result=$(grep -a '^RESULT' "$LOGDIR/$name.log" | tail -1)
  if [ -n "$result" ]; then
    img=$(sed -n 's/.* img_s=\([0-9.]*\).*/\1/p' <<<"$result")
    case $img in '' | *[!0-9.]*) ;; *) echo "$name $img" >>"$LOGDIR/ours.txt" ;; esac
    row "$name" "ok ${WALL}s" "${result#RESULT }"
  else
    row "$name" "$(status)" "no RESULT: $(why "$name")"
  fi
}
ratios() { # ours/torch for every bench run that has both numbers
  printf '%-22s %10s %10s %7s\n' "work" "ours img/s" "torch" "ratio"
  local key ours torch
  for key in r18_train_f32:"train resnet18 256 fp32" r18_train_bf16:"train resnet18 256 amp" \
    r50_train_f32:"train resnet50 128 fp32" r50_train_bf16:"train resnet50 128 amp" \
    r18_infer_f32:"infer resnet18 256 fp32" r18_infer_bf16:"infer resnet18 256 amp" \
    r50_infer_f32:"infer resnet50 256 fp32" r50_infer_bf16:"infer resnet50 256 amp" \
    r18_train_f32_nocudnn:"train resnet18 256 fp32"; do
    ours=$(awk -v n="${key%%:*}" '$1 == n {v = $2} END {print v}' "$LOGDIR/ours.txt")
    torch=$(grep -a "^TORCH ${key#*:} " "$LOGDIR/torch_bench.log" 2>/dev/null | awk '{v = $6} END {print v}')
    [ -n "$ours" ] && printf '%-22s %10s %10s %7s\n' "${key%%:*}" "$ours" "${torch:--}" \
      "$(awk -v a="$ours" -v b="$torch" 'BEGIN {if (b + 0 > 0) printf "%.3f", a / b; else print "-"}')"
  done
}

# cubecl's profile log (CUBECL_DEBUG_OPTION=profile) has one row per kernel launch,
# `| <duration, Debug-formatted, padded> | <kernel>` (cubecl-runtime's logging/server.rs), and summary
# tables whose rows start with a name and have four columns; only the launch rows count.
PROFILE_ROW='^\| +[0-9][0-9.]*[^ |]{0,3} +\| '
profile_row() { # FILE STEPS
  local n ms top
  n=$(count "$PROFILE_ROW" "$1")
  # each launch's duration in ms, then its kernel (first 60 characters)
  grep -aE "$PROFILE_ROW" "$1" 2>/dev/null | awk -F'|' '{
      d = $2; gsub(/ /, "", d); u = d; sub(/^[0-9.]+/, "", u)
      printf "%.6f\t%s\n", d * (u == "s" ? 1000 : u == "ms" ? 1 : u == "ns" ? 1e-6 : 1e-3), substr($3, 2, 60) }' \
    >"$LOGDIR/profile.ms" # (µs is the remaining unit)
  ms=$(awk -F'\t' -v s="$2" '{t += $1} END {printf "%.1f", t / s}' "$LOGDIR/profile.ms")
  top=$(awk -F'\t' -v s="$2" '{t[$2] += $1; c[$2]++} END {for (k in t) printf "%.1f ms %gx %s\n", t[k] / s, c[k] / s, k}' \
    "$LOGDIR/profile.ms" | sort -rg | head -4 | tr '\n' ';')
  row profile "" "cubecl launches: $n in $2 steps = $(awk -v n="$n" -v s="$2" 'BEGIN {printf "%.1f", n / s}') per step, \
GPU $ms ms per step; top: ${top:-none}"
}

# One case; runs in a subshell (see the loop).
one() {
  local start
  case $1 in
    p32) probe p32 170 --device cuda:0 --depth 18 --batch 64 --size 32 --steps 8 ;;
    p224) probe p224 90 --device cuda:0 --depth 18 --batch 256 --size 224 --steps 10 ;;
    p224bf16) probe p224bf16 90 --device cuda:0 --precision bfloat16 --depth 18 --batch 256 --size 224 --steps 10 ;;
    t32cold) tool t32cold 40 rectrain $(fm "$D" 3,32,32) --epochs 3 --device cuda --out /tmp/m32 ;;
    t32warm) tool t32warm 60 rectrain $(fm "$D" 3,32,32) --epochs 2 --device cuda --out /tmp/m32w ;;
    t224) tool t224 20 rectrain $(fm "$D224" 3,224,224) --epochs 3 --device cuda --out /tmp/m224 ;;
    t224bf16) tool t224bf16 90 rectrain $(fm "$D224" 3,224,224) --epochs 2 --precision-dtype bfloat16 --device cuda --out /tmp/m224b ;;
    t32dp) tool t32dp 90 rectrain $(fm "$D" 3,32,32) --epochs 2 --device cuda:0,0 --out /tmp/m32dp ;;
    t32default) tool t32default 300 rectrain-default $(fm "$D" 3,32,32) --epochs 1 --device cuda --out /tmp/m32d ;;
    predict) tool predict 60 recpredict --model /tmp/m32 --device cuda --evaluate --timings --rec "$D/fm_val.rec" ;;
    t32cpu) # for the CPU build machine (see the header): the CPU baseline of t32cold's accuracy
      tool t32cpu 240 rectrain $(fm "$D" 3,32,32) --epochs 3 --device cpu --out /tmp/m32cpu ;;
    bench_predict) # recpredict against PyTorch inference (scripts/bench/bench_recpredict.sh gpu), ratios last;
      # its scratch (JPEGs) in /tmp, not $OUT; its logs copied into ours.
      local work
      work=$(dirname "$LOGDIR")/bench_predict
      RECPREDICT="$BIN/recpredict" TORCH_BASELINE="$TORCH_BASELINE" PY=$PY WORK=$work \
        N=${BENCH_N:-1024} RUN_TIMEOUT=${BENCH_RUN_S:-150} TORCH_TIMEOUT=${BENCH_TORCH_S:-240} \
        run bench_predict "$(tmo bench_predict 480)" bash scripts/bench/bench_recpredict.sh gpu
      cp -r "$work/logs" "$LOGDIR/bench_predict" 2>/dev/null
      row bench_predict "$(status)" "whole table in bench_predict.log"
      while read -r line; do row bench_predict "" "$line"; done < \
        <(sed -n '/== recpredict \/ PyTorch/,/^(img/p' "$LOGDIR/bench_predict.log" "$LOGDIR/bench_predict.err" | grep '^resnet') ;;
    torch) # $TORCH_BASELINE (see above)
      [ -n "$TORCH_BASELINE" ] || { row torch "missing" "no torch_baseline.py"; return 0; }
      run torch "$(tmo torch 110)" "$PY" "$TORCH_BASELINE"
      while read -r line; do row torch "rc=$RC" "$line"; done < <(grep -a '^torch ' "$LOGDIR/torch.log")
      [ "$RC" != 0 ] && row torch "$(status)" "$(tail -1 "$LOGDIR/torch.err")" ;;
    torch_bench) # PyTorch eager on the same work as the r*_ runs, for the ratios
      run torch_bench "$(tmo torch_bench 45)" "$PY" "$TORCH_BENCH"
      row torch_bench "$(status)" "$(count '^TORCH' "$LOGDIR/torch_bench.log") measurements$([ "$RC" != 0 ] &&
        echo "; $(tail -2 "$LOGDIR/torch_bench.err" | tr '\n' ' ' | cut -c1-200)")" ;;
    parity18) probe parity18 40 --device cuda:0 --mode parity --depth 18 --batch 8 --size 224 ;;
    parity50) probe parity50 25 --device cuda:0 --mode parity --depth 50 --batch 4 --size 224 ;;
    r18_train_f32) bench r18_train_f32 30 18 256 train float32 ;;
    r18_train_bf16) bench r18_train_bf16 30 18 256 train bfloat16 ;;
    r50_train_f32) bench r50_train_f32 35 50 128 train float32 ;;
    r50_train_bf16) bench r50_train_bf16 35 50 128 train bfloat16 ;;
    r18_infer_f32) bench r18_infer_f32 20 18 256 infer float32 ;;
    r18_infer_bf16) bench r18_infer_bf16 20 18 256 infer bfloat16 ;;
    r50_infer_f32) bench r50_infer_f32 20 50 256 infer float32 ;;
    r50_infer_bf16) bench r50_infer_bf16 20 50 256 infer bfloat16 ;;
    r18_train_f32_nocudnn) bench r18_train_f32_nocudnn 20 18 256 train float32 RECTRAIN_NO_CUDNN=1 ;;
    profile) # cubecl kernel launches and GPU time per training step (cuDNN's own launches are not in it)
      rm -f "$LOGDIR/profile.txt"
      BENCH_STEPS=4 bench profile 20 18 64 train bfloat16 \
        CUBECL_DEBUG_LOG="$LOGDIR/profile.txt" CUBECL_DEBUG_OPTION=profile
      profile_row "$LOGDIR/profile.txt" 4 ;;
    *) row "$1" "unknown" "no such run" ;;
  esac
  return 0
}

for r in "$@"; do
  if [ $((DEADLINE - SECONDS)) -lt "$MIN_S" ]; then
    row "$r" "skipped" "no time left (BUDGET_S=$BUDGET_S)"
    continue
  fi
  before=$(nrows)
  (one "$r") 2>>"$LOGDIR/script.err" # the runs' own output goes to their logs; this is the script's
  rc=$?
  # A case that died (a bug here, a signal) still gets a row, and the loop goes on.
  [ "$rc" != 0 ] || [ "$(nrows)" = "$before" ] &&
    row "$r" "error" "gpu_run.sh's case ended with rc=$rc$([ "$(nrows)" = "$before" ] && echo ' and no row'): \
$(tail -1 "$LOGDIR/script.err" 2>/dev/null | cut -c1-200)"
done

parity_worst() { # the 5 worst PARITY lines of each precision of each parity run, by rel (the last field)
  local f n p
  for f in "$LOGDIR"/parity*.log; do
    [ -f "$f" ] || continue
    n=$(count '^PARITY ' "$f")
    echo "-- $(basename "$f" .log): $n PARITY lines; the worst by rel of each precision:"
    for p in $(grep -a '^PARITY ' "$f" | awk '{print $2}' | sort -u); do
      grep -a "^PARITY $p " "$f" |
        awk '{r = "inf"; for (i = 1; i <= NF; i++) if ($i ~ /^rel=/) r = substr($i, 5)
              if (r !~ /^[0-9]/) r = "inf"  # NaN and inf are the worst
              print r "\t" $0}' | sort -t"$(printf '\t')" -k1,1gr | head -5 | cut -f2-
    done
  done
}
step_times() { # each run's step times (ms), first ones included: they hold the kernel compilation
  local f
  for f in "$LOGDIR"/*.log; do
    [ "$(count '^step=' "$f")" -gt 0 ] || continue
    printf '%-21s %s\n' "$(basename "$f" .log)" \
      "$(grep -a '^step=' "$f" | sed -n 's/.* ms=\([^ ]*\).*/\1/p' | head -16 | tr '\n' ' ')"
  done
}
cudnn_report() {
  local f
  echo "cuDNN: $CUDNN_NOTE"
  echo "ldconfig -p | grep libcudnn:"
  if [ -s "$LOGDIR/ldconfig-cudnn.txt" ]; then head -12 "$LOGDIR/ldconfig-cudnn.txt"; else echo "  (none)"; fi
  echo "what the binaries said (runs x line):"
  grep -ah '^CUDA kernels:\|^cuDNN [0-9]' "$LOGDIR"/*.err 2>/dev/null | sort | uniq -c | sort -rn | head -6
  echo "libcudnn files mapped (from /proc/PID/maps), with the runs that mapped them:"
  for f in $(cat "$LOGDIR"/*.libs 2>/dev/null | sort -u); do
    echo "  $f  <- $(grep -lxF "$f" "$LOGDIR"/*.libs | xargs -n1 basename | sed 's/\.libs$//' | tr '\n' ' ')"
  done | head -12
  [ -n "$(cat "$LOGDIR"/*.libs 2>/dev/null)" ] || echo "  (none seen)"
  echo "candidates:"
  cudnn_candidates | sed 's/^/  /'
}

summary() {
  echo
  echo "==== gpu_run.sh: $(head -2 "$LOGDIR/env.txt" | tail -1); $((SECONDS - START)) s of BUDGET_S=$BUDGET_S"
  du -sh "$RECTRAIN_CACHE_DIR" 2>/dev/null | sed 's/^/kernel cache: /'
  printf '%-21s %-13s %s\n' run status result
  cat "$LOGDIR/rows.txt"
  echo
  ratios
  echo
  echo "---- worst parity errors (PARITY <precision> <check> abs=<max abs error> rel=<abs / max |reference|>)"
  parity_worst
  echo "---- step times (ms)"
  step_times
  echo "---- cuDNN"
  cudnn_report
}
summary >"$LOGDIR/summary.txt" 2>&1
cat "$LOGDIR/summary.txt"
if [ -n "$OUT" ]; then
  cp "$LOGDIR/summary.txt" "$OUT/summary.txt"
  if tar -C "$(dirname "$LOGDIR")" -cJf "$OUT/gpu-logs.tar.xz" "$(basename "$LOGDIR")"; then
    echo "logs: \$OUT/gpu-logs.tar.xz ($(ls "$LOGDIR" | wc -l) files from $LOGDIR), summary: \$OUT/summary.txt"
  else
    echo "logs: packing failed; they are in $LOGDIR"
  fi
else
  echo "logs: $LOGDIR (no \$OUT set)"
fi
