"""One submission's verdicts, decided here: the engine grades proxies of the student's functions.

`grade_submission` copies the notebook into a private temporary folder (the submission itself is only read),
starts its worker, and for each exercise of the lab runs `engine.evaluate` — unchanged — on a proxy
(course_utils.gradebook.trusted). One row per (exercise, function):

    status          passed | failed | not attempted | timed out | out of memory | crashed | grader error
    message         the grader's first line (the reason, for the last four)
    feedback        the grader's full message (Markdown feedback)
    flags           what passed but deserves a look ("uses course_utils.refs: linear_attn.linear_attention")

A worker that is lost (timeout, memory, exit, signal, protocol) costs its exercise only: the next exercise
starts a fresh worker. A notebook that cannot be loaded at all (it exits, loops or blows up while loading)
gets that reason on every row.
"""

from __future__ import annotations

import dataclasses
import linecache
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from course_utils.gradebook.submissions import Submission
from course_utils.gradebook.trusted import SubmissionExit, Worker, WorkerLost, make_proxy, remote_checks

STATUSES = ("passed", "failed", "not attempted", "timed out", "out of memory", "crashed", "grader error")
_LOST_STATUS = {"timeout": "timed out", "memory": "out of memory", "crash": "crashed", "protocol": "failed"}


@dataclass(frozen=True)
class Options:
    """timeout: seconds per exercise (all its cases); load_timeout: seconds to load the notebook; memory:
    bytes per worker; device/dtypes: what the engine grades on (None: course_utils.env's); exercises: grade
    only these ids (None: all); start: how a worker process starts (see trusted.Worker)."""

    timeout: float = 60.0
    load_timeout: float = 120.0
    memory: int = 2 * 2**30
    device: str | None = "cpu"
    dtypes: tuple[str, ...] | None = ("float32",)
    exercises: tuple[str, ...] | None = None
    start: str = "fork"  # "fork": from the fork server (imports done once); "exec": a fresh interpreter each


def _row(sub: Submission, ex_id: str, fn: str, status: str, message: str, seconds: float,
         feedback: str = "", flags: str = "") -> dict[str, Any]:
    return {"student": sub.student, "lab": sub.lab, "exercise": ex_id, "function": fn, "status": status,
            "passed": status == "passed", "message": message.splitlines()[0] if message else "",
            "seconds": round(seconds, 2), "flags": flags, "feedback": feedback or message, "file": sub.relpath}


def _register_sources(content: bytes, display: str) -> list[str]:
    """The notebook's cells in linecache under the names the worker compiles them with, so that the
    student's line shows in messages. Parsing JSON runs none of the submission's code."""
    import nbformat

    names = []
    try:
        nb = nbformat.reads(content.decode("utf-8", errors="replace"), as_version=4)
    except Exception:  # noqa: BLE001 — the worker reports an unreadable notebook
        return names
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        source = "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in cell.source.splitlines())
        name = f"{display}#cell{i}"
        linecache.cache[name] = (len(source), None, [ln + "\n" for ln in source.splitlines()], name)
        names.append(name)
    return names


@dataclass
class SubmissionResult:
    """The rows of one submission, and what grading it cost: wall and CPU seconds (the grader's process and
    the submission's, start-up included)."""

    rows: list[dict[str, Any]]
    seconds: float
    cpu_seconds: float


def grade_submission(sub: Submission, content: bytes, exercises: list[tuple[str, str]],
                     options: Options = Options()) -> SubmissionResult:
    """Grade one notebook (its bytes: the submission is never opened for writing). Never raises for
    anything the submission does."""
    torch.set_num_threads(1)  # one submission per core: the parallelism is across submissions
    wall0, cpu0, worker_cpu = time.monotonic(), time.process_time(), 0.0
    if options.exercises is not None:
        exercises = [(e, f) for e, f in exercises if e in options.exercises]
    display = Path(sub.relpath).as_posix()  # "alice/02_causal_rnn.ipynb": how messages name the cells
    sources = _register_sources(content, display)
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="gradebook-") as tmp:
            copy = Path(tmp) / "submission" / Path(sub.relpath).name
            copy.parent.mkdir()
            copy.write_bytes(content)
            copy.chmod(0o444)
            worker: Worker | None = None
            load_failure: tuple[str, str] | None = None
            try:
                for ex_id, fn in exercises:
                    start = time.monotonic()
                    if load_failure is not None:
                        rows.append(_row(sub, ex_id, fn, load_failure[0], load_failure[1], 0.0))
                        continue
                    if worker is None:
                        worker = Worker(copy, display, options.memory, Path(tmp), options.start)
                        try:
                            worker.start(options.load_timeout)
                        except WorkerLost as lost:
                            load_failure = (_LOST_STATUS[lost.kind], lost.reason)
                            worker.close()
                            worker_cpu += worker.cpu_used
                            worker = None
                            rows.append(_row(sub, ex_id, fn, load_failure[0], load_failure[1], 0.0))
                            continue
                        start = time.monotonic()
                    rows.append(grade_exercise(worker, sub, ex_id, fn, options, start))
                    if worker.lost is not None:
                        worker.close()
                        worker_cpu += worker.cpu_used
                        worker = None
            finally:
                if worker is not None:
                    worker.close()
                    worker_cpu += worker.cpu_used
    finally:
        for name in sources:
            linecache.cache.pop(name, None)
    return SubmissionResult(rows, time.monotonic() - wall0, time.process_time() - cpu0 + worker_cpu)


def _cell_error(worker: Worker, fn: str) -> str | None:
    for e in worker.cell_errors:
        names, err = e.get("names"), e.get("error") if isinstance(e.get("error"), dict) else {}
        if isinstance(names, list) and fn in names:
            return (f"the cell defining `{fn}` (cell {e.get('cell')}) raised {str(err.get('type'))[:60]} while "
                    f"loading: {str(err.get('message'))[:300]}")
    return None


def grade_exercise(worker: Worker, sub: Submission, ex_id: str, fn: str, options: Options,
                   start: float) -> dict[str, Any]:
    from course_utils.exercises import get
    from course_utils.grading import evaluate

    elapsed = lambda: time.monotonic() - start  # noqa: E731
    try:
        worker.begin(options.timeout)
        info = worker.describe(fn)
        if not info.get("present"):
            broken = _cell_error(worker, fn)
            if broken:
                return _row(sub, ex_id, fn, "failed", broken, elapsed())
            return _row(sub, ex_id, fn, "not attempted", f"not attempted: the notebook defines no `{fn}`", elapsed())
        if not info.get("callable"):
            return _row(sub, ex_id, fn, "failed", f"`{fn}` is a {str(info.get('type'))[:60]}, not a function",
                        elapsed())
        proxy = make_proxy(worker, fn, info)
        device = torch.device(options.device) if options.device else None
        dtypes = [getattr(torch, d) for d in options.dtypes] if options.dtypes else None
        exercise = get(ex_id)
        measured: list[str] = []
        if exercise.extra_checks:
            from course_utils.grading.engine import _env_device_and_dtypes

            env_device, env_dtypes = _env_device_and_dtypes()
            exercise = dataclasses.replace(exercise, extra_checks=remote_checks(
                worker, exercise, fn, proxy.__name__, device or env_device, dtypes or env_dtypes, measured))
        result = evaluate(exercise, proxy, device, dtypes)
    except NotImplementedError as exc:
        return _row(sub, ex_id, fn, "not attempted", f"not attempted (NotImplementedError: {str(exc)[:200]})",
                    elapsed())
    except WorkerLost as lost:
        return _row(sub, ex_id, fn, _LOST_STATUS[lost.kind], lost.reason, elapsed())
    except SubmissionExit as stop:
        return _row(sub, ex_id, fn, "failed", stop.reason, elapsed())
    except Exception:  # noqa: BLE001 — a fault of the grader, reported on this row only
        return _row(sub, ex_id, fn, "grader error", "the grader failed on this exercise (see the feedback file)",
                    elapsed(), feedback=traceback.format_exc() + "\nworker stderr:\n" + worker.stderr_tail())
    if worker.lost is not None:  # lost where the engine could not tell (e.g. inside autograd)
        return _row(sub, ex_id, fn, _LOST_STATUS[worker.lost.kind], worker.lost.reason, elapsed())
    flags = f"uses course_utils.refs: {', '.join(worker.refs_calls)}" if worker.refs_calls else ""
    if not result.passed:
        note = f"\n(flagged: {flags})" if flags else ""
        return _row(sub, ex_id, fn, "failed", result.message, elapsed(), feedback=result.message + note, flags=flags)
    message = f"passed: {result.details}"
    if measured:
        message += f"; how checks ({', '.join(measured)}) measured in the submission's process"
    if flags:
        message += f" — flagged: {flags}"
    feedback = "\n".join([message, *getattr(result, "warnings", ())])
    return _row(sub, ex_id, fn, "passed", message, elapsed(), feedback=feedback, flags=flags)
