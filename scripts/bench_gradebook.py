"""Throughput of `make grade` on this machine, and what it means for a class of 300 students x 10 labs.

    .venv/bin/python scripts/bench_gradebook.py [--students 8] [--workers N] [--start fork|exec]

Generates a class — per student labs 01-03 as complete notebooks: the solutions, with one exercise in
three replaced by a catalogued mistake so that failures (and their diagnosis) are paid for too — grades
every exercise of every lab with the CLI's defaults, and prints notebooks per minute (wall clock, on this
machine as loaded now: the load average is printed beside it) and CPU seconds per notebook (the grader's
process and the submission's, summed: what a projection to more cores should use). Labs 04-10 are
projected at the cost of labs 01-03. Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLASS_STUDENTS, CLASS_LABS = 300, 10


def make_class(root: Path, students: int) -> int:
    import nbformat

    from course_utils.exercises import get
    from course_utils.gradebook import lab_exercises

    n = 0
    for lab, exercises in lab_exercises(ROOT / "solutions").items():
        if lab[:2] not in ("01", "02", "03"):
            continue
        for s in range(students):
            nb = nbformat.read(str(ROOT / "solutions" / f"{lab}.ipynb"), as_version=4)
            if s % 3 == 2:  # every third student hands in one catalogued mistake
                ex, fn = exercises[s % len(exercises)]
                names = [m.name for m in get(ex).mistakes if isinstance(m.hint, str)]
                if names:
                    nb.cells.append(nbformat.v4.new_code_cell(textwrap.dedent(f'''
                        def {fn}(*args, **kwargs):
                            from course_utils.exercises import get
                            wrong = next(m for m in get({ex!r}).mistakes if m.name == {names[0]!r}).wrong_fn
                            return wrong(*args, **kwargs)
                        ''').strip()))
            nbformat.write(nb, str(root / f"student{s:03d}_{lab}.ipynb"))
            n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=8)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--start", choices=("fork", "exec"), default="fork")
    args = parser.parse_args()

    import course_utils  # noqa: F401
    from course_utils.gradebook import Options, grade_folder

    tmp = Path(tempfile.mkdtemp(prefix="bench-gradebook-"))
    try:
        (tmp / "class").mkdir()
        n = make_class(tmp / "class", args.students)
        load0 = os.getloadavg()[0]
        t0 = time.monotonic()
        report = grade_folder(tmp / "class", tmp / "out", workers=args.workers, options=Options(start=args.start),
                              progress=True, echo=False)
        wall = time.monotonic() - t0
        load1 = os.getloadavg()[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    statuses = {s: sum(r["status"] == s for r in report.rows) for s in dict.fromkeys(r["status"] for r in report.rows)}
    cpu = report.cpu_seconds / max(n, 1)
    per_min = 60 * n / wall
    total = CLASS_STUDENTS * CLASS_LABS
    cores = os.cpu_count() or 1
    print(f"graded {n} notebooks (labs 01-03, every exercise; {statuses}) in {wall:.0f} s with {args.workers} "
          f"workers, start={args.start}, on {cores} cores (load average {load0:.1f} before, {load1:.1f} after)")
    print(f"throughput here: {per_min:.1f} notebooks/min (start-up of the pool included); "
          f"{cpu:.1f} CPU s per notebook (grader + submission processes)")
    print(f"{CLASS_STUDENTS} students x {CLASS_LABS} labs = {total} notebooks:")
    print(f"  at the rate measured here:         {total / per_min / 60:.1f} h")
    for machines, per in ((1, cores), (1, 16), (4, 16), (16, 16)):
        hours = total * cpu / (machines * per) / 3600
        print(f"  CPU-bound, {machines:>2} machine(s) x {per:>2} cores: {hours * 60:.0f} min")


if __name__ == "__main__":
    main()
