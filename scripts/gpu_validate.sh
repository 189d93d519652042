#!/usr/bin/env bash
# Validate the course on a CUDA GPU and write reports: the adapter cross-checks (fla + mamba-ssm kernels)
# and nbval over every solution notebook (graders then compare against the GPU kernels and test fp16/bf16).
#
# Usage, in the repo root of a GPU machine:
#   bash scripts/gpu_validate.sh OUTDIR            # with the course installed (make setup && make gpu-setup)
#   WHEELS=.whl bash scripts/gpu_validate.sh OUTDIR   # offline: install .whl/ (../shared/device/prepare.sh)
#                                                   # into /tmp/site and build the CUDA scan first
# Budget: fla's chunk kernels autotune on first use (30-100 s each); plan 10-15 minutes for everything.
set -uo pipefail
out=${1:?usage: gpu_validate.sh OUTDIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
if [ -n "${WHEELS:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH} PATH=/tmp/site/bin:$PATH
  "$PY" -c "import torch, selective_scan_cuda" 2>/dev/null || \
    PY=$PY PIP_TARGET=/tmp/site MAMBA_SDIST=$(ls "$WHEELS"/mamba_ssm-*.tar.gz) bash scripts/build_mamba_cuda.sh \
    2>&1 | tail -3 | tee "$out/build_mamba_cuda.log"
fi
status=0
"$PY" scripts/gpu_crosscheck.py ${ONLY:+--only "$ONLY"} --out "$out/gpu_crosscheck.md" 2>&1 \
  | grep -v Warning | tee "$out/gpu_crosscheck.log" || status=1
# nbval over the solutions; GPU-only sections (lab 03's benchmark) save their figures under reports/
"$PY" -m pytest -q --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
  -p no:cacheprovider ${NOTEBOOKS:-solutions/} 2>&1 | tee "$out/nbval_gpu.log" || status=1
cp reports/*benchmark* "$out"/ 2>/dev/null || true
exit $status
