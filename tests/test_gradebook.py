"""`make grade`: a generated class of 45 notebooks — honest, wrong, crashing, endless and cheating — graded once
(process pool, 2 workers), then the gradebook checked row by row against the verdict each notebook must get.

Honest notebooks are the solutions; wrong ones replace one function by a mistake of the exercise's own
catalogue (`EXERCISES[id].mistakes`) and must be rejected with that mistake's message, as in the notebook;
the cheats are the known autograder exploits, each of which must fail (or be flagged). A subset of the
exercises is graded (the slow references of 1.1 and 1.2a are left out) with short timeouts.
"""

from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
import textwrap
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest
import torch

from course_utils.exercises import get
from course_utils.gradebook import Options, find_submissions, grade_folder, lab_exercises
from course_utils.gradebook.protocol import ProtocolError, dumps, from_template, loads, to_template
from course_utils.gradebook.run import parse_bytes
from course_utils.gradebook.trusted import make_proxy, raise_as_student

ROOT = Path(__file__).resolve().parent.parent
LABS = {lab: exs for lab, exs in lab_exercises().items() if lab[:2] in ("01", "02", "03")}
GRADED = ("1.2b", "1.3a", "2.1", "2.2", "2.3", "2.4", "3.2", "3.3")
OPTIONS = Options(timeout=15.0, load_timeout=30.0, memory=2**30, exercises=GRADED)
MEASURED = "measured in the submission's process"


def functions(lab: str) -> list[str]:
    return [f for e, f in LABS[lab] if e in GRADED]


def function_of(exercise: str) -> str:
    lab = next(lab for lab, exs in LABS.items() if any(e == exercise for e, _ in exs))
    return next(f for e, f in LABS[lab] if e == exercise)


@dataclass
class Spec:
    """A generated submission and the verdict it must get. expect: {function: (status, pieces of the
    feedback)}; functions not listed get `default`. flags: {function: piece of the flags column}."""

    student: str
    lab: str
    cells: list[str] = field(default_factory=list)  # appended code cells (later definitions win)
    base: str = "solutions"  # solutions, labs, or "raw" (the notebook file is `raw`)
    expect: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    default: str = "passed"
    flags: dict[str, str] = field(default_factory=dict)
    folder: bool = False  # alice/02_causal_rnn.ipynb instead of alice_02_causal_rnn.ipynb
    replace: dict[str, str] = field(default_factory=dict)  # function -> new source of the cell defining it
    raw: str = ""

    @property
    def id(self) -> str:
        return f"{self.student}-{self.lab[:2]}"

    def write(self, root: Path) -> Path:
        path = root / self.student / f"{self.lab}.ipynb" if self.folder else root / f"{self.student}_{self.lab}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.base == "raw":
            path.write_text(self.raw)
            return path
        nb = nbformat.read(str(ROOT / self.base / f"{self.lab}.ipynb"), as_version=4)
        for fn, source in self.replace.items():
            cell = next(c for c in nb.cells if c.cell_type == "code" and f"def {fn}(" in c.source)
            cell.source = textwrap.dedent(source).strip()
        nb.cells += [nbformat.v4.new_code_cell(textwrap.dedent(c).strip()) for c in self.cells]
        nbformat.write(nb, str(path))
        return path


def mistake(exercise: str, name: str) -> tuple[str, tuple[str, ...]]:
    """(a cell defining the lab's function as the catalogue's wrong implementation, the message it must get)."""
    m = next(m for m in get(exercise).mistakes if m.name == name)
    fn = function_of(exercise)
    cell = f'''
        def {fn}(*args, **kwargs):
            """The catalogue's mistake {name!r}: a wrong answer written as a student would hand it in."""
            from course_utils.exercises import get
            wrong = next(m for m in get({exercise!r}).mistakes if m.name == {name!r}).wrong_fn
            return wrong(*args, **kwargs)
        '''
    return cell, m.expected_message()


def also_24(status: str, *pieces: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """2.4's graded function calls the notebook's recurrent_linear_attention (2.2) in its forward pass: a
    submission whose 2.2 is broken gets 2.4 graded on top of it, as in the notebook."""
    return {function_of("2.4"): (status, pieces)}


FORWARD_WRONG = ("failed", ("fix exercise 2.2 first",))

ZEROS_22 = '''
    def recurrent_linear_attention(q, k, v, scale=None, initial_state=None, normalize=False):
        """Wrong on purpose (all zeros): the cheat around it is what is graded."""
        B, T, H, K = q.shape
        return q.new_zeros(B, T, H, v.shape[-1]), q.new_zeros(B, H, K, v.shape[-1])
    '''
ZEROS = ("failed", ("all zeros",))


def catalogue() -> list[Spec]:
    specs = []
    # honest: the solutions, 4 students x 3 labs, both layouts
    for student, folder in (("ada", True), ("ben", False), ("cy", True), ("dee", False)):
        specs += [Spec(student, lab, folder=folder) for lab in LABS]
    # not attempted: the labs as distributed, and one with only 2.2 done
    specs += [Spec("eve", lab, base="labs", default="not attempted") for lab in LABS]
    solution_22 = next(c.source for c in nbformat.read(str(ROOT / "solutions/02_causal_rnn.ipynb"), 4).cells
                       if c.cell_type == "code" and "def recurrent_linear_attention(" in c.source)
    specs.append(Spec("fay", "02_causal_rnn", [solution_22], base="labs", default="not attempted",
                      expect={"recurrent_linear_attention": ("passed", ())}))

    # wrong: one catalogued mistake each, rejected with its own message
    for student, lab, exercise, name, extra in (
            ("wrong_qt", "01_kernel_trick", "1.2b", "the quadratic form (a T×T matrix)", (MEASURED,)),
            ("wrong_sqrtm", "01_kernel_trick", "1.3a", "missing 1/sqrt(M)", ()),
            ("wrong_detach", "02_causal_rnn", "2.1", "q detached (no gradient)", ()),
            ("wrong_exclusive", "02_causal_rnn", "2.2", "exclusive", ()),
            ("wrong_inplace", "02_causal_rnn", "2.3", "mutates state in place", ()),
            ("wrong_backward", "02_causal_rnn", "2.4", "custom backward, dq without the scale", ()),
            ("wrong_raising_backward", "02_causal_rnn", "2.4", "backward raises", ()),
            ("wrong_flops", "03_chunkwise", "3.2", "missing Q K^T", ()),
            ("wrong_loop", "03_chunkwise", "3.3", "loops over chunks (Exercise 3.1's answer)", (MEASURED,))):
        cell, says = mistake(exercise, name)
        expect = {function_of(exercise): ("failed", says + extra)}
        if exercise == "2.2":
            expect = {function_of("2.4"): FORWARD_WRONG, **expect}
        specs.append(Spec(student, lab, [cell], expect=expect))

    rla = "recurrent_linear_attention"
    lab2 = "02_causal_rnn"
    # crashing, endless, broken
    specs += [
        Spec("raises", lab2, ['''
            def recurrent_linear_attention(q, k, v, scale=None, initial_state=None, normalize=False):
                S = None
                raise ValueError("oops: the state is " + repr(S))
            '''], expect={**also_24("failed", "ValueError: oops"),
                   rla: ("failed", ("your function raised an exception", "ValueError: oops: the state is None",
                                           "#cell", "in recurrent_linear_attention",
                                           'raise ValueError("oops: the state is " + repr(S))'))}),
        Spec("wrong_signature", lab2, ['''
            def recurrent_linear_attention(q, k, v, scale=None):
                s = q.shape[-1] ** -0.5 if scale is None else scale
                kv = torch.einsum("bthk,bthv->bthkv", k.float(), v.float()).cumsum(1)
                return (s * torch.einsum("bthk,bthkv->bthv", q.float(), kv)).to(q.dtype), kv[:, -1]
            '''], expect={**also_24("failed", "TypeError"),
                   rla: ("failed", ("raised TypeError", "unexpected keyword argument 'initial_state'",
                                           "must accept the arguments of the spec"))}),
        Spec("endless", lab2, ['''
            def recurrent_linear_attention(q, k, v, scale=None, initial_state=None, normalize=False):
                while True:
                    pass
            '''], expect={rla: ("timed out", ("timed out after 15 s",)), **also_24("timed out")}),
        Spec("hog", lab2, ['''
            def recurrent_linear_attention(q, k, v, scale=None, initial_state=None, normalize=False):
                hoard = []
                while True:
                    hoard.append(torch.ones(2**25))  # 128 MiB more each time
            '''], expect={rla: ("out of memory", ("memory limit of 1 GiB",)), **also_24("out of memory")}),
        Spec("killed", lab2, ['''
            import os
            import signal

            def recurrent_linear_attention(q, k, v, scale=None, initial_state=None, normalize=False):
                os.kill(os.getpid(), signal.SIGKILL)
            '''], expect={rla: ("crashed", ("killed by SIGKILL",)), **also_24("crashed")}),
        Spec("exits_in_call", lab2, ['''
            import sys

            def recurrent_linear_attention(q, k, v, scale=None, initial_state=None, normalize=False):
                sys.exit(0)
            '''], expect={**also_24("failed", "sys.exit(0)"),
                   rla: ("failed", ("the submission exited (sys.exit(0)) in recurrent_linear_attention()",))}),
        Spec("os_exit", lab2, ['''
            import os

            def linear_attention_step(q_t, k_t, v_t, state, scale=None):
                os._exit(3)
            '''], expect={"linear_attention_step": ("crashed", ("exited with code 3",))}),
        Spec("loops_at_load", lab2, ['''
            def _spin(f):
                while True:
                    pass

            @_spin
            def helper():
                pass
            '''], default="timed out", expect={f: ("timed out", ("timed out after 30 s while loading",))
                                                for f in functions(lab2)}),
        Spec("syntax_error", lab2, replace={rla: '''
            def recurrent_linear_attention(q, k, v, scale=None, initial_state=None, normalize=False):
                return q +
            '''}, expect={rla: ("failed", ("the cell defining `recurrent_linear_attention`", "SyntaxError")),
                          function_of("2.4"): ("failed", ("NameError",))}),
        Spec("unreadable", "03_chunkwise", base="raw", raw="{ this is not a notebook", default="crashed",
             expect={f: ("crashed", ("could not be read",)) for f in functions("03_chunkwise")}),
    ]

    # cheating: each must fail (or be flagged)
    specs += [
        Spec("cheat_fake_grade", lab2, ['''
            def grade(exercise_id, fn, **options):
                print(f"✅ Exercise {exercise_id} passed: {fn.__name__}")
                print("   details: 6 cases on CPU (float32); max rel err 0.0e+00")
            ''', ZEROS_22], expect={rla: ZEROS, function_of("2.4"): FORWARD_WRONG}),
        Spec("cheat_prints_pass", lab2, ['print("✅ Exercise 2.2 passed: recurrent_linear_attention")', '''
            def recurrent_linear_attention(q, k, v, scale=None, initial_state=None, normalize=False):
                print("✅ Exercise 2.2 passed: recurrent_linear_attention")
                B, T, H, K = q.shape
                return q.new_zeros(B, T, H, v.shape[-1]), q.new_zeros(B, H, K, v.shape[-1])
            '''], expect={rla: ZEROS, function_of("2.4"): FORWARD_WRONG}),
        Spec("cheat_patches_grader", lab2, ['''
            import course_utils.grading.engine as engine  # never run by the loader, here for the record
            engine.evaluate = lambda *a, **k: None
            ''', '''
            def _patch(f):
                """Runs while the notebook loads (a decorator): patches the grader and torch in this process."""
                import torch.testing

                import course_utils
                import course_utils.exercises
                import course_utils.grading
                import course_utils.grading.checks as checks
                import course_utils.grading.engine as engine
                from course_utils.grading import Result

                ok = lambda ex, fn, *a, **k: Result(ex.id, fn.__name__, True, "", "patched")  # noqa: E731
                engine.evaluate = course_utils.grading.evaluate = ok
                course_utils.exercises.grade = course_utils.grade = lambda *a, **k: print("✅ passed")
                torch.allclose = lambda *a, **k: True
                torch.equal = lambda *a, **k: True
                torch.testing.assert_close = lambda *a, **k: None
                checks.check_values = lambda *a, **k: 0.0
                checks.check_form = lambda *a, **k: None
                return f
            ''', "@_patch\n" + textwrap.dedent(ZEROS_22).strip()],
             expect={rla: ZEROS, function_of("2.4"): FORWARD_WRONG}),
        Spec("cheat_silences_tracebacks", lab2, ['''
            get_ipython().showtraceback = lambda *a, **k: None  # what nbgrader had to fix (not run by the loader)
            ''', '''
            def _silence(f):
                import sys
                import traceback
                try:
                    from IPython.core.interactiveshell import InteractiveShell
                    InteractiveShell.showtraceback = lambda *a, **k: None
                except ImportError:
                    pass
                sys.excepthook = lambda *a: None
                traceback.print_exception = traceback.print_exc = lambda *a, **k: None
                traceback.extract_tb = lambda *a, **k: []
                return f

            @_silence
            def recurrent_linear_attention(q, k, v, scale=None, initial_state=None, normalize=False):
                raise RuntimeError("an error nobody should see")
            '''], expect={rla: ("failed", ("your function raised an exception",
                                           "RuntimeError: an error nobody should see")),
                     **also_24("failed", "RuntimeError: an error nobody should see")}),
        Spec("cheat_always_equal", lab2, ['''
            class AlwaysEqual:
                """Agrees with every comparison an autograder might make."""
                def __eq__(self, other): return True
                def __ne__(self, other): return False
                def __sub__(self, other): return self
                def __rsub__(self, other): return self
                def __abs__(self): return self
                def __lt__(self, other): return True
                def __le__(self, other): return True
                def __float__(self): return 0.0
                def __getattr__(self, name): return lambda *a, **k: self

            def recurrent_linear_attention(q, k, v, scale=None, initial_state=None, normalize=False):
                return AlwaysEqual(), AlwaysEqual()
            '''], expect={rla: ("failed", ("AlwaysEqual (not a plain tensor)",)), **also_24("failed")}),
        Spec("cheat_tensor_subclass", lab2, ['''
            class CheatTensor(torch.Tensor):
                """Intercepts every torch function called on it: comparisons say 'equal'."""
                @classmethod
                def __torch_function__(cls, func, types, args=(), kwargs=None):
                    if getattr(func, "__name__", "") in ("allclose", "equal", "isclose", "eq"):
                        return True
                    return super().__torch_function__(func, types, args, kwargs or {})

            def recurrent_linear_attention(q, k, v, scale=None, initial_state=None, normalize=False):
                B, T, H, K = q.shape
                return (torch.zeros(B, T, H, v.shape[-1]).as_subclass(CheatTensor),
                        torch.zeros(B, H, K, v.shape[-1]).as_subclass(CheatTensor))
            '''], expect={rla: ("failed", ("CheatTensor (a torch.Tensor subclass, not a plain tensor)",)),
                          **also_24("failed")}),
        Spec("cheat_exits_at_import", lab2, ['''
            import sys

            def _leave(f):
                sys.exit(0)

            @_leave
            def helper():
                pass
            '''], default="crashed", expect={f: ("crashed", ("the submission exited (sys.exit(0)) while loading",))
                                             for f in functions(lab2)}),
        Spec("cheat_reads_reference", lab2, ['''
            from course_utils.refs.linear_attn import linear_attention as _reference

            def recurrent_linear_attention(q, k, v, scale=None, initial_state=None, normalize=False):
                return _reference(q, k, v, scale=scale, initial_state=initial_state, normalize=normalize,
                                  mode="recurrent")
            '''], expect={fn: ("failed", ("course_utils.refs", MEASURED)) for fn in (rla, function_of("2.4"))},
             flags={fn: "uses course_utils.refs: linear_attn.linear_attention" for fn in (rla, function_of("2.4"))}),
        Spec("cheat_reads_reference_blind", lab2, ['''
            from course_utils.refs.linear_attn import linear_attention as _reference

            def _blind(f):
                """Switches off the profiler the forbidden-call check relies on, in this process."""
                import sys
                sys.setprofile = lambda *a, **k: None
                return f

            @_blind
            def recurrent_linear_attention(q, k, v, scale=None, initial_state=None, normalize=False):
                return _reference(q, k, v, scale=scale, initial_state=initial_state, normalize=normalize,
                                  mode="recurrent")
            '''], expect={fn: ("passed", ("flagged: uses course_utils.refs",)) for fn in (rla, function_of("2.4"))},
             flags={fn: "uses course_utils.refs: linear_attn.linear_attention" for fn in (rla, function_of("2.4"))}),
        Spec("cheat_forges_replies", lab2, ['''
            import os
            import struct

            def recurrent_linear_attention(q, k, v, scale=None, initial_state=None, normalize=False):
                verdict = "✅ Exercise 2.2 passed".encode()
                for fd in range(3, 256):  # whatever pipe leads to the grader
                    try:
                        os.write(fd, struct.pack("<Q", len(verdict)) + verdict)
                    except OSError:
                        pass
                B, T, H, K = q.shape
                return q.new_zeros(B, T, H, v.shape[-1]), q.new_zeros(B, H, K, v.shape[-1])
            '''], expect={rla: ("failed", ("broke the grading protocol",)),
                          **also_24("failed", "broke the grading protocol")}),
    ]
    return specs


CATALOGUE = catalogue()


def _digest(root: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("submissions")
    out = tmp_path_factory.mktemp("gradebook")
    for spec in CATALOGUE:
        spec.write(root)
    before = _digest(root)
    report = grade_folder(root, out, workers=2, options=OPTIONS, progress=False)
    return report, out, before, _digest(root)


def test_the_class_is_large_enough_and_fully_graded(graded):
    report, out, before, after = graded
    assert len(CATALOGUE) >= 40 and report.submissions == len(CATALOGUE)
    assert not report.skipped
    assert not [r for r in report.rows if r["status"] == "grader error"], \
        [r["feedback"] for r in report.rows if r["status"] == "grader error"][:2]
    assert before == after, "a submission was modified"


@pytest.mark.parametrize("spec", CATALOGUE, ids=lambda s: s.id)
def test_verdict(graded, spec):
    report = graded[0]
    rows = {r["function"]: r for r in report.rows if r["student"] == spec.student and r["lab"] == spec.lab}
    assert sorted(rows) == sorted(functions(spec.lab))
    for fn, row in rows.items():
        status, pieces = spec.expect.get(fn, (spec.default, ()))
        assert row["status"] == status, f"{fn}: {row['status']} instead of {status}:\n{row['feedback']}"
        assert row["passed"] == (status == "passed")
        for piece in pieces:
            assert piece in row["feedback"], f"{fn}: {piece!r} missing from:\n{row['feedback']}"
        assert row["message"] == row["feedback"].splitlines()[0] if row["feedback"] else True
        flag = spec.flags.get(fn)
        assert (flag in row["flags"]) if flag else not row["flags"], f"{fn}: flags {row['flags']!r}"


def test_gradebook_feedback_and_summary_files(graded):
    report, out = graded[:2]
    with open(out / "gradebook.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["student", "lab", "exercise", "function", "status", "passed", "message", "seconds",
                              "flags", "file"]
    assert [(r["student"], r["function"], r["status"]) for r in table] == \
        [(r["student"], r["function"], r["status"]) for r in report.rows]
    assert all("\n" not in r["message"] for r in table)
    feedback = (out / "feedback" / "wrong_exclusive.md").read_text()
    assert "### Exercise 2.2 — `recurrent_linear_attention`: failed" in feedback and "hint:" in feedback
    summary = (out / "summary.txt").read_text()
    assert "notebooks/min" in summary and "timed out" in summary and "out of memory" in summary


# ------------------------------------------------------------------------------------------ CLI, Dask, make


def test_cli(tmp_path):
    subs = tmp_path / "subs"
    Spec("ada", "03_chunkwise").write(subs)
    Spec("eve", "03_chunkwise", base="labs").write(subs)
    (subs / "notes.ipynb").write_text("{}")
    r = subprocess.run([sys.executable, "-m", "course_utils.gradebook", str(subs), str(tmp_path / "out"),
                        "--workers", "1", "--exercises", "3.2", "--timeout", "30", "--no-progress"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "not graded: notes.ipynb" in r.stdout and "3.2" in r.stdout
    rows = list(csv.DictReader(open(tmp_path / "out" / "gradebook.csv")))
    assert [(r["student"], r["status"]) for r in rows] == [("ada", "passed"), ("eve", "not attempted")]


def test_dask_local_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    subs = tmp_path / "subs"
    cheats = [s for s in CATALOGUE if s.student in ("killed", "cheat_always_equal")]
    for spec in (Spec("ada", "02_causal_rnn"), *cheats):
        spec.write(subs)
    options = Options(timeout=30.0, load_timeout=60.0, memory=2**30, exercises=("2.2", "2.3"))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                                  processes=True) as cluster:
        report = grade_folder(subs, tmp_path / "out", scheduler=cluster.scheduler_address, options=options,
                              progress=False)
    got = {(r["student"], r["exercise"]): r["status"] for r in report.rows}
    assert got == {("ada", "2.2"): "passed", ("ada", "2.3"): "passed", ("killed", "2.2"): "crashed",
                   ("killed", "2.3"): "passed", ("cheat_always_equal", "2.2"): "failed",
                   ("cheat_always_equal", "2.3"): "passed"}, report.rows
    assert "Dask cluster tcp://127.0.0.1:" in (tmp_path / "out" / "summary.txt").read_text()


def test_make_grade_passes_its_options():
    r = subprocess.run(["make", "-n", "grade", "SUBMISSIONS=in dir", "OUT=out", "SCHEDULER=tcp://h:8786"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "-m course_utils.gradebook 'in dir' 'out' --scheduler tcp://h:8786" in r.stdout
    r = subprocess.run(["make", "-n", "grade"], cwd=ROOT, capture_output=True, text=True)
    assert "usage: make grade SUBMISSIONS=dir" in r.stdout + r.stderr


# ------------------------------------------------------------------------------------------ the parts


def test_find_submissions(tmp_path):
    labs = list(LABS)
    for name in ("mary_ann_02_causal_rnn.ipynb", "bob-01_kernel_trick.ipynb", "carol/03_chunkwise.ipynb",
                 "carol/work/carol_02_causal_rnn.ipynb", "dan/dan_02_causal_rnn.ipynb",
                 "dan/.ipynb_checkpoints/02_causal_rnn-checkpoint.ipynb", "02_causal_rnn.ipynb", "essay.ipynb",
                 "erin_02_causal_rnn.ipynb", "erin/02_causal_rnn.ipynb"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    subs, skipped = find_submissions(tmp_path, labs)
    assert [(s.student, s.lab) for s in subs] == [
        ("bob", "01_kernel_trick"), ("carol", "02_causal_rnn"), ("carol", "03_chunkwise"), ("dan", "02_causal_rnn"),
        ("erin", "02_causal_rnn"), ("mary_ann", "02_causal_rnn")]
    assert {p for p, _ in skipped} == {"02_causal_rnn.ipynb", "essay.ipynb", "erin_02_causal_rnn.ipynb"}


def test_protocol_accepts_plain_data_only():
    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    with pytest.raises(ProtocolError):
        loads(dumps({"out": Evil()}))
    tensors: list = []
    template = to_template((torch.ones(2), [3, 2.5, None, True], object(), torch.zeros(1).as_subclass(
        type("Sub", (torch.Tensor,), {}))), tensors)
    value = from_template(template, tensors)
    assert torch.equal(value[0], torch.ones(2)) and value[1] == [3, 2.5, None, True]
    assert type(value[2]).__name__ == "object (not a plain tensor)"
    assert type(value[3]).__name__ == "Sub (a torch.Tensor subclass, not a plain tensor)"
    for bad in ({"T": 0, "tuple": []}, {"T": 5}, {"eval": "1"}, "text", {"list": [{"T": 0}, {"T": 0}]}):
        with pytest.raises(ProtocolError):
            from_template(bad, [torch.ones(1)])


def test_proxy_mirrors_the_signature_and_the_students_exception():
    class FakeWorker:
        display = "alice_02.ipynb"

        def call(self, fn, label, args, kwargs):
            return fn, args, kwargs

    info = {"name": "f", "params": [["q", 1, False], ["k", 1, False], ["scale", 1, True], ["flag", 3, True]]}
    proxy = make_proxy(FakeWorker(), "f", info)
    assert proxy.__name__ == "f"
    assert proxy(1, 2, flag=True) == ("f", (), {"q": 1, "k": 2, "flag": True})
    try:
        proxy(1, 2, initial_state=3)
    except TypeError as exc:  # raised by the call itself, as for the student's own function: one frame
        assert len(traceback.extract_tb(exc.__traceback__)) == 1 and "initial_state" in str(exc)
    err = {"type": "ZeroDivisionError", "message": "division by zero",
           "frame": ["alice_02.ipynb#cell5", 7, "recurrent_linear_attention", "x = 1 / 0"]}
    with pytest.raises(Exception) as info_exc:
        raise_as_student(err)
    last = traceback.extract_tb(info_exc.value.__traceback__)[-1]
    assert type(info_exc.value).__name__ == "ZeroDivisionError" and str(info_exc.value) == "division by zero"
    assert (last.filename, last.lineno, last.name, last.line) == ("alice_02.ipynb#cell5", 7,
                                                                  "recurrent_linear_attention", "x = 1 / 0")
    with pytest.raises(NotImplementedError):
        raise_as_student({"type": "NotImplementedError", "message": "Exercise 2.2", "frame": None})


def test_parse_bytes():
    assert parse_bytes("2GiB") == 2 * 2**30 and parse_bytes("512MiB") == 512 * 2**20 and parse_bytes("1000") == 1000
