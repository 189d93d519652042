"""The Colab path, tested without Colab: scripts/colab_sim.py runs every notebook's setup cell, then notebook 00,
in a venv standing in for Colab's runtime (a torch that is not the course's pin, transformers 4.x, a fake
google.colab), with course_utils installed from this working tree instead of the release tag.

The simulated runtime (about 6 GB, 1.5-2.5 minutes to build) is cached in build/colab-sim (or $COLAB_SIM_DIR)
and rebuilt only when its recipe in colab_sim.py changes; each test works on a hard-linked copy of it, so the
setup cell always installs into a runtime that has never seen the course. The setup cell's pip uses pip's
download cache (~/.cache/pip); `scripts/colab_sim.py --cold` measures an install without it.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from course_utils import project

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("COLAB_SIM_DIR", ROOT / "build" / "colab-sim"))


def simulate(tmp_path: Path, *args: str) -> dict:
    report = tmp_path / "report.json"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "colab_sim.py"), "--keep", str(CACHE),
                        "--json", str(report), *args], cwd=ROOT, capture_output=True, text=True, timeout=1500)
    print(r.stdout[-6000:])  # shown by pytest when a test fails: times, pip's changes, the setup cell's output
    assert report.exists(), f"colab_sim.py crashed (exit status {r.returncode}):\n{r.stdout[-4000:]}{r.stderr[-4000:]}"
    result = json.loads(report.read_text())
    failed = [name for name, ok in result["checks"].items() if not ok]
    assert r.returncode == 0 and not failed, f"failed checks: {failed}\n{r.stdout[-4000:]}{r.stderr[-2000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    return simulate(tmp_path_factory.mktemp("colab"))


def test_setup_cell_installs_the_course_and_notebook_00_runs(installed):
    r = installed
    assert r["errors"] == [], r["errors"]
    assert r["kernel_after_setup"]["is_colab"] and "Google Colab" in r["setup_cell_output"]
    assert "fla/__init__.py" in r["kernel_after_setup"]["fla"]
    assert "mamba_ssm/__init__.py" in r["kernel_after_setup"]["mamba_ssm"]
    for dist in ("course-utils", "flash-linear-attention", "fla-core", "mamba-ssm"):
        assert r["installed_changes"][dist][0] is None, f"{dist} was there before the setup cell"
    assert f"flash-linear-attention-{project.FLA_VERSION}" in r["setup_cell_output"]
    assert f"Successfully installed mamba-ssm-{project.MAMBA_VERSION}" in r["setup_cell_output"]
    assert r["install_seconds_printed"] is not None  # the cell says how long the install took


def test_colab_torch_is_untouched(installed):
    r = installed
    before, after = r["torch_version"]
    assert before == after and not before.startswith("2.13.0"), "the simulation needs a torch other than the pin"
    assert r["before"]["torch_file"] == r["after"]["torch_file"] == r["kernel_after_setup"]["torch_file"]
    assert r["before"]["torch_files"] == r["after"]["torch_files"]  # same inode, mtime and size: not rewritten
    assert "torch" not in r["installed_changes"] and "triton" not in r["installed_changes"]
    assert r["kernel_after_setup"]["torch"].startswith(before)


def test_transformers_4_is_upgraded_and_pip_says_what_that_breaks(installed):
    # fla 0.6.0 requires transformers>=5.6.2,<6: Colab's transformers 4.x is replaced, and pip's resolver
    # warning about Colab packages that need transformers 4 (here sentence-transformers) reaches the notebook.
    old, new = installed["transformers_version"]
    assert old.startswith("4.") and new.startswith("5.")
    assert installed["kernel_after_setup"]["transformers"] == new
    assert any(line.startswith("sentence-transformers") and "transformers" in line
               for line in installed["pip_conflicts"]), installed["setup_cell_output"]


def test_failed_install_stops_the_cell_and_shows_pips_error(tmp_path):
    r = simulate(tmp_path, "--fail")  # course_utils at a tag that does not exist
    assert len(r["errors"]) == 1 and "CalledProcessError" in r["errors"][0]
    out = r["setup_cell_output"]
    assert "did not match any file(s) known to git" in out  # git's message, relayed by pip
    assert "error: subprocess-exited-with-error" in out  # pip's own
    assert r["installed_changes"] == {} and not r["after"]["importable"]["fla"]
