#!/usr/bin/env bash
# A stand-in for gpu_probe, rectrain and torch's python in scripts/gpu/test_gpu_run.sh: it is installed under
# those names, and does in case $GPU_RUN_CASE (set by gpu_run.sh) what FAKE_<case> says (default ok):
#   ok             a RESULT line (gpu_probe), an accuracy (rectrain), or TORCH lines (python)
#   fail           an error on stderr, exit 2          hang      a step, then sleep until killed
#   noresult       two steps, no RESULT, exit 0        garbage   a RESULT whose img_s is not a number
#   profile_empty  an empty $CUBECL_DEBUG_LOG, then ok profile_rows  8 launch rows and a summary table
#   cudnn          maps $FAKE_CUDNN (a library named libcudnn.so.9) in a child for a second, then ok
me=$(basename "$0")
v=FAKE_${GPU_RUN_CASE:-none}
mode=${!v:-ok}
[ "${1:-}" = -c ] && exit 1 # python -c '...': no nvidia.cudnn here
steps=3 parity=
while [ $# -gt 0 ]; do
  case $1 in --steps) steps=$2 ;; --mode) [ "$2" = parity ] && parity=1 ;; esac
  shift
done
step() { echo "step=$1 ms=$((100 / $1)).5 img_s=$((1000 * $1)).0 host_waits=0"; }
case $mode in
  fail) echo "$me: error: no CUDA device found" >&2; exit 2 ;;
  hang) step 1; exec sleep 600 ;;
  noresult) step 1; step 2; exit 0 ;;
  garbage) echo "RESULT mode=train img_s=- first_step_s=-"; exit 0 ;;
  profile_empty) : >"$CUBECL_DEBUG_LOG" ;;
  profile_rows)
    {
      echo "Executing MatmulEntry"
      for s in 1 2 3 4; do
        echo "| 1.5ms      | cubecl::MatmulEntry<f32>"
        echo "| 500µs      | ReduceKernel"
      done
      echo "|⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺⎺| "
      echo "| Kernel                   | Duration | Num Computed | Ratio |"
      echo "| cubecl::MatmulEntry<f32> | 6ms      | 4            | 85 %  |"
      echo "| Total                    | 7ms      | 8            | 100 % |"
    } >"$CUBECL_DEBUG_LOG" ;;
  cudnn) LD_PRELOAD=$FAKE_CUDNN sleep 1.2 ;;
esac
echo "CUDA kernels: cuDNN 9.14.0: convolutions and batch norm on cuDNN" >&2
case $me in
  gpu_probe)
    if [ -n "$parity" ]; then
      echo "cuDNN 91400; 3 distinct convolutions" >&2
      for p in f32 bf16; do
        for i in 1 2 3 4 5 6 7; do
          [ "$p" = f32 ] && e=$i-06 || e=$i-03
          echo "PARITY $p conv $i forward abs=2.0e-03 rel=${e/-/.0e-}"
        done
      done
      echo "RESULT mode=parity depth=18 batch=8 size=224 worst_rel_f32=7.0e-06 worst_rel_bf16=7.0e-03"
    else
      for i in $(seq 1 "$steps"); do step "$i"; done
      echo "RESULT mode=train depth=18 batch=256 size=224 precision=float32 img_s=2500.0 first_step_s=0.10"
    fi ;;
  rectrain) printf 'Epoch[0] Time cost=1.000\nEpoch[2] Validation-accuracy=0.812500\n' >&2 ;;
  *) for w in "train resnet18 256" "train resnet50 128" "infer resnet18 256" "infer resnet50 256"; do
       echo "TORCH $w fp32 10000"; echo "TORCH $w amp 20000"
     done ;;
esac
