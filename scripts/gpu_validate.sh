#!/usr/bin/env bash
# Validate the course on a CUDA GPU and write reports into OUTDIR: nbval over every solution notebook
# (graders then compare against fla's GPU kernels and also test fp16/bf16), the adapter cross-checks
# (scripts/gpu_crosscheck.py), and the figures GPU-only sections save under reports/.
#
# Usage, in the repo root of a GPU machine:
#   bash scripts/gpu_validate.sh OUTDIR              # course installed: make setup && make gpu-setup
#   WHEELS=.whl bash scripts/gpu_validate.sh OUTDIR  # offline: install .whl/ (../shared/device/prepare.sh)
#                                                    # into /tmp/site and build mamba-ssm's CUDA scan here
# Options (environment):
#   NOTEBOOKS  notebooks in the order to run them (default: solutions/*.ipynb)
#   ONLY       fla | mamba: one library's cross-checks; CROSSCHECK=0 skips them
#   DEADLINE   seconds for the whole run (default 3600): a step that would start after it is skipped and
#              a running one is stopped at it, so a time-limited machine still returns every log
#   MAMBA_BUILD  background (default) | lazy | skip: with WHEELS, when to build mamba-ssm's CUDA scan. "lazy"
#              starts it only when the first notebook that needs it comes, so the notebooks before it are timed
#              on an idle machine (the build takes every core for ~3 min and slows Triton's compiles meanwhile);
#              "skip" never builds it and installs mamba-ssm's Python and Triton parts only: the notebooks use
#              mamba-ssm's selective_scan_ref, as on a Colab runtime where `make gpu-setup` was not run
# With WHEELS, the CUDA build (~150-190 s on 16 cores) runs in the background while the notebooks that do not
# use mamba-ssm run; the others wait for it. fla's chunk kernels autotune on first use (30-100 s each).
set -uo pipefail
out=${1:?usage: gpu_validate.sh OUTDIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
t0=$(date +%s)
deadline=$(( t0 + ${DEADLINE:-3600} ))
left() { echo $(( deadline - $(date +%s) )); }
status=0
summary="$out/summary.txt"
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }

step() {  # step NAME LOG CMD...: run CMD with what is left of the deadline, log it, record the outcome
  local name=$1 log=$2; shift 2
  local budget; budget=$(left)
  if [ "$budget" -le 10 ]; then note "SKIPPED  $name (deadline reached)"; status=1; return; fi
  local s; s=$(date +%s)
  timeout "$budget" "$@" 2>&1 | grep --line-buffered -v Warning | tee "$log"
  local rc=${PIPESTATUS[0]}
  local took=$(( $(date +%s) - s ))
  if [ $rc -eq 0 ]; then note "PASSED   $name (${took} s)"
  elif [ $rc -eq 124 ]; then note "TIMEOUT  $name (${took} s: deadline)"; status=1
  else note "FAILED   $name (rc $rc, ${took} s)"; status=1; fi
}

build_pid= build_pending=
start_build() {
  PY=$PY PIP_TARGET=/tmp/site MAMBA_SDIST=$(ls "$WHEELS"/mamba_ssm-*.tar.gz) \
    bash scripts/build_mamba_cuda.sh > "$out/build_mamba_cuda.log" 2>&1 &
  build_pid=$!
}
if [ -n "${WHEELS:-}" ]; then
  "$PY" -m pip install -q --upgrade --no-index --no-deps --no-compile --target /tmp/site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH} PATH=/tmp/site/bin:$PATH
  if ! "$PY" -c "import torch, selective_scan_cuda" 2>/dev/null; then
    case ${MAMBA_BUILD:-background} in
      background) start_build ;;
      lazy) build_pending=1 ;;
      skip)  # mamba-ssm's Python and Triton parts only (seconds), as `make setup` installs them
        MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE "$PY" -m pip install -q --no-deps --no-build-isolation \
          --no-compile --target /tmp/site "$(ls "$WHEELS"/mamba_ssm-*.tar.gz)" || exit 1 ;;
      *) echo "MAMBA_BUILD must be background, lazy or skip, got '$MAMBA_BUILD'" >&2; exit 2 ;;
    esac
  fi
fi
"$PY" -c "import torch, triton, platform; print('python', platform.python_version(), 'torch', torch.__version__,
'triton', triton.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" | tee -a "$summary"

wait_build() {
  if [ -n "$build_pending" ]; then build_pending=; start_build; fi
  [ -z "$build_pid" ] && return
  if wait "$build_pid"; then note "PASSED   mamba-ssm CUDA build: $(grep 'built for' "$out/build_mamba_cuda.log")"
  else note "FAILED   mamba-ssm CUDA build (see build_mamba_cuda.log)"; status=1; fi
  build_pid=
}

for nb in ${NOTEBOOKS:-solutions/*.ipynb}; do
  grep -q "mamba" "$nb" && grep -q "import_mamba\|refs.ssm\|selective" "$nb" && wait_build
  name=$(basename "$nb" .ipynb)
  step "nbval $name" "$out/nbval_$name.log" "$PY" -m pytest -q --nbval-lax --nbval-current-env \
    --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=600 -p no:cacheprovider "$nb"
done
wait_build
if [ "${CROSSCHECK:-1}" != 0 ]; then
  step "gpu_crosscheck ${ONLY:-all}" "$out/gpu_crosscheck.log" \
    "$PY" scripts/gpu_crosscheck.py ${ONLY:+--only "$ONLY"} --out "$out/gpu_crosscheck.md"
fi
cp reports/*benchmark* "$out"/ 2>/dev/null || true  # figures saved by GPU-only notebook sections
note "total $(( $(date +%s) - t0 )) s"
exit $status
