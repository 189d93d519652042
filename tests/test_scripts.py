"""The GPU scripts, exercised where CI can: a CPU dry run of the cross-check, and the mamba-ssm build patch."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_crosscheck_dry_run_on_cpu(tmp_path):
    out = tmp_path / "report.md"
    r = subprocess.run([sys.executable, "scripts/gpu_crosscheck.py", "--cpu", "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = out.read_text()
    assert "| retention == simple_gla" in report and "| ssd (mamba-ssm) == simple_gla" in report
    assert ", 0 failed." in report


def test_mamba_build_patch_keeps_only_this_gpu(tmp_path):
    # The heredoc in build_mamba_cuda.sh that rewrites setup.py's -gencode list, run on a stand-in setup.py.
    script = (ROOT / "scripts/build_mamba_cuda.sh").read_text()
    patch = script.split("<<'PYEOF'\n", 1)[1].split("PYEOF", 1)[0]
    setup = tmp_path / "setup.py"
    setup.write_text("HIP_BUILD = False\ncc_flag = ['-gencode', 'arch=compute_75,code=sm_75']\n"
                     "    # HACK: The compiler flag -D_GLIBCXX_USE_CXX11_ABI\n")
    subprocess.run([sys.executable, "-", str(setup), "90"], input=patch, text=True, check=True)
    text = setup.read_text()
    assert "cc_flag = [] if HIP_BUILD else ['-gencode', 'arch=compute_90,code=sm_90']" in text
    setup.write_text("no anchor here\n")
    r = subprocess.run([sys.executable, "-", str(setup), "90"], input=patch, text=True, capture_output=True)
    assert r.returncode != 0 and "setup.py changed" in r.stderr
