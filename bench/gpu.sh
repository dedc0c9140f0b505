#!/usr/bin/env bash
# The prepared GPU check (one short run on a lent H100/H200): the same bench scripts as on CPU.
# Prints bf16/channels_last/compile throughput for pretraining and fine-tuning; record the output in
# docs/benchmarks.md with the card that ran it. Needs a .venv with a CUDA torch (bash .ci/install).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
O=${OUTDIR:-bench-out}; mkdir -p "$O"
export PYTHONUNBUFFERED=1 BONEKIT_CACHE=${BONEKIT_CACHE:-$O/cache}
nvidia-smi --query-gpu=name,memory.total --format=csv
$PY -m bonekit.phantom --out $O/phantom --people 60 --size 1024 --workers 8 >/dev/null
D="data.root=$O/phantom/train data.workers=8"
for m in simclr densecl; do for e in resnet18 resnet50; do
  $PY bench/pretrain_speed.py $D data.resolution=256 method.name=$m encoder=$e views.size=224 train.batch_size=256 \
      train.workers=8 steps=30 run_dir=$O/pt-$m-$e
done; done
for r in 512 1024; do
  $PY bench/train_speed.py $D data.resolution=$r model.encoder=resnet34 loop.batch_size=16 loop.workers=8 \
      steps=30 run_dir=$O/tr-$r
done
$PY bench/train_speed.py $D data.resolution=512 model.encoder=resnet34 loop.batch_size=16 loop.workers=8 \
    loop.compile=true steps=30 run_dir=$O/tr-compile
$PY bench/train_speed.py $D data.resolution=512 model.encoder=resnet34 loop.batch_size=16 loop.workers=8 \
    precision=no loop.channels_last=false steps=30 run_dir=$O/tr-fp32
