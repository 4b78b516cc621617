#!/usr/bin/env bash
# Tests scripts/gpu/gpu_run.sh here, without a GPU: scripts/gpu/testdata/fake_gpu_bin.sh stands in for gpu_probe,
# rectrain and torch's python, and does per case what FAKE_<case> says (succeed, fail, hang, no RESULT,
# garbage, empty or real profile log, map a "libcudnn"). Everything lives in a temporary folder: the real
# gpu-run/ is never touched. Small timeouts (T_MAX, KILL_S) keep it under a minute.
#   bash scripts/gpu/test_gpu_run.sh     (from anywhere; exits non-zero with a message on the first failure)
set -u
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
tmp=$(mktemp -d /tmp/test_gpu_run.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "test_gpu_run: FAIL: $*" >&2; [ -n "${LAST:-}" ] && echo "(output in $LAST; kept $tmp)" >&2; trap - EXIT; exit 1; }
has() { grep -qE -- "$1" "$2" || fail "no line matching '$1' in $2"; }
hasnt() { ! grep -qE -- "$1" "$2" || fail "a line matching '$1' in $2: $(grep -E -- "$1" "$2" | head -2)"; }

DEFAULT=(parity18 torch_bench r18_train_f32 r18_train_bf16 r50_train_f32 r50_train_bf16 r18_infer_f32
  r18_infer_bf16 r50_infer_f32 r50_infer_bf16 t32cold parity50 r18_train_f32_nocudnn profile t224)

# The default list's timeouts, read from the script's case list, add up to at most 420 s.
sum=0
for c in "${DEFAULT[@]}"; do
  t=$(grep -oE "(bench|probe|tool|tmo) $c [0-9]+" scripts/gpu/gpu_run.sh | head -1 | awk '{print $3}')
  [ -n "$t" ] || fail "no timeout found for $c in gpu_run.sh"
  sum=$((sum + t))
done
[ "$sum" -le 420 ] || fail "the default list's timeouts add up to $sum s > 420 s"
grep -q 'BUDGET_S:-}" 420' scripts/gpu/gpu_run.sh || fail "BUDGET_S does not default to 420"

# The bundle: the fake, xz'd under the binaries' names, as gpu_bundle.sh makes them.
fake=scripts/gpu/testdata/fake_gpu_bin.sh
mkdir -p "$tmp/bundle/bin" "$tmp/bundle1/bin" "$tmp/venv/lib/python3.12/site-packages/nvidia/cudnn/lib"
for b in gpu_probe rectrain; do xz -c "$fake" >"$tmp/bundle/bin/$b.xz"; done
xz -c "$fake" >"$tmp/bundle1/bin/gpu_probe.xz" # no rectrain: a missing binary
cp "$fake" "$tmp/python3"
chmod +x "$tmp/python3"
# A "libcudnn.so.9": any small shared library will do; the fake maps it (LD_PRELOAD) so that gpu_run.sh's
# /proc/PID/maps watcher can see it. It also stands for the PyTorch venv's cuDNN.
lib=$(ldd /bin/sleep | awk '/libc\.so/ {print $3}')
[ -f "$lib" ] || fail "no libc to stand for libcudnn"
cp "$lib" "$tmp/venv/lib/python3.12/site-packages/nvidia/cudnn/lib/libcudnn.so.9"
cudnn=$tmp/venv/lib/python3.12/site-packages/nvidia/cudnn/lib/libcudnn.so.9

common=(GPU_RUN_DIR="$tmp/bundle" BIN="$tmp/bin" PY="$tmp/python3" TORCH_BENCH=scripts/gpu/torch_bench.py
  TORCH_VENV="$tmp/venv" RECTRAIN_CACHE_DIR="$tmp/cache" T_MAX=3 KILL_S=2 FAKE_CUDNN="$cudnn")

# --- 1: the default list (no arguments), with failing, hanging and odd cases among good ones, and $OUT.
out=$tmp/out
LAST=$tmp/run1.txt
start=$SECONDS
env "${common[@]}" OUT="$out" LOGDIR="$tmp/logs1/gpu-logs" BUDGET_S=90 \
  FAKE_r18_train_f32=fail FAKE_r18_train_bf16=hang FAKE_r50_train_f32=noresult FAKE_r50_train_bf16=cudnn \
  FAKE_r18_infer_bf16=garbage FAKE_parity50=fail FAKE_profile=profile_empty FAKE_t224=fail \
  bash scripts/gpu/gpu_run.sh >"$LAST" 2>"$tmp/run1.err" || fail "gpu_run.sh exited non-zero"
echo "run 1 (default list): $((SECONDS - start)) s"
sed -n '/^run  *status  *result$/,/^$/p' "$LAST" >"$tmp/table1.txt"
# every case of the default list has a row in the final table, in order, even after failing ones
got=$(awk 'NR > 1 && NF {print $1}' "$tmp/table1.txt" | uniq | tr '\n' ' ')
[ "$got" = "${DEFAULT[*]} " ] || fail "table rows: '$got', want '${DEFAULT[*]} '"
has '^parity18 +ok .*worst_rel_f32=7.0e-06' "$tmp/table1.txt"
has '^torch_bench +rc=0 .*8 measurements' "$tmp/table1.txt"
has '^r18_train_f32 +rc=2 .*no RESULT.*no CUDA device found' "$tmp/table1.txt"
has '^r18_train_bf16 +TIMEOUT 3s +no RESULT: 1 steps' "$tmp/table1.txt"
has '^r50_train_f32 +rc=0 .*no RESULT: 2 steps' "$tmp/table1.txt"
has '^r18_infer_bf16 +ok ' "$tmp/table1.txt"
has '^parity50 +rc=2 ' "$tmp/table1.txt"
has '^t32cold +rc=0 .*Validation-accuracy=0.812500' "$tmp/table1.txt"
has '^t224 +rc=2 ' "$tmp/table1.txt"
has '^profile +cubecl launches: 0 in 4 steps = 0.0 per step' "$tmp/table1.txt"
# the ratios: ours (2500) over torch's (10000 fp32, 20000 amp); none for a run without a number
has '^r18_train_bf16 ' "$tmp/table1.txt"
has '^r50_train_bf16 +2500.0 +20000 +0.125$' "$LAST"
has '^r18_infer_f32 +2500.0 +10000 +0.250$' "$LAST"
hasnt '^r18_infer_bf16 +[0-9-]+ +[0-9-]+ +[0-9.-]+$' "$LAST"
# the 5 worst PARITY lines of each precision, worst first; the better ones left out
has '^-- parity18: 14 PARITY lines' "$LAST"
grep -A2 '^-- parity18:' "$LAST" | tail -2 >"$tmp/worst.txt"
has '^PARITY bf16 conv 7 forward abs=2.0e-03 rel=7.0e-03$' "$tmp/worst.txt"
has '^PARITY bf16 conv 6 ' "$tmp/worst.txt"
has '^PARITY f32 conv 3 forward abs=2.0e-03 rel=3.0e-06$' "$LAST"
hasnt '^PARITY f32 conv [12] ' "$LAST"
# the step times of the bench runs (the fake's step i takes 100/i ms)
has '^r18_infer_f32 +100.5 50.5 33.5 25.5 20.5 16.5 14.5 12.5 11.5 10.5 9.5 8.5 $' "$LAST"
has '^r18_train_bf16 +100.5 $' "$LAST"
# cuDNN: what the binaries said, the library file mapped (and by which run), ldconfig, the venv fallback
has '^ +[0-9]+ CUDA kernels: cuDNN 9.14.0: convolutions and batch norm on cuDNN' "$LAST"
has "^  $cudnn  <- r50_train_bf16 \$" "$LAST"
has '^ldconfig -p \| grep libcudnn:' "$LAST"
if ! { ldconfig -p 2>/dev/null || /sbin/ldconfig -p; } | grep -q 'libcudnn\.so\.9 '; then
  has "^cuDNN: no libcudnn.so.9 in ldconfig; the PyTorch venv's on LD_LIBRARY_PATH: ${cudnn%/*}\$" "$LAST"
  has "^LD_LIBRARY_PATH=${cudnn%/*}:/usr/local/cuda/targets/x86_64-linux/lib" "$LAST"
fi
# $OUT: one archive of the logs and the summary, nothing else (the device tool returns <= 8 files)
has '^logs: \$OUT/gpu-logs.tar.xz' "$LAST"
files=$(cd "$out" && find . -mindepth 1 | sort | tr '\n' ' ')
[ "$files" = "./gpu-logs.tar.xz ./summary.txt " ] || fail "\$OUT holds: $files"
[ "$(find "$out" -type f | wc -l)" -le 8 ] || fail "more than 8 files in \$OUT"
mkdir "$tmp/x"
tar -C "$tmp/x" -xJf "$out/gpu-logs.tar.xz" || fail "cannot unpack gpu-logs.tar.xz"
for f in env.txt rows.txt summary.txt parity18.log parity18.err torch_bench.log r18_train_bf16.log \
  r50_train_bf16.libs profile.txt t32cold.err; do
  [ -f "$tmp/x/gpu-logs/$f" ] || fail "gpu-logs.tar.xz has no gpu-logs/$f"
done
has '^RESULT mode=parity' "$tmp/x/gpu-logs/parity18.log"
cmp -s "$tmp/x/gpu-logs/summary.txt" "$out/summary.txt" || fail "summary.txt differs from the archive's"
[ ! -e "$tmp/cache" ] || [ -z "$(find "$out" -name '*cache*')" ] || fail "a kernel cache under \$OUT"

# --- 2: named runs, no $OUT: a real profile log, a missing binary, an unknown run, the budget running out,
# garbage in number knobs (ignored for their defaults).
LAST=$tmp/run2.txt
start=$SECONDS
env "${common[@]}" GPU_RUN_DIR="$tmp/bundle1" BIN="$tmp/bin1" LOGDIR="$tmp/logs2/gpu-logs" \
  BUDGET_S=9 T_MAX=4 T_profile=12x MIN_S=oops FAKE_profile=profile_rows FAKE_r18_train_bf16=hang \
  bash scripts/gpu/gpu_run.sh profile t32cold bogus r18_train_bf16 parity18 t32cpu >"$LAST" 2>"$tmp/run2.err" ||
  fail "gpu_run.sh exited non-zero"
echo "run 2 (named runs, budget cut): $((SECONDS - start)) s"
sed -n '/^run  *status  *result$/,/^$/p' "$LAST" >"$tmp/table2.txt"
has '^profile +ok ' "$tmp/table2.txt"
has '^profile +cubecl launches: 8 in 4 steps = 2.0 per step, GPU 2.0 ms per step; top: 1.5 ms 1x cubecl::MatmulEntry<f32>;0.5 ms 1x ReduceKernel;$' "$tmp/table2.txt"
has '^t32cold +missing +no .*/bin1/rectrain' "$tmp/table2.txt"
has '^bogus +unknown +no such run' "$tmp/table2.txt"
has '^r18_train_bf16 +TIMEOUT 4s' "$tmp/table2.txt"
has '^parity18 +skipped +no time left \(BUDGET_S=9\)' "$tmp/table2.txt"
has '^t32cpu +skipped ' "$tmp/table2.txt"
has "^logs: $tmp/logs2/gpu-logs \\(no \\\$OUT set\\)" "$LAST"
[ -f "$tmp/logs2/gpu-logs/profile.txt" ] || fail "no logs left in LOGDIR without \$OUT"
# --- 3: a bug inside one case (here an unbound variable, fatal under set -u) is a row, and the loop goes on.
mkdir -p "$tmp/repo/scripts/gpu"
sed 's/^    \*) row "\$1" "unknown" "no such run" ;;/    boom) echo "$undefined_var" ;;\n&/' scripts/gpu/gpu_run.sh \
  >"$tmp/repo/scripts/gpu/gpu_run.sh"
grep -q '^    boom)' "$tmp/repo/scripts/gpu/gpu_run.sh" || fail "could not plant the bug"
LAST=$tmp/run3.txt
env "${common[@]}" LOGDIR="$tmp/logs3/gpu-logs" BUDGET_S=20 \
  bash "$tmp/repo/scripts/gpu/gpu_run.sh" boom bogus >"$LAST" 2>"$tmp/run3.err" || fail "gpu_run.sh exited non-zero"
sed -n '/^run  *status  *result$/,/^$/p' "$LAST" >"$tmp/table3.txt"
has '^boom +error +.*rc=1 and no row: .*undefined_var: unbound variable' "$tmp/table3.txt"
has '^bogus +unknown ' "$tmp/table3.txt"
echo "test_gpu_run: ok"
