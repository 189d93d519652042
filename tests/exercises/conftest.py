"""Fixtures of the exercise tests: the correct implementations, taken from the solution notebooks.

A solution and its test can never drift apart: what `grade("2.2", fn)` grades in solutions/02_*.ipynb is
what these tests call correct.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Callable

import pytest

from course_utils.authoring import SOLUTIONS
from course_utils.exercises import EXERCISES, grade
from course_utils.grading.generic import CPU, catalogue
from course_utils.grading.spec import Mistake
from course_utils.notebook_functions import graded_functions


@lru_cache(maxsize=None)
def solution_functions() -> dict[str, list[Callable[..., Any]]]:
    """{exercise id: the functions the solution notebooks grade for it}."""
    found: dict[str, list[Callable[..., Any]]] = {}
    for path in sorted(SOLUTIONS.glob("*.ipynb")):
        for ex_id, fns in graded_functions(path).items():
            found.setdefault(ex_id, []).extend(fns)
    return found


def solution(ex_id: str) -> Callable[..., Any]:
    """The (first) function the solutions grade for ex_id."""
    return solution_functions()[ex_id][0]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def catalogue_params(ids: list[str]) -> list[Any]:
    """pytest params (exercise id, mistake) with readable ids such as "2.2-state_misses_last"."""
    return [pytest.param(ex_id, m, id=f"{ex_id}-{slug(m.name)}")
            for ex_id in ids for m in catalogue(EXERCISES[ex_id], solution(ex_id))]


def assert_rejected(ex_id: str, mistake: Mistake) -> str:
    """grade() must reject the mistake's wrong implementation, and its message must say what the mistake
    says (its hint, or the pieces listed in `says`). Returns the message."""
    options = mistake.options or CPU
    try:
        grade(ex_id, mistake.wrong_fn, quiet=True, **options)
    except AssertionError as exc:
        message = str(exc)
    else:
        raise AssertionError(f"{ex_id}: the mistake {mistake.name!r} passed the grader")
    absent = [piece for piece in mistake.expected_message() if piece not in message]
    assert not absent, f"{ex_id}: the message for {mistake.name!r} lacks {absent}:\n{message}"
    return message


def assert_solution_passes(ex_id: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Every function the solutions grade for ex_id passes, and the ✅ line names the exercise and it."""
    for fn in solution_functions()[ex_id]:
        grade(ex_id, fn, **CPU)
        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == f"✅ Exercise {ex_id} passed: {fn.__name__}"
        assert lines[1].startswith("   details: ") and len(lines) == 2


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A family's test module lists its exercise ids in IDS; a test asking for `ex_id` runs once per id, and
    one asking for `ex_id, mistake` once per catalogued mistake (unless it parametrizes them itself)."""
    ids = getattr(metafunc.module, "IDS", None)
    explicit = {name for m in metafunc.definition.iter_markers("parametrize")
                for name in (m.args[0].split(",") if isinstance(m.args[0], str) else m.args[0])}
    explicit = {n.strip() for n in explicit}
    if ids is None or explicit & {"ex_id", "mistake"}:
        return
    if "mistake" in metafunc.fixturenames:
        metafunc.parametrize("ex_id, mistake", catalogue_params(ids))
    elif "ex_id" in metafunc.fixturenames:
        metafunc.parametrize("ex_id", ids)
