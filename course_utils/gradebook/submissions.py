"""Which notebooks a folder of submissions holds, whose they are, and which exercises each lab grades.

Two layouts, also mixed in one folder:

    SUBMISSIONS/alice_02_causal_rnn.ipynb         <student><sep><lab>.ipynb   (sep: _ - . or a space)
    SUBMISSIONS/alice/02_causal_rnn.ipynb         <student>/.../<anything ending in the lab's name>.ipynb

A lab is a notebook of solutions/ with graded cells; its exercises are the (id, function) pairs of its
`grade("N.M", fn)` calls, read from the course's own copy (never from the submission, which may have
deleted a graded cell). Hidden folders (.ipynb_checkpoints) are skipped; a file matching no lab, or a
second notebook of the same student and lab, is reported, not graded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

from course_utils.notebook_functions import grade_calls

SOLUTIONS = Path(__file__).resolve().parents[2] / "solutions"
_SEPARATORS = "_-. "


@dataclass(frozen=True)
class Submission:
    """One student's notebook for one lab. path: where it is; relpath: how reports name it."""

    student: str
    lab: str
    path: Path
    relpath: str


def lab_exercises(solutions: Path = SOLUTIONS) -> dict[str, list[tuple[str, str]]]:
    """{lab: [(exercise id, function name), ...]} in notebook order, for every lab with graded cells."""
    labs: dict[str, list[tuple[str, str]]] = {}
    for path in sorted(solutions.glob("*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        calls = [c for cell in nb.cells if cell.cell_type == "code" for c in grade_calls(cell.source)]
        if calls:
            labs[path.stem] = calls
    return labs


def _match_lab(stem: str, labs: list[str]) -> tuple[str, str] | None:
    """(lab, what precedes it) for a file stem ending in a lab's name; the longest lab name wins."""
    for lab in sorted(labs, key=len, reverse=True):
        if stem == lab:
            return lab, ""
        if stem.endswith(lab) and stem[-len(lab) - 1] in _SEPARATORS:
            return lab, stem[:-len(lab) - 1].rstrip(_SEPARATORS)
    return None


def safe_name(name: str) -> str:
    """A student's name as a file name (feedback/<name>.md)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "student"


def find_submissions(root: str | Path, labs: list[str]) -> tuple[list[Submission], list[tuple[str, str]]]:
    """(submissions sorted by student and lab, [(file, why it is not graded), ...])."""
    root = Path(root)
    found: dict[tuple[str, str], Submission] = {}
    skipped: list[tuple[str, str]] = []
    for path in sorted(root.rglob("*.ipynb")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        match = _match_lab(path.stem, labs)
        if match is None:
            skipped.append((str(rel), f"no lab matches the name (labs: {', '.join(labs)})"))
            continue
        lab, prefix = match
        student = rel.parts[0] if len(rel.parts) > 1 else prefix
        if not student:
            skipped.append((str(rel), "no student in the name: expected <student>_<lab>.ipynb or "
                                      "<student>/<lab>.ipynb"))
            continue
        key = (student, lab)
        if key in found:
            skipped.append((str(rel), f"a second notebook for {student} / {lab} (graded: {found[key].relpath})"))
            continue
        found[key] = Submission(student, lab, path, str(rel))
    return [found[k] for k in sorted(found)], skipped
