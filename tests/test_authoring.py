"""solutions → labs: stubs, stripped outputs, determinism, leak detection, badges."""

from pathlib import Path

import nbformat
import pytest

from course_utils import authoring

EXERCISE = '''# Exercise 9.1: add with a twist
def add_twist(a, b):
    """Return a + 2 * b. a, b: tensors of one shape."""
    ### BEGIN SOLUTION
    doubled_b_value = 2 * b
    return a + doubled_b_value
    ### END SOLUTION'''


def make_solution(tmp: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Lab 99 — Test\n\n" + authoring.colab_badge("solutions/99_test.ipynb")),
        nbformat.v4.new_code_cell(authoring.SETUP_CELL, metadata={"tags": ["setup"]}),
        nbformat.v4.new_code_cell(EXERCISE),
        nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(add_twist(1, 2))"),
    ]
    nb.cells[3].outputs = [nbformat.v4.new_output("stream", text="5\n")]
    nb.cells[3].execution_count = 4
    (tmp / "solutions").mkdir()
    (tmp / "labs").mkdir()
    path = tmp / "solutions" / "99_test.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture
def course(tmp_path, monkeypatch):
    monkeypatch.setattr(authoring, "ROOT", tmp_path)
    monkeypatch.setattr(authoring, "SOLUTIONS", tmp_path / "solutions")
    monkeypatch.setattr(authoring, "LABS", tmp_path / "labs")
    return make_solution(tmp_path)


def test_lab_has_stub_keeps_signature_and_docstring_and_no_outputs(course, tmp_path):
    (lab_path,) = authoring.write_labs()
    lab = nbformat.read(lab_path, as_version=4)
    code = lab.cells[2].source
    assert "def add_twist(a, b):" in code and '"""Return a + 2 * b.' in code
    assert "doubled_b_value" not in code and "BEGIN SOLUTION" not in code
    assert 'raise NotImplementedError("Exercise 9.1: add with a twist' in code
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in lab.cells if c.cell_type == "code")
    assert "/blob/main/labs/99_test.ipynb" in lab.cells[0].source
    assert authoring.check_labs() == []


def test_stub_raises_naming_the_exercise(course):
    (lab_path,) = authoring.write_labs()
    ns = {}
    exec(nbformat.read(lab_path, as_version=4).cells[2].source, ns)
    with pytest.raises(NotImplementedError, match="Exercise 9.1"):
        ns["add_twist"](1, 2)


def test_generation_is_deterministic(course):
    (lab_path,) = authoring.write_labs()
    first = lab_path.read_bytes()
    authoring.write_labs()
    assert lab_path.read_bytes() == first


def test_stale_lab_is_reported(course):
    (lab_path,) = authoring.write_labs()
    sol = nbformat.read(course, as_version=4)
    sol.cells[2].source = sol.cells[2].source.replace("a + 2 * b", "a + 3 * b")
    nbformat.write(sol, course)
    assert any("stale" in p for p in authoring.check_labs())


def test_planted_leaks_are_caught(course):
    (lab_path,) = authoring.write_labs()
    lab = nbformat.read(lab_path, as_version=4)
    lab.cells[2].source += "\n    doubled_b_value = 2 * b"  # solution code copied into the lab
    lab.cells[3].outputs = [nbformat.v4.new_output("stream", text="5\n")]  # a solution output
    sol = nbformat.read(course, as_version=4)
    problems = authoring.find_leaks(sol, lab)
    assert any("leaked" in p and "doubled_b_value" in p for p in problems)
    assert any("outputs" in p for p in problems)
    nbformat.write(lab, lab_path)
    assert authoring.check_labs()  # and `make check-labs` fails


def test_region_without_exercise_header_is_an_error(course):
    sol = nbformat.read(course, as_version=4)
    sol.cells[2].source = sol.cells[2].source.split("\n", 1)[1]
    nbformat.write(sol, course)
    with pytest.raises(ValueError, match="Exercise N.M"):
        authoring.write_labs()


def test_unbalanced_markers_are_an_error():
    with pytest.raises(ValueError, match="without"):
        authoring._stub_region("# Exercise 1.1: x\n    ### BEGIN SOLUTION\n    pass", "cell")


def test_wrong_badge_is_caught_and_badges_rewrites_it(course):
    sol = nbformat.read(course, as_version=4)
    sol.cells[0].source = sol.cells[0].source.replace("99_test", "01_other")
    sol.cells[1].source = "print('old setup cell')"
    nbformat.write(sol, course)
    assert authoring.badge_target(nbformat.read(course, as_version=4)) != "solutions/99_test.ipynb"
    authoring.rewrite_badges()
    fixed = nbformat.read(course, as_version=4)
    assert authoring.badge_target(fixed) == "solutions/99_test.ipynb"
    assert fixed.cells[1].source == authoring.SETUP_CELL
    assert fixed.metadata.kernelspec.name == "python3"


ANSWERS = """**Questions.** 1. Why is the sky blue?

### BEGIN SOLUTION
1. Rayleigh scattering goes like the inverse fourth power of the wavelength.
### END SOLUTION"""


def test_written_answers_in_markdown_are_stubbed_and_their_leaks_caught(course):
    sol = nbformat.read(course, as_version=4)
    sol.cells.append(nbformat.v4.new_markdown_cell(ANSWERS))
    nbformat.write(sol, course)
    (lab_path,) = authoring.write_labs()
    lab = nbformat.read(lab_path, as_version=4)
    md = lab.cells[-1].source
    assert md == "**Questions.** 1. Why is the sky blue?\n\n" + authoring.ANSWER_STUB
    assert "Rayleigh" not in lab_path.read_text() and authoring.check_labs() == []
    lab.cells[-1].source = md + "\n1. Rayleigh scattering goes like the inverse fourth power of the wavelength."
    problems = authoring.find_leaks(nbformat.read(course, as_version=4), lab)
    assert any("written answer leaked" in p and "Rayleigh" in p for p in problems)
    lab.cells[-1].source = ANSWERS  # markers and all
    assert any("answer markers left" in p for p in authoring.find_leaks(sol, lab))
    with pytest.raises(ValueError, match="without"):
        authoring._stub_answers("text\n### BEGIN SOLUTION\nan answer", "cell 9")
    assert authoring._stub_answers("no markers: ### BEGIN SOLUTION inline stays", "c") == \
        "no markers: ### BEGIN SOLUTION inline stays"
