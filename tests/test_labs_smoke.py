"""Each student lab runs top to bottom; the only cells that fail are exercise stubs and the cells that
need them, and they fail with NotImplementedError naming the exercise."""

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
LABS = sorted((ROOT / "labs").glob("*.ipynb"))


@pytest.mark.parametrize("path", LABS, ids=lambda p: p.name)
def test_lab_runs_and_fails_only_on_stubs(path):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    exercises = set(re.findall(r"^# Exercise (\d+\.\d+[a-z]?):", "\n".join(c.source for c in nb.cells), re.M))
    failed_exercises = set()
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.output_type != "error":
                continue
            assert out.ename == "NotImplementedError", (
                f"{path.name} cell {i} failed with {out.ename}: {out.evalue}\n{cell.source[:300]}")
            m = re.match(r"Exercise (\d+\.\d+[a-z]?):", out.evalue)
            assert m, f"{path.name} cell {i}: NotImplementedError without the exercise's name: {out.evalue}"
            failed_exercises.add(m.group(1))
    # Every stub must surface as a failure somewhere (its graded cell): a grader never passes a stub.
    assert exercises <= failed_exercises, f"{path.name}: stubs that never failed: {exercises - failed_exercises}"
