"""environment.yml (conda) and requirements.txt (venv) pin the same stack."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pins(lines):
    return {line.strip() for line in lines if "==" in line and not line.lstrip().startswith("#")}


def test_conda_and_venv_pins_agree():
    req = pins((ROOT / "requirements.txt").read_text().splitlines())
    yml = pins(line.strip().removeprefix("- ") for line in (ROOT / "environment.yml").read_text().splitlines()
               if line.strip().startswith("- ") and "==" in line)
    assert req == yml, f"only in requirements.txt: {req - yml}; only in environment.yml: {yml - req}"
    for must in ("torch==2.13.0", "flash-linear-attention==0.6.0", "fla-core==0.6.0"):
        assert must in req


def test_everything_is_pinned_exactly():
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert "==" in line, f"unpinned requirement: {line!r} (an unpinned torch pulls a multi-GB CUDA build)"
