"""The student's own work is never lost, and can be graded: my-labs/ is filled once and never overwritten,
`make labs` refuses to replace a lab holding someone's work (unless forced), every grade() call is recorded,
progress() prints the report card, and `make check-mine` grades a copy of the student's notebooks."""

from __future__ import annotations

import subprocess
from pathlib import Path

import nbformat
import pytest

from course_utils import authoring, checkmine
from course_utils.exercises import grade
from course_utils.notebook_functions import graded_functions
from course_utils.progress import FAILED, GLYPH, NOT_ATTEMPTED, PASSED, load, record, report

ROOT = Path(__file__).resolve().parent.parent

EXERCISE = '''# Exercise 9.1: add with a twist
def add_twist(a, b):
    """Return a + 2 * b."""
    ### BEGIN SOLUTION
    return a + 2 * b
    ### END SOLUTION'''


def _solution(name: str, body: str = "a + 2 * b") -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {name}"),
                nbformat.v4.new_code_cell(EXERCISE.replace("a + 2 * b", body))]
    return nb


@pytest.fixture
def course(tmp_path, monkeypatch):
    """A course of two notebooks in tmp_path, labs generated once."""
    for attr, sub in [("ROOT", ""), ("SOLUTIONS", "solutions"), ("LABS", "labs"), ("MY_LABS", "my-labs")]:
        monkeypatch.setattr(authoring, attr, tmp_path / sub if sub else tmp_path)
    (tmp_path / "solutions").mkdir()
    for name in ("01_one", "02_two"):
        nbformat.write(_solution(name), tmp_path / "solutions" / f"{name}.ipynb")
    authoring.write_labs()
    return tmp_path


def _solve(lab: Path) -> str:
    """What a student does: write an answer into the lab and save it. Returns the saved text."""
    nb = nbformat.read(lab, as_version=4)
    nb.cells[1].source = nb.cells[1].source.replace('raise NotImplementedError("Exercise 9.1: add with a twist '
                                                    '— write your code here")', "return a + b + b")
    text = nbformat.writes(nb) + "\n"
    lab.write_text(text)
    return text


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                   capture_output=True)


# ---------------------------------------------------------------------------------------- my-labs/


def test_workspace_copies_each_lab_once_and_never_overwrites(course):
    copied = authoring.copy_workspace()
    assert [p.name for p in copied] == ["01_one.ipynb", "02_two.ipynb"]
    mine = course / "my-labs" / "01_one.ipynb"
    solved = _solve(mine)
    assert authoring.copy_workspace() == []  # a second `make lab` copies nothing
    nbformat.write(_solution("03_three"), course / "solutions" / "03_three.ipynb")
    authoring.write_labs()  # a new lab appears in labs/ ...
    assert [p.name for p in authoring.copy_workspace()] == ["03_three.ipynb"]  # ... and in my-labs/
    assert mine.read_text() == solved  # the student's notebook is untouched throughout


def test_make_lab_copies_into_my_labs_and_opens_it():
    dry = subprocess.run(["make", "-n", "--no-print-directory", "lab"], cwd=ROOT, capture_output=True, text=True)
    assert "course_utils.authoring workspace" in dry.stdout
    assert "--notebook-dir=my-labs" in dry.stdout
    other = subprocess.run(["make", "-n", "--no-print-directory", "lab", "LAB_DIR=/tmp/x"], cwd=ROOT,
                           capture_output=True, text=True)
    assert "workspace" not in other.stdout and "--notebook-dir=/tmp/x" in other.stdout
    assert "my-labs/" in (ROOT / ".gitignore").read_text().splitlines()


# ---------------------------------------------------------------------------------- make labs refuses


def test_make_labs_refuses_to_overwrite_a_students_lab(course, capsys):
    lab = course / "labs" / "01_one.ipynb"
    solved = _solve(lab)
    other = course / "labs" / "02_two.ipynb"
    other.unlink()  # would be rewritten, but nothing is written when any lab is refused
    with pytest.raises(authoring.OwnWorkError):
        authoring.write_labs()
    assert lab.read_text() == solved and not other.exists()
    assert authoring.main(["labs"]) == 1
    out = capsys.readouterr().out
    assert ("labs/01_one.ipynb has changes that are not from `make labs` (your own work?): copy it to my-labs/ "
            "or move it away, then run make labs again") in out
    assert "FORCE=1" in out and lab.read_text() == solved


def test_check_labs_says_the_same_in_one_line(course, capsys):
    _solve(course / "labs" / "01_one.ipynb")
    assert authoring.check_labs() == [authoring.OWN_WORK.format(lab="labs/01_one.ipynb")]
    assert authoring.main(["check"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["✗ " + authoring.OWN_WORK.format(lab="labs/01_one.ipynb")]


def test_force_overwrites(course, capsys):
    lab = course / "labs" / "01_one.ipynb"
    _solve(lab)
    assert authoring.main(["labs", "--force"]) == 0
    assert authoring.check_labs() == []
    assert "return a + b + b" not in lab.read_text()
    dry = subprocess.run(["make", "-n", "--no-print-directory", "labs", "FORCE=1"], cwd=ROOT,
                         capture_output=True, text=True)
    assert "course_utils.authoring labs --force" in dry.stdout


def test_a_stale_lab_is_regenerated_not_refused(course):
    """A lab that only lags behind its solution is the previous generation's: `make labs` replaces it."""
    (course / "solutions" / "01_one.ipynb").write_text(nbformat.writes(_solution("01_one", "b + b + a")) + "\n")
    assert any("stale" in p for p in authoring.check_labs())
    authoring.write_labs()
    assert authoring.check_labs() == []


def test_without_a_record_git_tells_generated_from_own(course):
    """No record of the previous generation (a fresh clone, `make clean`): the committed solutions and labs
    decide. Generated from the committed solution, or the committed lab: replaced. Anything else: refused."""
    (course / "build" / "labs-generated.json").unlink()
    _git(course, "init", "-q")
    _git(course, "add", "solutions", "labs")
    _git(course, "commit", "-q", "-m", "course")
    (course / "solutions" / "01_one.ipynb").write_text(nbformat.writes(_solution("01_one", "b + b + a")) + "\n")
    assert any("stale" in p for p in authoring.check_labs())  # not own work: the committed solution's lab
    authoring.write_labs()
    (course / "build" / "labs-generated.json").unlink()
    _solve(course / "labs" / "02_two.ipynb")
    assert authoring.check_labs() == [authoring.OWN_WORK.format(lab="labs/02_two.ipynb")]


# ------------------------------------------------------------------------------------------ progress


@pytest.fixture
def record_file(tmp_path, monkeypatch):
    where = tmp_path / "progress.json"
    monkeypatch.setenv("CHAPTER6_PROGRESS", str(where))
    return where


def _chunkwise_flops():
    return graded_functions(ROOT / "solutions" / "03_chunkwise.ipynb")["3.2"][0]


def test_grade_records_passed_failed_and_not_attempted(record_file, capsys):
    def chunkwise_flops(T, C, K, V):
        raise NotImplementedError("Exercise 3.2: count the FLOPs — write your code here")

    with pytest.raises(NotImplementedError, match="Exercise 3.2: count the FLOPs") as stub:
        grade("3.2", chunkwise_flops)
    assert stub.value.args == ("Exercise 3.2: count the FLOPs — write your code here",)  # unchanged
    assert load()["3.2"]["status"] == NOT_ATTEMPTED and load()["3.2"]["function"] == "chunkwise_flops"

    def wrong_flops(T, C, K, V):
        return 0

    with pytest.raises(AssertionError) as failed:
        grade("3.2", wrong_flops)
    rec = load()["3.2"]
    assert rec["status"] == FAILED and rec["function"] == "wrong_flops"
    assert rec["message"] == str(failed.value).splitlines()[0] and "\n" not in rec["message"]

    grade("3.2", _chunkwise_flops())
    assert capsys.readouterr().out.startswith("✅ Exercise 3.2 passed")
    rec = load()["3.2"]
    assert rec["status"] == PASSED and rec["message"] == "" and rec["time"]


@pytest.mark.parametrize("where", ["env", "home"])
def test_recording_never_breaks_grading(tmp_path, monkeypatch, capsys, where):
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # nothing can be created below a file, whoever we are (root included)
    if where == "env":
        monkeypatch.setenv("CHAPTER6_PROGRESS", str(blocker / "progress.json"))
    else:
        monkeypatch.delenv("CHAPTER6_PROGRESS", raising=False)
        monkeypatch.setenv("HOME", str(blocker / "home"))
    grade("3.2", _chunkwise_flops())
    assert "✅ Exercise 3.2 passed" in capsys.readouterr().out
    assert record("3.2", PASSED) is False
    from course_utils import progress

    progress()
    assert "could not be recorded" in capsys.readouterr().out


def test_report_card_lists_every_exercise_by_lab(record_file, capsys):
    from course_utils.exercises import EXERCISES

    record("1.1", PASSED, function="softmax_attention")
    record("2.2", FAILED, "Exercise 2.2: recurrent_linear_attention fails case 1/6: B=1 T=63\n  hint: ...",
           "recurrent_linear_attention")
    text = report()
    lines = text.splitlines()
    assert all(any(f" {ex_id} " in line for line in lines) for ex_id in EXERCISES)
    assert lines[0].startswith("01_") or lines[0] == "Lab 01"
    assert any(line.startswith("  ✅ 1.1 ") and "passed" in line for line in lines)
    assert any(line.startswith("  ❌ 2.2 ") and "fails case 1/6: B=1 T=63" in line for line in lines)
    assert any(line.startswith("  ·  2.3 ") and "not attempted" in line for line in lines)
    assert lines[-1] == f"Total: 1 of {len(EXERCISES)} exercises passed, 1 failed, {len(EXERCISES) - 2} not attempted"
    assert "⏭" not in text and set(GLYPH.values()) == {"✅", "❌", "·"}
    from course_utils import progress  # the function, also after course_utils.progress (the module) loaded

    progress()
    assert capsys.readouterr().out.splitlines()[1:] == lines


# ---------------------------------------------------------------------------------------- check-mine


def test_check_mine_grades_a_copy_and_reports_every_exercise(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHAPTER6_PROGRESS", str(tmp_path / "not-this-one.json"))
    mine = tmp_path / "my-labs"
    mine.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in [
        "from course_utils import grade",
        "def chunkwise_flops(T, C, K, V):\n    return 0",
        "grade('3.2', chunkwise_flops)",  # fails: the run goes on
        "def chunk_linear_attention(q, k, v, scale=None, initial_state=None, chunk_size=16):\n"
        "    raise NotImplementedError('Exercise 3.1: x — write your code here')",
        "grade('3.1', chunk_linear_attention)",
        "import time\ntime.sleep(600)",  # stopped by the per-notebook limit
        "print('never runs')",
    ]]
    path = mine / "03_mine.ipynb"
    nbformat.write(nb, path)
    before = path.read_bytes()
    assert checkmine.main([str(mine), "--timeout", "40"]) == 0
    out = capsys.readouterr().out
    assert path.read_bytes() == before  # the student's notebook is never written
    assert "limit" in out and "2 raised an error" in out
    assert any(line.startswith("  ❌ 3.2 ") and "chunkwise_flops fails case" in line for line in out.splitlines())
    assert any(line.startswith("  ·  3.1 ") and "not attempted" in line for line in out.splitlines())
    assert any(line.startswith("  ·  1.1 ") for line in out.splitlines())  # every exercise of the course
    assert "Total: 0 of" in out
    assert not (tmp_path / "not-this-one.json").exists()  # only this run counts, in a file of its own


def test_check_mine_without_notebooks_says_what_to_do(tmp_path, capsys):
    assert checkmine.main([str(tmp_path)]) == 1
    assert "make lab" in capsys.readouterr().out


def test_make_check_mine_target():
    makefile = (ROOT / "Makefile").read_text()
    assert "check-mine" in next(line for line in makefile.splitlines() if line.startswith(".PHONY"))
    dry = subprocess.run(["make", "-n", "--no-print-directory", "check-mine"], cwd=ROOT, capture_output=True,
                         text=True)
    assert "course_utils.checkmine my-labs --timeout" in dry.stdout
