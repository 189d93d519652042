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


def test_profile_first_grades_times_every_graded_cell_on_cpu():
    # The GPU profiler, run on a CPU over Lab 01: one timed line per grade(...) call, in the notebook's order.
    r = subprocess.run([sys.executable, "scripts/profile_first_grades.py", "solutions/01_kernel_trick.ipynb"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    timed = [line.split("'")[1] for line in r.stdout.splitlines() if line.startswith("== grade(") and " s" in line
             and "):" in line]
    assert timed == ["1.1", "1.2a", "1.2b", "1.3a", "1.3b"], r.stdout
    assert "passed" in r.stdout and "import fla:" in r.stdout and r.stdout.rstrip().splitlines()[-1].startswith("total")


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


FAKE_PY = """#!/bin/bash
# stands in for python3 in gpu_validate.sh: no CUDA scan importable, every other command succeeds at once
echo "${MAMBA_SKIP_CUDA_BUILD:+[MAMBA_SKIP_CUDA_BUILD] }$*" >> "$FAKE_LOG"
case "$*" in *"import torch, selective_scan_cuda"*) exit 1 ;; esac
exit 0
"""


def _gpu_validate(tmp_path, mamba_build):
    """gpu_validate.sh with a stand-in python over Lab 01 (no mamba-ssm) then Lab 08 (mamba-ssm): returns the
    completed process, the summary's lines and the stand-in's calls in order."""
    import os

    tmp_path.mkdir(parents=True)
    fake = tmp_path / "python3"
    fake.write_text(FAKE_PY)
    fake.chmod(0o755)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "stub-0-py3-none-any.whl").write_text("")
    (wheels / "mamba_ssm-0.tar.gz").write_text("")
    out = tmp_path / "out"
    env = {**os.environ, "PY": str(fake), "FAKE_LOG": str(tmp_path / "calls.log"), "WHEELS": str(wheels),
           "CROSSCHECK": "0", "NOTEBOOKS": "solutions/01_kernel_trick.ipynb solutions/08_mamba_selective_scan.ipynb"}
    if mamba_build:
        env["MAMBA_BUILD"] = mamba_build
    r = subprocess.run(["bash", "scripts/gpu_validate.sh", str(out)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    summary = (out / "summary.txt").read_text().splitlines() if (out / "summary.txt").exists() else []
    calls = (tmp_path / "calls.log").read_text().splitlines() if (tmp_path / "calls.log").exists() else []
    return r, summary, calls


def test_gpu_validate_mamba_build_when(tmp_path):
    """MAMBA_BUILD: background (default) builds from the start, lazy only once Lab 01 (no mamba-ssm) is done and
    before Lab 08 (mamba-ssm), skip never (it installs the Python parts instead); anything else is refused. The
    stand-in python logs every call: the build's first is its GPU-capability query; the stand-in cannot build,
    so the build fails."""
    for mode in (None, "lazy", "skip"):
        r, summary, calls = _gpu_validate(tmp_path / (mode or "default"), mode)
        build = [i for i, c in enumerate(calls) if "get_device_capability" in c]
        nbval_01 = next(i for i, c in enumerate(calls) if "pytest" in c and "01_kernel_trick" in c)
        nbval_08 = next(i for i, c in enumerate(calls) if "pytest" in c and "08_mamba_selective_scan" in c)
        build_lines = [line for line in summary if "mamba-ssm CUDA build" in line]
        python_only = [c for c in calls if c.startswith("[MAMBA_SKIP_CUDA_BUILD] -m pip install")
                       and "mamba_ssm-0.tar.gz" in c]
        if mode == "skip":  # no build, but mamba-ssm's Python parts (Lab 00 imports it; a fresh GPU run failed)
            assert not build and not build_lines, (calls, summary)
            assert len(python_only) == 1 and calls.index(python_only[0]) < nbval_01, calls
            continue
        assert not python_only, calls
        assert len(build) == 1 and build[0] < nbval_08 and len(build_lines) == 1, (mode, calls, summary)
        if mode == "lazy":
            assert nbval_01 < build[0], calls
    r, _, _ = _gpu_validate(tmp_path / "bad", "later")
    assert r.returncode == 2 and "MAMBA_BUILD must be background, lazy or skip" in r.stderr
