"""Every real notebook follows the anatomy: badge to itself, setup cell, title, objectives, prerequisites."""

import re
from pathlib import Path

import nbformat
import pytest

from course_utils import authoring, project

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "solutions").glob("*.ipynb")) + sorted((ROOT / "labs").glob("*.ipynb"))


def test_there_are_notebooks_and_matching_labs():
    sols = {p.name for p in (ROOT / "solutions").glob("*.ipynb")}
    labs = {p.name for p in (ROOT / "labs").glob("*.ipynb")}
    assert "00_setup.ipynb" in sols and sols == labs


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_anatomy(path):
    nb = nbformat.read(path, as_version=4)
    rel = path.relative_to(ROOT).as_posix()
    assert authoring.badge_target(nb) == rel, f"{rel}: the Colab badge must open this notebook"
    assert project.REPO in nb.cells[0].source
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    intro = nb.cells[1].source.lower()
    assert "you will learn" in intro and "prerequisites" in intro, f"{rel}: cell 1 needs objectives + prerequisites"
    setup_cells = [c for c in nb.cells if "setup" in c.metadata.get("tags", [])]
    assert len(setup_cells) == 1 and setup_cells[0].source == authoring.SETUP_CELL, f"{rel}: run `make badges`"
    assert nb.cells.index(setup_cells[0]) == 2, f"{rel}: the setup cell comes first among code cells"
    assert nb.metadata.kernelspec.name == "python3"
    assert nb.metadata.get("accelerator") == "GPU" and nb.metadata.colab.get("gpuType") == "T4"


def test_setup_cell_pins_match_requirements():
    reqs = (ROOT / "requirements.txt").read_text()
    assert f"flash-linear-attention=={project.FLA_VERSION}" in reqs
    assert f"fla-core=={project.FLA_VERSION}" in reqs
    assert f"mamba-ssm=={project.MAMBA_VERSION}" in (ROOT / "Makefile").read_text()
    assert f"@{project.TAG}" in authoring.SETUP_CELL and "check=True" in authoring.SETUP_CELL
    # Colab's torch/triton must never be replaced by the setup cell
    assert '"torch' not in authoring.SETUP_CELL and '"triton' not in authoring.SETUP_CELL


def test_readme_badges_open_existing_notebooks():
    readme = (ROOT / "README.md").read_text()
    prefix = f"https://colab.research.google.com/github/{project.REPO}/blob/{project.BRANCH}/"
    targets = re.findall(re.escape(prefix) + r"([^)]+)\)", readme)
    assert len(targets) >= 2 * len(list((ROOT / "solutions").glob("*.ipynb"))), "a notebook lacks README badges"
    for t in targets:
        assert (ROOT / t).exists(), f"README badge points at a missing notebook: {t}"


# Glyphs that Chromium's default fonts lack and draw as an empty box (found by a student in Lab 00's checklist;
# course_utils.checklist uses "○" instead). Checked in every cell's source and stored output.
MISSING_GLYPHS = ("⏭",)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_glyph_the_default_fonts_lack(path):
    text = path.read_text(encoding="utf-8")
    found = [g for g in MISSING_GLYPHS if g in text]
    assert not found, f"{path.name} prints {found}, drawn as an empty box in Chromium: use '○' (checklist.SKIPPED)"
