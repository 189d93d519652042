"""The tests every exercise family runs, imported by each tests/exercises/test_<family>.py (which lists its
exercise ids in IDS; conftest.pytest_generate_tests parametrizes these from it)."""

from __future__ import annotations

from conftest import assert_rejected, assert_solution_passes, solution

from course_utils.exercises import grade
from course_utils.grading.generic import BF16


def test_solution_passes(ex_id, capsys):
    """Every function the solution notebook grades for ex_id passes, with a ✅ line naming ex_id and it."""
    assert_solution_passes(ex_id, capsys)


def test_solution_passes_in_bf16(ex_id, capsys):
    grade(ex_id, solution(ex_id), **BF16)
    assert "bfloat16" in capsys.readouterr().out


def test_mistake_is_rejected(ex_id, mistake):
    """One test per catalogued mistake: rejected, with its hint in the message."""
    assert_rejected(ex_id, mistake)
