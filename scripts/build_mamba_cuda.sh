#!/usr/bin/env bash
# Build mamba-ssm's selective-scan CUDA extension for the GPU in this machine only.
#
# Why: mamba-ssm 2.3.2.post1's setup.py hard-codes -gencode flags for ten architectures, which takes
# 30-60 minutes and often fails on Colab. One architecture builds in about 150 s on 16 cores (sm_90).
# We patch that list in a copy of the sdist, then install it over the Python-only install from `make setup`.
# Usage: PY=.venv/bin/python bash scripts/build_mamba_cuda.sh   (or `make gpu-setup`)
set -euo pipefail
PY=${PY:-python3}
PIN=${MAMBA_PIN:-mamba-ssm==2.3.2.post1}
cc=$("$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible to torch'; m, n = torch.cuda.get_device_capability(); print(f'{m}{n}')")
command -v nvcc >/dev/null || [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ] || { echo "nvcc not found: install the CUDA toolkit matching torch.version.cuda" >&2; exit 1; }
work=$(mktemp -d)
src=${MAMBA_SDIST:-}
if [ -z "$src" ]; then
  MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE "$PY" -m pip download -q --no-deps --no-binary :all: \
    --no-build-isolation -d "$work" "$PIN"
  src=$(ls "$work"/mamba_ssm-*.tar.gz)
fi
tar xzf "$src" -C "$work"
dir=$(ls -d "$work"/mamba_ssm-*/)
"$PY" - "$dir/setup.py" "$cc" <<'PYEOF'
import sys
path, cc = sys.argv[1], sys.argv[2]
text = open(path).read()
anchor = "    # HACK: The compiler flag"  # the line after the hard-coded -gencode list
if anchor not in text:
    sys.exit("mamba-ssm's setup.py changed; update scripts/build_mamba_cuda.sh")
text = text.replace(anchor, f"    cc_flag = [] if HIP_BUILD else ['-gencode', 'arch=compute_{cc},code=sm_{cc}']\n" + anchor, 1)
open(path, "w").write(text)
PYEOF
start=$(date +%s)
(cd "$dir" && MAX_JOBS=${MAX_JOBS:-$(nproc)} MAMBA_FORCE_BUILD=TRUE "$PY" -m pip install -q --no-deps \
  --no-build-isolation ${PIP_TARGET:+--upgrade --target "$PIP_TARGET"} .)
echo "mamba-ssm CUDA extension built for sm_$cc in $(( $(date +%s) - start )) s"
"$PY" -c "import torch, selective_scan_cuda; print('selective_scan_cuda OK')"  # torch first: it loads libc10
