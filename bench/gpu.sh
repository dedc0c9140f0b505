#!/usr/bin/env bash
# The prepared GPU check (one short run on a lent H100/H200): the same bench scripts as on CPU.
# Prints bf16/channels_last/compile throughput for pretraining and fine-tuning; record the output in
# docs/benchmarks.md with the card that ran it. Needs a CUDA torch with bonekit importable: the .venv of
# `bash .ci/install`, or PY=python3 on a machine that has torch (bench/gpu_session.sh sets that up).
# PEOPLE / SIZE / STEPS / PT_BATCH / RES shrink it for a dry run on a CPU (the defaults are the GPU check).
set -uo pipefail  # one failing bench is reported and the others still run
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
O=${OUTDIR:-bench-out}; mkdir -p "$O"
PEOPLE=${PEOPLE:-60} SIZE=${SIZE:-1024} STEPS=${STEPS:-30} PT_BATCH=${PT_BATCH:-256} RES=${RES:-"512 1024"}
export PYTHONUNBUFFERED=1 BONEKIT_CACHE=${BONEKIT_CACHE:-$O/cache}
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total --format=csv; fi
[ -f $O/phantom/phantom.json ] || $PY -m bonekit.phantom --out $O/phantom --people $PEOPLE --size $SIZE --workers 8 >/dev/null
D="data.root=$O/phantom/train data.workers=8"
bench() { "$PY" "$@" || echo "FAILED (rc $?): $*"; }
R1=${RES%% *}  # the first resolution: the compile and fp32 comparisons
# Fine-tuning first (what the benchmark runs), then pretraining: a caller's timeout cuts the tail.
TR="$D model.encoder=resnet34 loop.batch_size=16 loop.workers=8 steps=$STEPS"
bench bench/train_speed.py $TR data.resolution=$R1 run_dir=$O/tr-$R1
bench bench/train_speed.py $TR data.resolution=$R1 precision=no loop.channels_last=false run_dir=$O/tr-fp32
bench bench/train_speed.py $TR data.resolution=$R1 loop.compile=true run_dir=$O/tr-compile
for e in resnet18 resnet50; do for m in densecl simclr; do
  bench bench/pretrain_speed.py $D data.resolution=$((SIZE / 4)) method.name=$m encoder=$e \
      views.size=$((SIZE * 7 / 32)) train.batch_size=$PT_BATCH train.workers=8 steps=$STEPS run_dir=$O/pt-$m-$e
done; done
for r in ${RES#$R1}; do bench bench/train_speed.py $TR data.resolution=$r run_dir=$O/tr-$r; done
