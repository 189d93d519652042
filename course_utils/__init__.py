"""course_utils — the map of the Chapter 6 labs.

| module            | concern                                                                  |
|-------------------|--------------------------------------------------------------------------|
| env               | where we run (CPU / CUDA / Colab), Triton interpreter, seeds, sizes      |
| conventions       | the one layout/scale/gate/state convention everything follows            |
| mamba_import      | importing mamba-ssm without its compiled CUDA extension (one workaround) |
| refs              | reference adapters over fla and mamba-ssm, one function per operation    |
| grading           | the engine: seeded cases, structure/value checks, diagnosis from a       |
|                   | catalogue of mistakes                                                     |
| exercises         | the exercises, one module per operation family; grade("N.M", fn)         |
| feature_maps      | φ maps taught in the notebooks, kept once for the later ones             |
| inputs            | make_inputs: random q, k, v in the course layout (taught in lab 02)      |
| bench             | timing and memory measurements that print figures                         |
| plots, widgets    | figures and interactive explorers used by the notebooks                   |
| progress          | every grade() outcome kept locally; progress() prints the report card     |
| checkmine         | `make check-mine`: runs your notebooks in my-labs/ and grades them        |
| notebook_functions| a notebook's definitions without running it: what each grade() grades    |
| gradebook         | `make grade`: a class's notebooks graded outside the students' processes  |
| authoring         | solutions → labs, leak checks, badges, executing notebooks                |
| project           | repository name, release tag and pins (one place)                         |
"""

from course_utils.env import configure_triton as _configure_triton

# Before anything imports fla or mamba-ssm (which define Triton kernels at import time).
_configure_triton()

from course_utils.env import Env, get_env, seed_everything, setup  # noqa: E402

# The submodule is loaded here, before the progress() below is defined: importing a submodule sets the package
# attribute of its name, so a later first import of course_utils.progress would replace the function with the
# module. Code that needs the module imports from it: `from course_utils.progress import record`.
from course_utils.progress import progress as _report_card  # noqa: E402

__all__ = ["Env", "get_env", "grade", "progress", "seed_everything", "setup"]


def grade(exercise_id: str, fn, **options):
    """Check a student's function for exercise `exercise_id` (see course_utils.exercises)."""
    from course_utils.exercises import grade as _grade

    _grade(exercise_id, fn, **options)


def progress() -> None:
    """Print your report card: every exercise of the course, passed / failed / not attempted, with the
    grader's last message for failures (see course_utils.progress)."""
    _report_card()
