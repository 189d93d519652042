"""How many wrong implementations each exercise's grader is shown to reject (the family tests run them)."""

from __future__ import annotations

from conftest import solution

from course_utils.exercises import EXERCISES
from course_utils.grading.generic import catalogue

BEFORE_FAMILIES = 233  # the catalogue's size when exercises were organised by lab


def test_catalogue_sizes(capsys):
    sizes = {ex_id: len(catalogue(EXERCISES[ex_id], solution(ex_id))) for ex_id in sorted(EXERCISES)}
    with capsys.disabled():
        print()
        for ex_id, n in sizes.items():
            own = len(EXERCISES[ex_id].mistakes)
            print(f"  exercise {ex_id:<5} {n:3d} wrong implementations ({own} of its own, {n - own} generic)")
        print(f"  total {sum(sizes.values())}")
    assert all(len(EXERCISES[i].mistakes) >= 3 for i in sizes), "every exercise names its own mistakes"
    assert sum(sizes.values()) >= BEFORE_FAMILIES
