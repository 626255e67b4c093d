#!/usr/bin/env bash
# The GPU check, one prepared script (about 5 minutes on one H100/H200): every benchmark end to end
# on the GPU, the identities on the GPU in float64 (autocast off), every layer's per-sample gradient
# norms against the batch-1 loop, feature extraction through
# torchrun (NCCL), and the cost benchmark (ResNet-20 32×32 and ResNet-50 224×224, random weights,
# batch 1 and 256; every closed form fused and one member at a time, with the operator calls of each). Writes results/device/*.csv, each with the device name and versions.
#
#   benchmarks/device_check.sh [--data-root DIR] [--out DIR] [--python PY] [--benchmarks "a b …"] [--dry-run]
#
# --dry-run runs the same steps on the CPU with tiny subsets (CI does this), to keep the script working.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
ROOT=${OOD_DATA_ROOT:-}
OUT=results/device
BENCHES="embedded mnist cifar10 cifar10_densenet imagenet_lite"
DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --data-root) ROOT=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --python) PY=$2; shift 2 ;;
    --benchmarks) BENCHES=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    *) echo "device_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [ "$DRY" = 1 ]; then
  # random weights: the dry run checks the script, not a model (no training, no weights needed)
  DEV=cpu; SMALL=(--n-id 60 --n-ood 40 --n-fit 80 --checkpoint random)
  METHODS=(--methods msp energy gradnorm gradnorm_autograd exgrad_autograd "l1*msp" mahalanobis react knn odin); COST=(--repeats 1 --loop-images 2 --exgrad-images 1 --models resnet20)
  B_LARGE=8; VERIFY_N=8; EMB_N=4; PER_LAYER=()
else
  DEV=cuda; SMALL=(); METHODS=(); COST=(--repeats 5); B_LARGE=256; VERIFY_N=128; EMB_N=16; PER_LAYER=(--per-layer resnet20)
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'device_check.sh: no CUDA device (use --dry-run on a CPU)')"
fi
mkdir -p "$OUT"
CACHE=$(mktemp -d)
trap 'rm -rf "$CACHE"' EXIT
ROOTARG=(); [ -n "$ROOT" ] && ROOTARG=(--data-root "$ROOT")

"$PY" -m ood_lib.run.envinfo --device "$DEV" > "$OUT/environment.csv"
echo "step,device,seconds,status" > "$OUT/steps.csv"
FAILED=0
step() {  # step NAME LOG COMMAND...: run one step, record its time and outcome, go on either way
  local name=$1 log=$2; shift 2
  local t0 t1 status
  t0=$(date +%s.%N)
  if "$@" > "$log" 2>&1; then status=ok; else status=failed; FAILED=1; fi
  t1=$(date +%s.%N)
  echo "\"$name\",$DEV,$("$PY" -c "print(round($t1 - $t0, 2))"),$status" >> "$OUT/steps.csv"
  echo "$name: $status"
  [ "$status" = ok ] || tail -20 "$log"
}

echo "benchmark,device,seconds_cold,seconds_warm,status" > "$OUT/runs.csv"
for B in $BENCHES; do
  if [ "$B" != embedded ] && [ -z "$ROOT" ]; then
    echo "$B,$DEV,,,skipped: no data root" >> "$OUT/runs.csv"; continue
  fi
  t_cold=; t_warm=
  for pass in cold warm; do  # warm: the same run again over the caches it filled
    t0=$(date +%s.%N)
    suffix=$([ "$pass" = warm ] && echo _warm || true)  # the cold run's JSON keeps the forward-pass times
    if "$PY" -m ood_lib evaluate --benchmark "$B" "${ROOTARG[@]}" --device "$DEV" --cache-dir "$CACHE" \
         --quiet "${SMALL[@]}" "${METHODS[@]}" --out "$OUT/$B$suffix.csv" > "$OUT/$B$suffix.log" 2>&1; then status=ok; else status=failed; fi
    t1=$(date +%s.%N)
    eval "t_$pass=$("$PY" -c "print(round($t1 - $t0, 2))")"
    [ "$status" = ok ] || break
  done
  echo "$B,$DEV,${t_cold:-},${t_warm:-},$status" >> "$OUT/runs.csv"
  [ "$status" = ok ] || { FAILED=1; echo "device_check.sh: $B failed:"; tail -20 "$OUT/$B$suffix.log"; }
done

# the identities on this device, float64, with the one-image-at-a-time loop as reference
if [ -n "$ROOT" ] && [ -f "$ROOT/weights/resnet20-12fca82f.th" ]; then
  step "verify, ResNet-20 checkpoint, float64, $VERIFY_N images" "$OUT/verify_resnet20.log" \
    "$PY" -m ood_lib verify --checkpoint "$ROOT/weights/resnet20-12fca82f.th" --data-root "$ROOT" \
      --device "$DEV" --n "$VERIFY_N" --quiet --csv "$OUT/verify_resnet20.csv"
fi
step "verify, embedded CNN, float64, $EMB_N images" "$OUT/verify_embedded.log" \
  "$PY" -m ood_lib verify --benchmark embedded --device "$DEV" --n "$EMB_N" --quiet \
    $([ "$DRY" = 1 ] && echo --checkpoint random) --csv "$OUT/verify_embedded.csv"

# every parameter tensor's per-sample gradient norms, batched and by layer hooks against the batch-1 loop
if [ -n "$ROOT" ]; then LB="cifar10 cifar10_densenet"; else LB=embedded; fi
for B in $LB; do
  step "verify every layer, $B, float64, 8 images" "$OUT/verify_layers_$B.log" \
    "$PY" -m ood_lib verify --benchmark "$B" "${ROOTARG[@]}" --device "$DEV" --layers all --n 8 --quiet \
      $([ "$DRY" = 1 ] && echo --checkpoint random) --csv "$OUT/verify_layers_$B.csv"
done

# sharded extraction through torchrun: one process per GPU (NCCL), gloo on the CPU
if [ -n "$ROOT" ]; then SB=cifar10; else SB=embedded; fi
step "torchrun extract $SB, 1 rank" "$OUT/torchrun.log" \
  "$PY" -m torch.distributed.run --standalone --nproc-per-node 1 -m ood_lib extract --benchmark "$SB" \
    "${ROOTARG[@]}" --device "$DEV" --cache-dir "$CACHE/torchrun" --quiet "${SMALL[@]}"

# what each way of scoring costs on this device, at a large batch and at batch 1
step "cost benchmark, batch $B_LARGE" "$OUT/score_cost_b$B_LARGE.log" \
  "$PY" benchmarks/score_cost.py --device "$DEV" "${COST[@]}" --batch-resnet20 "$B_LARGE" --batch-resnet50 "$B_LARGE" \
    --no-grid "${PER_LAYER[@]}" --out "$OUT/score_cost_b$B_LARGE.csv" --ops-out "$OUT/score_ops_b$B_LARGE.csv"
step "cost benchmark, batch 1" "$OUT/score_cost_b1.log" \
  "$PY" benchmarks/score_cost.py --device "$DEV" "${COST[@]}" --batch-resnet20 1 --batch-resnet50 1 --no-grid \
    --out "$OUT/score_cost_b1.csv" --ops-out "$OUT/score_ops_b1.csv"

[ "$FAILED" = 0 ] || { echo "device_check.sh: some step failed (see $OUT/runs.csv and $OUT/steps.csv)"; exit 1; }
echo "device_check.sh: done; results in $OUT"
