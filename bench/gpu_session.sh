#!/usr/bin/env bash
# A lent GPU session's one prepared run (one call of under 10 minutes):
#   1. set-up: the device image's own PyTorch, plus the pure-Python wheels it lacks (.whl/ from bench/gpu_wheels.sh);
#   2. bench/gpu.sh alone on the card (throughput: bf16, channels_last, compile, fp32);
#   3. the low-label benchmark on the card, its processes side by side (after the timings, never beside them):
#      - configs/lowlabel.yaml as it is (128 px, Dice at 256 px labels): seeds 0-2, labelled-only and the methods;
#      - the same at GPU scale: 512 px training on a 1024 px phantom, Dice at 1024 px labels, seed 0.
# Each study cell writes result.json when it ends; a deadline stops what is left so the reports and the archive
# still come back. Outputs: $OUT/gpu.log, $OUT/session.log, $OUT/studies.tar.gz.
#   device:        bash bench/gpu_session.sh
#   CPU dry run:   TINY=1 OUT=bench-out/dry PY=.venv/bin/python bash bench/gpu_session.sh
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$SECONDS
BUDGET=${BUDGET:-560}  # seconds for the whole script
OUT=${OUT:-bench-out/session}; mkdir -p "$OUT"
B=bench-out; mkdir -p $B
exec > >(tee -a "$OUT/session.log") 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD BONEKIT_CACHE=$PWD/$B/cache
PY=${PY:-python3}
if [ -d .whl ] && ! $PY -c "import lightly" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
$PY -c "import torch, lightly, timm, segmentation_models_pytorch as smp, accelerate, omegaconf
import bonekit, selfsup.pretrain, cosup.experts, finetune.study
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '',
      'timm', timm.__version__, 'smp', smp.__version__, 'accelerate', accelerate.__version__)" || exit 1
left() { echo $((BUDGET - (SECONDS - T0))); }

# ---- 2. the timings, alone
if [ -n "${TINY:-}" ]; then
  GPU_ENV="PEOPLE=12 SIZE=128 STEPS=2 PT_BATCH=4 RES=64"
else
  GPU_ENV=""
fi
echo "== bench/gpu.sh ($(left) s left)"
env $GPU_ENV PY=$PY OUTDIR=$B/gpu timeout ${GPU_SH_S:-150} bash bench/gpu.sh 2>&1 | tr "\r" "\n" | grep -v "it/s\]\|s/it\]\|^$" | tee "$OUT/gpu.log"

# ---- 3. the benchmark, processes side by side
if [ -n "${TINY:-}" ]; then
  S="steps.ceiling=4 steps.finetune=3 steps.distill=3 data.phantom.people=10 data.phantom.test_people=2 data.resolution=64 data.phantom.size=128"
  SA="stage_args=[eval_resolution=64,loop.eval_every=2,loop.warmup=1,aug.invert_p=0.15]"
  S512=$S
  SA512="stage_args=[eval_resolution=128,loop.eval_every=2,loop.warmup=1,aug.invert_p=0.15]"
else
  S=""; SA=""
  S512="data.resolution=512 data.phantom.size=1024"
  SA512="stage_args=[precision=bf16,eval_resolution=1024,loop.eval_every=200,loop.warmup=30,loop.lr=0.006,aug.invert_p=0.15]"
fi
L=$B/lowlabel; G=$B/lowlabel512
COMMON="study=configs/lowlabel.yaml browser_check=false"
export OMP_NUM_THREADS=2  # two threads per process (study jobs: BONEKIT_THREADS and affinity per chain)
study() {  # study <log name> <cores> <args...>: stopped at the deadline (SIGTERM: its chains stop too)
  local name=$1 cores=$2; shift 2
  local pin=""; if [ "$(nproc)" -ge 16 ] && command -v taskset >/dev/null; then pin="taskset -c $cores"; fi
  timeout $(( $(left) - 40 )) $pin $PY finetune/study.py $COMMON "$@" > "$B/$name.log" 2>&1
  echo "== $name ended: rc $? at $((SECONDS - T0)) s"
}
echo "== benchmark ($(left) s left)"
# warm_start=true: every distilled arm starts from the labelled-only student, as bcp does, so the warm pooloff
# control (the strongest simple baseline, docs/results.md) has the same steps as every method.
# Phase A, side by side: the 5% labelled-only students (one process per seed), the references (ceiling and 10%,
# one per seed) and the 512 px study (seed 0: a methods chain and a references chain).
F="grid.ceiling=false grid.finetune_fractions=[]"
study lowlabel_ft 0-5 out_dir=$L $S ${SA:+"$SA"} jobs=3 "grid.methods=[finetune]" $F & pf=$!
study lowlabel_ref 6-11 out_dir=$L $S ${SA:+"$SA"} jobs=3 "grid.methods=[]" "grid.finetune_fractions=[0.1]" & pr=$!
study lowlabel512 12-15 out_dir=$G $S512 "$SA512" jobs=2 warm_start=true "grid.seeds=[0]" \
  "grid.methods=[finetune,pooloff,bcp]" "grid.finetune_fractions=[]" & p2=$!
wait $pf
# Phase B: once the labelled-only students exist, the arms of each seed in two groups, six processes side by side
# (each finds its seed's finished labelled-only cell and starts from it; the report is written once, at the end).
pb=()
for s in 0 1 2; do
  # never two processes training the same labelled-only cell: without it (phase A cut short), skip the seed
  [ -f $L/scratch/finetune/f0.05/s$s/result.json ] || { echo "== seed $s: no labelled-only student"; continue; }
  for g in "pooloff,bcp,bcpfp" "meanteacher,selftrain"; do
    study lowlabel_s${s}_${g%%,*} 0-11 out_dir=$L $S ${SA:+"$SA"} warm_start=true write_report=false \
      "grid.methods=[finetune,$g]" "grid.seeds=[$s]" $F & pb+=($!)
  done
done
wait $pr $p2 "${pb[@]}"  # by pid: a bare `wait` would also wait for the log's tee
for d in $L $G; do
  $PY finetune/study.py out_dir=$d report_only=true browser_check=false > $d/report.log 2>&1 \
    && cat $d/summary.md || echo "no report for $d"
done
for f in $B/*.log; do echo "---- $f"; tr '\r' '\n' < $f | grep -v "^$" | grep -v "it/s\]\|s/it\]" | tail -n 6; done
# Text records only (tables, per-bone csv, curves, settings, logs) and the figures: checkpoints and the accelerate
# states of unfinished cells (optimizer.bin) made a first archive of 741 MB, over what comes back from the card.
find $L $G $B/*.log \( -name "*.csv" -o -name "*.json" -o -name "*.md" -o -name "*.yaml" -o -name "*.log" \
  -o -name "*.txt" -o -path "*/figures/*.png" \) -size -4M 2>/dev/null | tar czf "$OUT/studies.tar.gz" -T -
ls -l "$OUT/studies.tar.gz"
nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null
echo "== done at $((SECONDS - T0)) s"
