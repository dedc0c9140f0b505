#!/usr/bin/env bash
# The pure-Python wheels a lent GPU machine lacks (its image has torch, timm, accelerate, einops, opencv, ...),
# for its Python 3.12, into .whl/ (ignored; carried to the machine with the working tree).
# Run here, where the registries answer; then `bash bench/gpu_session.sh` on the device with carry [".whl"].
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo "/.whl/" >> .git/info/exclude; }
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  lightly==1.6.0 segmentation_models_pytorch==0.6.0 omegaconf==2.3.1 pydicom==3.0.2 nibabel==5.4.2 openpyxl et-xmlfile
$PY -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3  # omegaconf's parser: a source release only
ls .whl
