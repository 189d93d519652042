"""From solutions to labs: the instructor's side of the course.

`solutions/NN_topic.ipynb` are the source of truth. Each exercise cell starts with
`# Exercise N.M: title` and wraps its body in nbgrader's markers (`### BEGIN SOLUTION` /
`### END SOLUTION`). `make labs` writes `labs/NN_topic.ipynb` with every marked region replaced by a
stub that raises NotImplementedError naming the exercise, and with all outputs stripped.
A markdown cell may wrap a written answer in the same two lines: the lab has `*Your answer here.*` there.

Command line (the Makefile calls these):
    python -m course_utils.authoring labs      # regenerate labs/ (deterministic: a second run changes no byte)
    python -m course_utils.authoring labs --force   # ... even over a lab a student changed (see below)
    python -m course_utils.authoring check     # fail if labs/ are stale or leak solution code/outputs
    python -m course_utils.authoring workspace # copy labs/ into my-labs/, only notebooks not there yet
    python -m course_utils.authoring badges    # rewrite every badge and setup cell from course_utils.project
    python -m course_utils.authoring execute solutions/01_x.ipynb ...   # run in place, keep outputs

`labs/` is generated; students work in `my-labs/` (git-ignored), which `make lab` fills once per notebook
and no course command ever writes over. A lab that is neither what `make labs` wrote last, nor what it
generates from the committed or the current solutions, nor the committed lab, holds a student's work:
`make labs` refuses to overwrite it (unless forced) and `make check-labs` says so in one line.

nbformat reads and writes the files (stable key order, so regeneration is byte-for-byte repeatable);
nbclient executes them. We do not use nbgrader itself: it needs a course database and a different
layout, and we only need its marker syntax.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from course_utils import project

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
LABS = ROOT / "labs"
MY_LABS = ROOT / "my-labs"  # the student's own copies (git-ignored): `make lab` opens these

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
EXERCISE_HEADER = re.compile(r"^#\s*Exercise\s+(?P<id>\d+\.\d+[a-z]?)\s*[:—-]\s*(?P<title>.+)$", re.M)
BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\(https://colab\.research\.google\.com/github/[^)]*\)")

README_LINK = re.compile(r"colab\.research\.google\.com/github/[^/]+/[^/]+/blob/[^/]+/")

SETUP_TAG = "setup"
SOURCE_VAR = "COURSE_UTILS_SOURCE"  # the setup cell's stand-in for the release (scripts/colab_sim.py)
SETUP_CELL = f'''# Setup — the same first cell in every notebook. On Colab it installs the course at a pinned release
# plus flash-linear-attention and mamba-ssm's Python/Triton parts (Colab's own torch is kept) and prints how
# long that took; anywhere else it only imports. A failed pip stops the cell and prints pip's whole output.
import importlib.util
import os
import subprocess
import sys
import time


def pip_install(*args, **environ):
    """pip install, its output captured (a notebook may not show a subprocess's own) and all shown on failure."""
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "install", "--no-color", "--progress-bar", "off", *args],
                             check=True, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             env={{**os.environ, **environ}}).stdout
    except subprocess.CalledProcessError as failed:
        print(failed.stdout)  # pip's own account of what went wrong
        raise
    print("\\n".join(line for line in out.splitlines()
                    if line.startswith(("Successfully", "ERROR")) or "incompatible" in line))


missing = [name for name in ("course_utils", "fla", "mamba_ssm") if importlib.util.find_spec(name) is None]
if "google.colab" in sys.modules and missing:
    start = time.perf_counter()
    print("Installing the course, flash-linear-attention and mamba-ssm (about a minute) ...")
    release = "course-utils @ git+https://github.com/{project.REPO}@{project.TAG}"
    # {SOURCE_VAR} replaces the release in tests (scripts/colab_sim.py); students leave it unset.
    pip_install(os.environ.get("{SOURCE_VAR}", release),
                "flash-linear-attention=={project.FLA_VERSION}", "fla-core=={project.FLA_VERSION}")
    # mamba-ssm's default build compiles CUDA for ten architectures (30-60 min); skip it.
    pip_install("--no-build-isolation", "--no-deps", "mamba-ssm=={project.MAMBA_VERSION}",
                MAMBA_FORCE_BUILD="TRUE", MAMBA_SKIP_CUDA_BUILD="TRUE")
    importlib.invalidate_caches()  # so that this kernel sees what pip just added
    print(f"installed in {{time.perf_counter() - start:.0f}} s")

from course_utils import grade, setup

env = setup()'''


def colab_badge(nb_path: str | Path) -> str:
    """Markdown for an "Open in Colab" badge that opens `nb_path` (relative to the repo root)."""
    rel = Path(nb_path).resolve().relative_to(ROOT) if Path(nb_path).is_absolute() else Path(nb_path)
    url = f"https://colab.research.google.com/github/{project.REPO}/blob/{project.BRANCH}/{rel.as_posix()}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def badge_target(nb: nbformat.NotebookNode) -> str | None:
    """The notebook path a notebook's badge opens, or None when it has no badge."""
    for cell in nb.cells:
        m = BADGE.search(cell.source) if cell.cell_type == "markdown" else None
        if m:
            return m.group(0).split(f"/blob/{project.BRANCH}/", 1)[-1].rstrip(")")
    return None


# ---------------------------------------------------------------------------------------------- labs


def _replace_regions(source: str, where: str, stub) -> str:
    """Replace each marked region (markers included) of one cell's source by stub(indent of its BEGIN line)."""
    out, inside = [], False
    for line in source.split("\n"):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError(f"{where}: nested {BEGIN}")
            inside = True
            out.append(stub(line[: len(line) - len(line.lstrip())]))
        elif stripped == END:
            if not inside:
                raise ValueError(f"{where}: {END} without {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: {BEGIN} without {END}")
    return "\n".join(out)


def _stub_region(source: str, where: str) -> str:
    """Replace each marked region in one cell's source with a NotImplementedError stub."""
    header = EXERCISE_HEADER.search(source)

    def stub(indent: str) -> str:
        if header is None:
            raise ValueError(f"{where}: a solution region needs a first line '# Exercise N.M: title'")
        ex_id, title = header.group("id"), header.group("title").strip()
        return f'{indent}raise NotImplementedError("Exercise {ex_id}: {title} — write your code here")'

    return _replace_regions(source, where, stub)


def solution_regions(source: str) -> list[str]:
    """The text of each marked region (markers excluded) in a cell's source."""
    return [m.group(1) for m in re.finditer(rf"{re.escape(BEGIN)}\n(.*?)\n[ \t]*{re.escape(END)}", source, re.S)]


# Written answers: a markdown cell may mark its answer with the same two lines; `make labs` puts ANSWER_STUB there.
ANSWER_STUB = "*Your answer here.*"


def _stub_answers(source: str, where: str) -> str:
    """Replace each marked region of a markdown cell (a written answer) with ANSWER_STUB; no markers, no change."""
    return _replace_regions(source, where, lambda indent: ANSWER_STUB)


def _answer_leaks(solution: nbformat.NotebookNode, lab: nbformat.NotebookNode) -> list[str]:
    """Markers left in the lab's markdown, or lines of a written answer found there."""
    problems = [f"cell {i}: answer markers left in the lab" for i, c in enumerate(lab.cells)
                if c.cell_type == "markdown" and (BEGIN in c.source or END in c.source)]
    lab_text_md = "\n".join(c.source for c in lab.cells if c.cell_type == "markdown")
    outside = "\n".join(_stub_answers(c.source, "") for c in solution.cells if c.cell_type == "markdown")
    for cell in solution.cells:
        if cell.cell_type != "markdown":
            continue
        for region in solution_regions(cell.source):
            for line in region.split("\n"):
                body = line.strip()
                if len(body) >= 12 and body not in outside and body in lab_text_md:
                    problems.append(f"written answer leaked: {body!r}")
    return problems


def make_lab(solution: nbformat.NotebookNode, lab_path: Path, where: str = "") -> nbformat.NotebookNode:
    """The student version of a solution notebook: stubs instead of solutions, no outputs."""
    lab = copy.deepcopy(solution)
    for i, cell in enumerate(lab.cells):
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.source = _stub_region(cell.source, f"{where} cell {i}")
            cell.outputs = []
            cell.execution_count = None
        elif cell.cell_type == "markdown":
            cell.source = _stub_answers(BADGE.sub(colab_badge(lab_path), cell.source), f"{where} cell {i}")
    lab.metadata.pop("widgets", None)  # widget state is an output too
    return lab


def _lab_path(solution_path: Path) -> Path:
    return LABS / solution_path.name


def lab_text(solution: nbformat.NotebookNode, lab_path: Path, where: str = "") -> str:
    """The exact text `make labs` writes to lab_path for this solution."""
    return nbformat.writes(make_lab(solution, lab_path.relative_to(ROOT), where=where)) + "\n"


# --------------------------------------------------------------------- the student's work is never lost

OWN_WORK = ("{lab} has changes that are not from `make labs` (your own work?): copy it to my-labs/ or move it "
            "away, then run make labs again")


class OwnWorkError(Exception):
    """`make labs` would overwrite labs/ notebooks that hold changes of someone's own."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        super().__init__("\n".join(OWN_WORK.format(lab=_rel(p)) for p in paths))


def _rel(path: Path) -> str:
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _record_path() -> Path:
    """What the previous `make labs` wrote, by lab name (build/ is git-ignored; without it, git decides)."""
    return ROOT / "build" / "labs-generated.json"


def _generated_record() -> dict[str, str]:
    try:
        record = json.loads(_record_path().read_text(encoding="utf-8"))
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}


def _remember_generated(texts: dict[str, str]) -> None:
    record = _generated_record() | {name: _digest(text) for name, text in texts.items()}
    try:
        _record_path().parent.mkdir(parents=True, exist_ok=True)
        _record_path().write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    except OSError:
        pass  # only a convenience: the committed solutions and labs still tell generated from own work


def _committed(path: Path) -> str | None:
    """The text of path at git's HEAD, or None (no git, not committed, not a repository)."""
    try:
        done = subprocess.run(["git", "show", f"HEAD:./{_rel(path)}"], cwd=ROOT, capture_output=True,
                              timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.decode("utf-8") if done.returncode == 0 else None


def holds_own_work(lab_path: Path, solution_path: Path, expected: str) -> bool:
    """True when lab_path exists and is none of the texts `make labs` has written or would write.

    Generated means: `expected` (from the current solution), what the previous `make labs` recorded, what
    `make labs` generates from the committed solution, or the committed lab itself. Anything else (a
    solved exercise, a note, a run's outputs) is someone's work, not a stale lab.
    """
    if not lab_path.exists():
        return False
    text = lab_path.read_text(encoding="utf-8")
    if text == expected or _generated_record().get(lab_path.name) == _digest(text):
        return False
    if _committed(lab_path) == text:
        return False
    committed_solution = _committed(solution_path)
    if committed_solution is not None:
        try:
            if lab_text(nbformat.reads(committed_solution, as_version=4), lab_path) == text:
                return False
        except Exception:  # noqa: BLE001 — an old solution that no longer converts is simply not a match
            pass
    return True


def write_labs(solution_paths: list[Path] | None = None, force: bool = False) -> list[Path]:
    """Write labs/ from solutions/. Raises OwnWorkError, writing nothing, if a lab to be replaced holds
    changes of someone's own (see holds_own_work), unless force."""
    LABS.mkdir(exist_ok=True)
    planned = []
    for sol in solution_paths or sorted(SOLUTIONS.glob("*.ipynb")):
        lab_path = _lab_path(sol)
        planned.append((sol, lab_path, lab_text(nbformat.read(sol, as_version=4), lab_path, where=sol.name)))
    own = [lab for sol, lab, text in planned if holds_own_work(lab, sol, text)]
    if own and not force:
        raise OwnWorkError(own)
    for _, lab_path, text in planned:
        if not lab_path.exists() or lab_path.read_text(encoding="utf-8") != text:
            lab_path.write_text(text, encoding="utf-8")
    _remember_generated({lab.name: text for _, lab, text in planned})
    return [lab for _, lab, _ in planned]


def copy_workspace(dest: Path | None = None) -> list[Path]:
    """Copy each labs/ notebook into my-labs/ unless a notebook of that name is there already (new labs
    appear; a student's notebooks are never touched). Returns the notebooks copied."""
    dest = MY_LABS if dest is None else dest
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for lab in sorted(LABS.glob("*.ipynb")):
        target = dest / lab.name
        if target.exists() or target.is_symlink():
            continue
        shutil.copyfile(lab, target)
        copied.append(target)
    return copied


def find_leaks(solution: nbformat.NotebookNode, lab: nbformat.NotebookNode) -> list[str]:
    """Every way `lab` gives away `solution`: markers, outputs, or lines of a solution body."""
    problems = []
    lab_code = "\n".join(c.source for c in lab.cells if c.cell_type == "code")
    outside = "\n".join(_stub_region(c.source, "") for c in solution.cells if c.cell_type == "code")
    for i, cell in enumerate(lab.cells):
        if cell.cell_type != "code":
            continue
        if BEGIN in cell.source or END in cell.source:
            problems.append(f"cell {i}: solution markers left in the lab")
        if cell.get("outputs"):
            problems.append(f"cell {i}: has outputs (labs must ship without outputs)")
        if cell.get("execution_count") is not None:
            problems.append(f"cell {i}: has an execution count")
    for cell in solution.cells:
        if cell.cell_type != "code":
            continue
        for region in solution_regions(cell.source):
            for line in region.split("\n"):
                body = line.strip()
                # Short or shared lines (`return o`, a blank) are not evidence; distinctive ones are.
                if len(body) >= 12 and not body.startswith("#") and body not in outside and body in lab_code:
                    problems.append(f"solution line leaked: {body!r}")
    return problems + _answer_leaks(solution, lab)


def check_labs() -> list[str]:
    """Problems with labs/: stale, missing, extra, or leaking. Empty when all is well."""
    problems = []
    solutions = sorted(SOLUTIONS.glob("*.ipynb"))
    for sol in solutions:
        lab_path = _lab_path(sol)
        if not lab_path.exists():
            problems.append(f"{lab_path.relative_to(ROOT)} is missing: run `make labs`")
            continue
        nb = nbformat.read(sol, as_version=4)
        expected = lab_text(nb, lab_path, where=sol.name)
        if holds_own_work(lab_path, sol, expected):  # one line, not a ✗ per solved exercise
            problems.append(OWN_WORK.format(lab=_rel(lab_path)))
            continue
        if lab_path.read_text(encoding="utf-8") != expected:
            problems.append(f"{lab_path.relative_to(ROOT)} is stale: run `make labs`")
        lab = nbformat.read(lab_path, as_version=4)
        problems += [f"{lab_path.relative_to(ROOT)}: {p}" for p in find_leaks(nb, lab)]
    for lab_path in sorted(LABS.glob("*.ipynb")):
        if not (SOLUTIONS / lab_path.name).exists():
            problems.append(f"{lab_path.relative_to(ROOT)} has no solution notebook")
    return problems


# -------------------------------------------------------------------------------------------- badges


def apply_course_cells(nb: nbformat.NotebookNode, nb_path: Path) -> nbformat.NotebookNode:
    """Rewrite the badge (pointing at nb_path) and the tagged setup cell from course_utils.project."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = BADGE.sub(colab_badge(nb_path), cell.source)
        elif SETUP_TAG in cell.metadata.get("tags", []):
            cell.source = SETUP_CELL
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["accelerator"] = "GPU"
    nb.metadata.setdefault("colab", {})["gpuType"] = "T4"
    return nb


def rewrite_badges() -> list[Path]:
    changed = []
    for path in sorted(SOLUTIONS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        text = nbformat.writes(apply_course_cells(nb, path.relative_to(ROOT))) + "\n"
        if path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    readme = ROOT / "README.md"
    if readme.exists():  # the notebook table's badges follow the same repository/branch
        text = README_LINK.sub(f"colab.research.google.com/github/{project.REPO}/blob/{project.BRANCH}/",
                               readme.read_text())
        if readme.read_text() != text:
            readme.write_text(text)
            changed.append(readme)
    return changed + [p for p in write_labs() if p not in changed]


# ------------------------------------------------------------------------------------------- execute


def execute(paths: list[Path], timeout: int = 900) -> None:
    """Run notebooks top to bottom in place (their directory as cwd), keeping outputs."""
    from nbclient import NotebookClient

    for path in paths:
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        client.execute()
        for cell in nb.cells:
            cell.metadata.pop("execution", None)
        path.write_text(nbformat.writes(nb) + "\n")
        print(f"executed {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils.authoring", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["labs", "check", "badges", "execute", "workspace"])
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--force", action="store_true", help="labs: overwrite labs/ even where they hold own work")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except OwnWorkError as exc:
        for p in exc.paths:
            print(f"✗ {OWN_WORK.format(lab=_rel(p))}")
        print("labs/ were left as they are. (`make labs FORCE=1` overwrites them anyway: that work is then lost.)")
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.command == "labs":
        for p in write_labs([p.resolve() for p in args.paths] or None, force=args.force):
            print(f"wrote {p.relative_to(ROOT)}")
    elif args.command == "workspace":
        dest = args.paths[0].resolve() if args.paths else MY_LABS
        for p in copy_workspace(dest):
            print(f"copied labs/{p.name} to {_rel(p)} (your copy: no course command overwrites it)")
    elif args.command == "check":
        problems = check_labs()
        for p in problems:
            print(f"✗ {p}")
        if problems:
            return 1
        print(f"labs/ in sync with solutions/ and leak-free ({len(list(SOLUTIONS.glob('*.ipynb')))} notebooks)")
    elif args.command == "badges":
        for p in rewrite_badges():
            print(f"rewrote {p.relative_to(ROOT)}")
    elif args.command == "execute":
        execute([p.resolve() for p in args.paths] or sorted(SOLUTIONS.glob("*.ipynb")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
