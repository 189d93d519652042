"""Grading a class: every submission in parallel, a gradebook, feedback per student, a summary.

    python -m course_utils.gradebook SUBMISSIONS OUT [--workers N] [--scheduler tcp://host:8786]
                                     [--timeout 60] [--load-timeout 120] [--memory 2GiB] [--exercises 2.2,2.3]

One task per submission (course_utils.gradebook.grade_one.grade_submission), run by a local process pool
(`--workers`, default: one per core) or, for a large class, by a Dask distributed cluster
(`--scheduler`): start `dask scheduler` on one machine and `dask worker tcp://host:8786 --nthreads 1` on
each machine that has this course installed (`make setup`); the notebooks travel with the tasks, so the
workers need no shared folder. Each task starts its own submission process where it runs.

OUT/gradebook.csv      student, lab, exercise, function, status, passed, message, seconds, flags, file
OUT/feedback/NAME.md   the grader's full messages for one student
OUT/summary.txt        the table printed at the end
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from course_utils.gradebook.grade_one import STATUSES, Options, SubmissionResult, grade_submission
from course_utils.gradebook.submissions import SOLUTIONS, Submission, find_submissions, lab_exercises, safe_name

COLUMNS = ("student", "lab", "exercise", "function", "status", "passed", "message", "seconds", "flags", "file")


@dataclass
class Report:
    rows: list[dict[str, Any]]
    submissions: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    workers: str = ""
    cpu_seconds: float = 0.0  # grader and submission processes, summed over the submissions

    @property
    def per_minute(self) -> float:
        return 60 * self.submissions / self.seconds if self.seconds else 0.0


def _init_pool() -> None:
    import torch

    torch.set_num_threads(1)


def _failed_task(sub: Submission, exercises: list[tuple[str, str]], exc: BaseException) -> SubmissionResult:
    """Rows for a submission whose task itself failed (the grader's fault, or a lost pool/cluster worker)."""
    message = f"the grading task failed: {type(exc).__name__}: {exc}"
    return SubmissionResult([{"student": sub.student, "lab": sub.lab, "exercise": e, "function": f,
                              "status": "grader error", "passed": False, "message": message, "seconds": 0.0,
                              "flags": "", "feedback": message, "file": sub.relpath} for e, f in exercises], 0.0, 0.0)


def _tasks(subs: list[Submission], labs: dict[str, list[tuple[str, str]]], options: Options
           ) -> list[tuple[Submission, bytes, list[tuple[str, str]]]]:
    tasks = []
    for sub in subs:
        exercises = [(e, f) for e, f in labs[sub.lab] if options.exercises is None or e in options.exercises]
        if exercises:
            tasks.append((sub, sub.path.read_bytes(), exercises))  # read once, here: the workers get bytes
    return tasks


def _run_local(tasks: list[Any], options: Options, workers: int, progress: Any) -> Iterable[SubmissionResult]:
    import multiprocessing

    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_pool) as pool:
        futures = {pool.submit(grade_submission, sub, content, exs, options): (sub, exs) for sub, content, exs in tasks}
        for future in as_completed(futures):
            sub, exs = futures[future]
            try:
                yield future.result()
            except BaseException as exc:  # noqa: BLE001 — a pool process died: this submission's rows say so
                yield _failed_task(sub, exs, exc)
            progress.update(1)


def _run_dask(tasks: list[Any], options: Options, scheduler: str, progress: Any) -> Iterable[SubmissionResult]:
    from distributed import Client
    from distributed import as_completed as dask_completed

    with Client(scheduler, timeout="30s") as client:
        futures = {}
        for sub, content, exs in tasks:
            future = client.submit(grade_submission, sub, content, exs, options, pure=False, retries=1,
                                   key=f"grade-{safe_name(sub.student)}-{sub.lab}-{os.urandom(4).hex()}")
            futures[future] = (sub, exs)
        for future in dask_completed(list(futures)):
            sub, exs = futures[future]
            try:
                yield future.result()
            except BaseException as exc:  # noqa: BLE001
                yield _failed_task(sub, exs, exc)
            progress.update(1)


def grade_folder(submissions: str | Path, out: str | Path, workers: int | None = None, scheduler: str | None = None,
                 options: Options = Options(), progress: bool = True, solutions: Path = SOLUTIONS,
                 echo: bool = True) -> Report:
    """Grade every submission under `submissions`; write the gradebook, feedback and summary under `out`."""
    from tqdm import tqdm

    labs = lab_exercises(solutions)
    subs, skipped = find_submissions(submissions, list(labs))
    tasks = _tasks(subs, labs, options)
    workers = workers or os.cpu_count() or 1
    where = f"Dask cluster {scheduler}" if scheduler else f"{workers} local worker{'s' * (workers > 1)}"
    start = time.monotonic()
    rows: list[dict[str, Any]] = []
    cpu = 0.0
    with tqdm(total=len(tasks), unit="notebook", desc="grading", disable=not progress, file=sys.stderr) as bar:
        results = _run_dask(tasks, options, scheduler, bar) if scheduler else _run_local(tasks, options, workers, bar)
        for result in results:
            rows.extend(result.rows)
            cpu += result.cpu_seconds
    report = Report(_sorted(rows, labs), len(tasks), skipped, time.monotonic() - start, where, cpu)
    write_outputs(report, Path(out))
    if echo:
        print(summary(report))
    return report


def _sorted(rows: list[dict[str, Any]], labs: dict[str, list[tuple[str, str]]]) -> list[dict[str, Any]]:
    order = {(lab, e, f): i for lab, exs in labs.items() for i, (e, f) in enumerate(exs)}
    return sorted(rows, key=lambda r: (r["student"], r["lab"], order.get((r["lab"], r["exercise"], r["function"]), 0)))


# ---------------------------------------------------------------------------------------------- outputs


def write_outputs(report: Report, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "gradebook.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in report.rows:
            writer.writerow({**row, "passed": "yes" if row["passed"] else "no"})
    feedback = out / "feedback"
    feedback.mkdir(exist_ok=True)
    by_student: dict[str, list[dict[str, Any]]] = {}
    for row in report.rows:
        by_student.setdefault(row["student"], []).append(row)
    for student, rows in by_student.items():
        (feedback / f"{safe_name(student)}.md").write_text(feedback_markdown(student, rows), encoding="utf-8")
    (out / "summary.txt").write_text(summary(report) + "\n", encoding="utf-8")


def _fence(text: str) -> str:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return f"{ticks}text\n{text}\n{ticks}"


def feedback_markdown(student: str, rows: list[dict[str, Any]]) -> str:
    """One student's results: a table, then each exercise's full grader message."""
    passed = sum(r["passed"] for r in rows)
    lines = [f"# Feedback for {student}", "", f"{passed} of {len(rows)} exercises passed.", "",
             "| lab | exercise | function | result |", "|---|---|---|---|"]
    lines += [f"| {r['lab']} | {r['exercise']} | `{r['function']}` | {r['status']}"
              + (" (flagged)" if r["flags"] else "") + " |" for r in rows]
    for lab in dict.fromkeys(r["lab"] for r in rows):
        lines += ["", f"## {lab}"]
        for r in (r for r in rows if r["lab"] == lab):
            lines += ["", f"### Exercise {r['exercise']} — `{r['function']}`: {r['status']}", "",
                      _fence(r.get("feedback") or r["message"])]
            if r["flags"]:
                lines += ["", f"**Flagged:** {r['flags']}"]
    return "\n".join(lines) + "\n"


def summary(report: Report) -> str:
    """A table per (lab, exercise, function) of how many submissions got each status."""
    counts: dict[tuple[str, str, str], Counter] = {}
    for r in sorted(report.rows, key=lambda r: r["lab"]):  # rows come by student; the table goes by lab
        counts.setdefault((r["lab"], r["exercise"], r["function"]), Counter())[r["status"]] += 1
    flagged = Counter((r["lab"], r["exercise"], r["function"]) for r in report.rows if r["flags"])
    shown = [s for s in STATUSES if s in ("passed", "failed", "not attempted")
             or any(c[s] for c in counts.values())]
    head = ["lab", "exercise", "function", *shown, "flagged"]
    body = [[lab, ex, fn, *(str(c[s]) for s in shown), str(flagged[(lab, ex, fn)])]
            for (lab, ex, fn), c in counts.items()]
    total = Counter(r["status"] for r in report.rows)
    body.append(["total", "", "", *(str(total[s]) for s in shown), str(sum(flagged.values()))])
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    students = len({r["student"] for r in report.rows})
    lines = [fmt(head), fmt(["-" * w for w in widths]), *map(fmt, body[:-1]), fmt(["-" * w for w in widths]),
             fmt(body[-1]), "",
             f"{report.submissions} notebooks of {students} students graded in {report.seconds:.0f} s on "
             f"{report.workers}: {report.per_minute:.1f} notebooks/min; "
             f"{report.cpu_seconds / max(report.submissions, 1):.1f} CPU s per notebook"]
    for path, why in report.skipped:
        lines.append(f"not graded: {path} ({why})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- CLI


def parse_bytes(text: str) -> int:
    """'2GiB', '512MiB', '2G', '1500000000' -> bytes."""
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)(i?B?)\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 2GiB, 512MiB)")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils.gradebook", description=__doc__.splitlines()[0])
    parser.add_argument("submissions", type=Path, help="folder of notebooks: alice_02_causal_rnn.ipynb or "
                                                       "alice/02_causal_rnn.ipynb")
    parser.add_argument("out", type=Path, help="where gradebook.csv, feedback/ and summary.txt go")
    parser.add_argument("--workers", type=int, default=None, help="local processes (default: one per core)")
    parser.add_argument("--scheduler", default=None, help="a Dask scheduler address, e.g. tcp://host:8786")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per exercise (default 60)")
    parser.add_argument("--load-timeout", type=float, default=120.0, help="seconds to load a notebook")
    parser.add_argument("--memory", type=parse_bytes, default=2 * 2**30, help="per submission (default 2GiB)")
    parser.add_argument("--exercises", default=None, help="only these exercise ids, comma-separated")
    parser.add_argument("--device", default="cpu", help="device the engine grades on (default cpu)")
    parser.add_argument("--start", choices=("fork", "exec"), default="fork",
                        help="submission processes forked from a preloaded server (default) or fresh interpreters")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if not args.submissions.is_dir():
        parser.error(f"{args.submissions} is not a folder")
    options = Options(timeout=args.timeout, load_timeout=args.load_timeout, memory=args.memory, device=args.device,
                      exercises=tuple(args.exercises.split(",")) if args.exercises else None, start=args.start)
    report = grade_folder(args.submissions, args.out, args.workers, args.scheduler, options,
                          progress=not args.no_progress)
    if not report.rows:
        print(f"no submissions found in {args.submissions}", file=sys.stderr)
        return 1
    print(f"gradebook: {args.out / 'gradebook.csv'}   feedback: {args.out / 'feedback'}")
    return 2 if any(r["status"] == "grader error" for r in report.rows) else 0
