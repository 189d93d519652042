"""The grading engine: checks a student's function against `course_utils.refs` and explains failures.

| module     | concern                                                                          |
|------------|----------------------------------------------------------------------------------|
| spec       | what an exercise is: Case, output structure, Mistake, Exercise, the registry     |
| trial      | one case being graded: calling the function, exceptions, argument mutation       |
| checks     | structure (type, device, dtype, shape) and value checks of a result              |
| diagnosis  | naming the mistake: the catalogue's wrong implementations, then the numbers      |
| engine     | expected values, running the cases and gradients, grade()                        |

A failure raises AssertionError that reads like a reviewer's note: the case, expected vs got shapes, the
relative RMS error and the worst row, the first wrong position (b, t, h, :) with both values side by
side, and a hint. A stub that raises NotImplementedError is re-raised unchanged. Exercises themselves
live in course_utils/exercises/, one module per operation family.
"""

from course_utils.grading.engine import Reference, Result, evaluate, grade
from course_utils.grading.spec import (
    REGISTRY,
    Case,
    Exercise,
    Failure,
    IntOut,
    Mistake,
    TensorOut,
    TupleOut,
    register,
)
from course_utils.grading.trial import Trial, check_not_mutated, fail

__all__ = [
    "REGISTRY",
    "Case",
    "Exercise",
    "Failure",
    "IntOut",
    "Mistake",
    "Reference",
    "Result",
    "TensorOut",
    "Trial",
    "TupleOut",
    "check_not_mutated",
    "evaluate",
    "fail",
    "grade",
    "register",
]
