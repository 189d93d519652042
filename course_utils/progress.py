"""Your progress: every grade() call's outcome, kept on this machine, and the report card progress() prints.

`course_utils.exercises.grade` records, for each exercise id, the outcome of its latest call: passed, failed
(with the grader's first message line) or not attempted (the exercise is still the stub), the function it
graded and when. The record is a small JSON file, by default `~/.cache/chapter6-labs/progress.json`; the
environment variable CHAPTER6_PROGRESS names another (`make check-mine` points it at a fresh file so that
only its own run counts). Recording never gets in the way of grading: a missing or read-only home, a full
disk or a damaged file only means that this call is not recorded (progress() says why).

    from course_utils import progress
    progress()        # every exercise of the course, lab by lab: ✅ passed, ❌ failed (and why), · not attempted
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

ENV_VAR = "CHAPTER6_PROGRESS"
DEFAULT = Path("~") / ".cache" / "chapter6-labs" / "progress.json"
VERSION = 1

PASSED, FAILED, NOT_ATTEMPTED = "passed", "failed", "not attempted"
# Glyphs that Chromium's default fonts (and a terminal's) render: ✅ as the grader prints, ❌, a middle dot.
GLYPH = {PASSED: "✅", FAILED: "❌", NOT_ATTEMPTED: "·"}

_last_error: str | None = None  # why the latest record could not be saved, for progress() to say


def path() -> Path:
    """Where the record lives: $CHAPTER6_PROGRESS, or ~/.cache/chapter6-labs/progress.json."""
    chosen = os.environ.get(ENV_VAR)
    return Path(chosen).expanduser() if chosen else DEFAULT.expanduser()


def load(where: Path | None = None) -> dict[str, dict[str, Any]]:
    """{exercise id: {"status", "message", "function", "time"}} from the record; {} when there is none."""
    try:
        data = json.loads((where or path()).read_text(encoding="utf-8"))
    except (OSError, ValueError, RuntimeError):  # RuntimeError: no home directory to expand ~ into
        return {}
    exercises = data.get("exercises") if isinstance(data, dict) else None
    return {k: v for k, v in exercises.items() if isinstance(v, dict)} if isinstance(exercises, dict) else {}


def first_line(message: str) -> str:
    """The grader's one-line message: its first line, and the next one too when the first only announces it
    ("... passes every case, but:")."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0].endswith(":"):
        following = [line for line in lines[1:] if not line.startswith(("call:", "hint:"))]
        return f"{lines[0]} {following[0]}" if following else lines[0]
    return lines[0]


def record(exercise_id: str, status: str, message: str = "", function: str = "") -> bool:
    """Save one grade() outcome. Never raises: returns False (and remembers why) when it cannot save."""
    global _last_error
    try:
        where = path()
        where.parent.mkdir(parents=True, exist_ok=True)
        with _locked(where):
            exercises = load(where)
            exercises[str(exercise_id)] = {
                "status": status,
                "message": first_line(message) if status == FAILED else "",
                "function": function,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            _write_atomically(where, {"version": VERSION, "exercises": exercises})
    except Exception as exc:  # noqa: BLE001 — recording must never break grading
        _last_error = f"{type(exc).__name__}: {exc}"
        return False
    _last_error = None
    return True


@contextmanager
def _locked(where: Path) -> Iterator[None]:
    """Serialise writers (two kernels grading at once) where the OS has advisory locks; else just proceed."""
    try:
        import fcntl
    except ImportError:  # Windows: an atomic replace still keeps the file whole
        yield
        return
    with open(where.with_name(where.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_atomically(where: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=where.name, suffix=".tmp", dir=where.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, where)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------------ the report


def _order(exercise_id: str) -> tuple[int, int, str]:
    m = re.match(r"(\d+)\.(\d+)(.*)", exercise_id)
    return (int(m.group(1)), int(m.group(2)), m.group(3)) if m else (10**6, 0, exercise_id)


def _lab_titles() -> dict[int, str]:
    """{lab number: notebook stem} from this checkout's labs/ (absent when installed from a release)."""
    labs = Path(__file__).resolve().parent.parent / "labs"
    titles = {}
    for nb in sorted(labs.glob("[0-9][0-9]_*.ipynb")) if labs.is_dir() else []:
        titles[int(nb.name[:2])] = nb.stem
    return titles


def report(records: dict[str, dict[str, Any]] | None = None, exercise_ids: list[str] | None = None) -> str:
    """The report card: one line per exercise of the course, grouped by lab, and a total line."""
    if records is None:
        records = load()
    if exercise_ids is None:
        from course_utils.exercises import EXERCISES

        exercise_ids = list(EXERCISES)
    ids = sorted(set(exercise_ids), key=_order)
    titles = _lab_titles()
    width = max((len(i) for i in ids), default=3)
    lines, counts, lab = [], {PASSED: 0, FAILED: 0, NOT_ATTEMPTED: 0}, None
    for ex_id in ids:
        number = _order(ex_id)[0]
        if number != lab:
            lab = number
            lines.append(titles.get(number, f"Lab {number:02d}"))
        rec = records.get(ex_id, {})
        status = rec.get("status") if rec.get("status") in GLYPH else NOT_ATTEMPTED
        counts[status] += 1
        what = rec.get("function", "")  # the function graded last (none before a first grade())
        if status == FAILED and rec.get("message"):  # "Exercise 2.2: fn fails case 1/6: ..." without its id
            what = re.sub(rf"^Exercise {re.escape(ex_id)}:\s*", "", rec["message"])
        glyph = GLYPH[status] + (" " if status == NOT_ATTEMPTED else "")  # the emoji take two columns
        lines.append(f"  {glyph} {ex_id:<{width}}  {status:<13}  {what}".rstrip())
    total = len(ids)
    lines.append(f"Total: {counts[PASSED]} of {total} exercises passed, {counts[FAILED]} failed, "
                 f"{counts[NOT_ATTEMPTED]} not attempted")
    return "\n".join(lines)


def progress() -> None:
    """Print the report card of every exercise in the course, from the grader's local record."""
    try:
        where = str(path())
    except RuntimeError as exc:  # no home directory
        where = f"nowhere ({exc})"
    print(f"Your progress (latest grade() of each exercise; kept in {where})")
    print(report())
    if _last_error:
        print(f"⚠ the latest grade() could not be recorded: {_last_error} (set {ENV_VAR} to a writable file)")
