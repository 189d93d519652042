"""The grading engine: `grade("2.2", fn)` checks a student's function against `course_utils.refs`.

An exercise is a declarative spec (`Exercise`, registered from `course_utils/exercises/labNN.py`): its
seeded cases, how to build the inputs of a case, how to get the expected result from the reference
adapters, the shape of what the function returns (a tensor, an int, or a tuple such as (o, final_state)
whose items may be tuples themselves), which inputs' gradients are checked, and cheap *wrong* references
used only to explain a failure ("your output equals the reference without the scale").

A failure raises AssertionError that reads like a reviewer's note: the case, expected vs got shapes, the
relative RMS and max abs errors, the first wrong position (b, t, h, :) with both values side by side, and
a hint diagnosed from the data. A stub that raises NotImplementedError is re-raised unchanged.
"""

from __future__ import annotations

import importlib
import itertools
import math
import numbers
import os
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

__all__ = [
    "Alt",
    "Case",
    "Exercise",
    "Failure",
    "IntOut",
    "Student",
    "TensorOut",
    "TupleOut",
    "grade",
    "randn",
    "register",
    "EXERCISES",
]


# --------------------------------------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorOut:
    """A tensor in what the function returns. layout: one letter per dim ("BTHV"), None if the rank varies."""

    name: str
    layout: str | None = None
    state: bool = False  # a recurrent state: float32 (as the kernels keep it) or the inputs' dtype


@dataclass(frozen=True)
class IntOut:
    """A Python int in what the function returns (e.g. a FLOP count)."""

    name: str


@dataclass(frozen=True)
class TupleOut:
    """A tuple in what the function returns; items are TensorOut / IntOut / TupleOut."""

    name: str
    items: tuple[Any, ...]


@dataclass(frozen=True)
class Case:
    """One seeded test case. params are what make_inputs reads (B, T, H, dtype, flags, ...)."""

    params: dict[str, Any]
    seed: int = 0
    grad: bool = False  # also compare gradients of Exercise.grad_inputs in this case

    def __getitem__(self, key: str) -> Any:
        return self.params[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.params.get(key, default)

    @property
    def dtype(self) -> torch.dtype:
        return self.params.get("dtype", torch.float32)

    def label(self) -> str:
        parts = []
        for key, value in self.params.items():
            if key == "dtype":
                parts.append(_dtype_name(value))
            elif key == "noncontiguous":
                if value:
                    parts.append("non-contiguous inputs")
            else:
                parts.append(f"{key}={value}")
        if self.grad:
            parts.append("gradients")
        return " ".join(parts)


@dataclass
class Alt:
    """A cheap wrong reference: what a known mistake would return, keyed by output name."""

    hint: str
    values: dict[str, Any]


@dataclass
class Failure:
    """What a spec's diagnose hook sees. kind: "shape", "value", "nan", "grad"."""

    kind: str
    name: str
    got: Any
    expected: Any
    inputs: dict[str, Any]
    case: Case
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Exercise:
    """Everything grade() needs to know about one exercise.

    cases(device, dtypes) -> list[Case]         the seeded cases, cheapest and most telling first
    make_inputs(case, device) -> dict            every argument by name, built from torch.Generator(seed)
    expected(inputs, case) -> result             computed with course_utils.refs (differentiable if
                                                 grad_inputs is set); same structure as `output`
    output: Out | (case -> Out)                  the structure and names of what the function returns
    positional: names passed positionally; the other entries of inputs go as keywords.
    """

    id: str
    fn_name: str
    signature: str
    cases: Callable[[torch.device, list[torch.dtype]], list[Case]]
    make_inputs: Callable[[Case, torch.device], dict[str, Any]]
    expected: Callable[[dict[str, Any], Case], Any]
    output: Any
    positional: tuple[str, ...] = ()
    input_layouts: dict[str, str] = field(default_factory=dict)
    grad_inputs: tuple[str, ...] = ()
    # run(student, inputs, case) -> result: a custom driver (e.g. call a step function token by token)
    run: Callable[..., Any] | None = None
    alternatives: Callable[[dict[str, Any], Case, Any], list[Alt]] | None = None
    diagnose: Callable[[Failure], str | None] | None = None
    nan_hint: str = "overflow (exp of a large number?) or a division by zero?"
    # extra_checks(student, device) run after all cases pass (e.g. a complexity check); raise via fail()
    extra_checks: tuple[Callable[..., None], ...] = ()
    # exception_hint(case): a hint for any exception the student's code raises in this case
    exception_hint: Callable[[Case], str | None] | None = None
    # where the expected values come from when it is not a course_utils.refs call (else refs.last_backend())
    reference_name: str | None = None
    # prepended to value failures in gradient cases (e.g. "the forward pass is already wrong: fix 2.2")
    forward_note: str = ""

    def output_for(self, case: Case) -> Any:
        return self.output(case) if callable(self.output) else self.output


EXERCISES: dict[str, Exercise] = {}


def register(exercise: Exercise) -> Exercise:
    """Add a spec to the registry (called at import of course_utils/exercises/labNN.py)."""
    EXERCISES[exercise.id] = exercise
    return exercise


def randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    """Seeded standard normal on the CPU (move it with .to(device, dtype) afterwards)."""
    return torch.randn(*shape, generator=gen)


# --------------------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------------------


def _env_device_and_dtypes() -> tuple[torch.device, list[torch.dtype]]:
    """Device and dtypes to grade on: course_utils.env's (the GPU if any; fp16/bf16 where supported)."""
    from course_utils.env import get_env

    env = get_env()
    return env.device, list(env.dtypes)


def _tolerance(dtype: torch.dtype, device: torch.device) -> float:
    """Relative RMS tolerance. On a GPU fp32 references run fla/mamba kernels that use TF32 matmuls."""
    if dtype == torch.float16:
        return 1e-2
    if dtype == torch.bfloat16:
        return 3e-2  # a plain bf16 loop (state accumulated in bf16) lands near 1e-2 at T=100
    if dtype == torch.float64:
        return 1e-8
    return 5e-3 if device.type == "cuda" else 1e-4


# --------------------------------------------------------------------------------------------------------
# Calling the student's function
# --------------------------------------------------------------------------------------------------------


class _Fail(Exception):
    """Internal: a failed check; grade() turns it into the AssertionError the student sees."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


def fail(message: str, hint: str | None = None) -> None:
    """For spec hooks (runners, extra checks): report a failure of the current case."""
    raise _Fail(message, hint)


_LIBRARY_MARKERS = (os.sep + "site-packages" + os.sep, os.sep + "dist-packages" + os.sep, os.sep + "lib" + os.sep
                    + "python", os.sep + "course_utils" + os.sep, "<frozen ")


def _user_frames(exc: BaseException) -> list[traceback.FrameSummary]:
    """Frames of the traceback that belong to the student's code (not ours, torch's or the stdlib's)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return [f for f in frames if not any(m in f.filename for m in _LIBRARY_MARKERS)]


def _format_exception(exc: BaseException) -> str:
    """'RuntimeError: ...' plus the last frame of the student's code, as a traceback shows it."""
    lines = [f"{type(exc).__name__}: {exc}".rstrip()]
    # fall back to the deepest frame outside this module (student code kept under a "lib/python" path)
    frames = _user_frames(exc) or [f for f in traceback.extract_tb(exc.__traceback__)[1:]
                                   if os.path.abspath(f.filename) != os.path.abspath(__file__)]
    if frames:
        f = frames[-1]
        lines.append(f'  File "{f.filename}", line {f.lineno}, in {f.name}')
        if f.line:
            lines.append(f"    {f.line.strip()}")
    return "\n".join(lines)


class Student:
    """Wraps the student's function: calls it, and turns anything it does wrong into a _Fail."""

    def __init__(self, fn: Callable[..., Any], exercise: Exercise):
        self.fn = fn
        self.exercise = exercise
        self.name = getattr(fn, "__name__", type(fn).__name__)
        self.case: Case | None = None  # the case being graded (for hints)
        self.inputs: dict[str, Any] = {}
        self.noncontiguous = False  # explains exceptions raised on views
        self.last_call = ""

    def call(self, args: tuple, kwargs: dict[str, Any], call_repr: str, where: str = "") -> Any:
        """Run fn(*args, **kwargs). NotImplementedError passes through unchanged (an unsolved stub)."""
        self.last_call = call_repr
        try:
            return self.fn(*args, **kwargs)
        except NotImplementedError:
            raise
        except Exception as exc:  # the student's bug: show it with their line
            at = f" {where}" if where else ""
            if isinstance(exc, TypeError) and len(traceback.extract_tb(exc.__traceback__)) == 1:
                # raised by the call itself (no frame of the function ran): the signature does not match
                fail(f"calling {call_repr}{at} raised {type(exc).__name__}: {exc}",
                     f"the function must accept the arguments of the spec: {self.exercise.signature}")
            hint = self.exercise.exception_hint(self.case) if self.exercise.exception_hint and self.case else None
            if "in-place" in str(exc):
                hint = ("an argument (or a tensor autograd needs) is modified in place (x *= ..., x.mul_(...), "
                        "x[...] = ...): build new tensors instead")
            elif self.noncontiguous:
                hint = ("this case passes non-contiguous inputs (strided views such as x.transpose(1, 2) "
                        "or q[:, t]): use .reshape() or .contiguous() where you used .view()")
            fail(f"your function raised an exception{at} (call: {call_repr})\n"
                 + _indent(_format_exception(exc), 4), hint)

    def call_inputs(self, inputs: dict[str, Any], where: str = "") -> Any:
        """Call with the exercise's positional names first and everything else as keywords."""
        pos = self.exercise.positional
        args = tuple(inputs[n] for n in pos)
        kwargs = {n: v for n, v in inputs.items() if n not in pos}
        return self.call(args, kwargs, self.call_repr(inputs), where)

    def call_repr(self, inputs: dict[str, Any]) -> str:
        pos = self.exercise.positional
        parts = [_short_repr(n, inputs[n]) for n in pos]
        parts += [f"{n}={_short_repr(n, v)}" for n, v in inputs.items() if n not in pos]
        return f"{self.name}({', '.join(parts)})"

    # The checks below are also what custom runners (Exercise.run) use on intermediate results.
    def check_form(self, got: Any, node: Any, expected: Any, where: str = "") -> None:
        _check_form(got, node, expected, where, top=True, student=self)


def _short_repr(name: str, value: Any) -> str:
    if isinstance(value, (torch.Tensor, tuple)):
        return name
    return repr(value)


def _indent(text: str, n: int) -> str:
    return "\n".join(" " * n + line for line in text.splitlines())


# --------------------------------------------------------------------------------------------------------
# Formatting helpers
# --------------------------------------------------------------------------------------------------------


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def _layout_str(layout: str) -> str:
    return "[" + ",".join(layout) + "]"


def _index_str(idx: tuple[int, ...], layout: str | None, keep_last: bool = True) -> str:
    """(b=0, t=5, h=1, :) for layout BTHV; the last dim shown as ':' (the whole row is printed)."""
    if layout is None or len(layout) != len(idx):
        names = [f"{i}" for i in idx]
    else:
        names = [f"{c.lower()}={i}" for c, i in zip(layout, idx)]
    if len(idx) >= 2:
        names = names[:-1] + ([":"] if keep_last else [])
    return "(" + ", ".join(names) + ")"


def _row(t: torch.Tensor, idx: tuple[int, ...], n: int = 6) -> str:
    row = t[idx[:-1]] if t.dim() >= 2 else t
    vals = row.flatten()[:n].tolist()
    more = ", ..." if row.numel() > n else ""
    return "[" + ", ".join(f"{v:+.4f}" for v in vals) + more + "]"


# --------------------------------------------------------------------------------------------------------
# Structure checks: None, tuple vs tensor, type, device, dtype, shape
# --------------------------------------------------------------------------------------------------------


def _names(node: Any) -> str:
    """'(o, final_state)'; a leaf named 'final_state[0] (S)' shows as 'S'."""
    if isinstance(node, TupleOut):
        return "(" + ", ".join(_names(i) if isinstance(i, TupleOut) else _short(i.name) for i in node.items) + ")"
    return _short(node.name)


def _short(name: str) -> str:
    return name[name.index("(") + 1:name.rindex(")")] if "(" in name and name.endswith(")") else name


def _check_form(got: Any, node: Any, expected: Any, where: str, top: bool, student: Student) -> None:
    at = f" {where}" if where else ""
    what = "your function returned" if top else f"{node.name} is"
    if isinstance(node, TupleOut):
        if got is None:
            if top:
                fail(f"your function returned None{at}; expected a tuple {_names(node)}",
                     "did you forget the `return` statement?")
            fail(f"{node.name} is None{at}; expected a tuple {_names(node)}",
                 "the course always returns the final state (conventions: final_state is never None)")
        if isinstance(got, torch.Tensor):
            fail(f"{what} a tensor of shape {_shape(got)}{at}; expected a tuple {_names(node)}",
                 f"return a tuple: `return {_names(node).strip('()')}`" if top else
                 f"with these arguments {node.name} is the tuple {_names(node)}")
        if not isinstance(got, (tuple, list)):
            fail(f"{what} a {type(got).__name__}{at}; expected a tuple {_names(node)}")
        if len(got) != len(node.items):
            fail(f"{what} a tuple of {len(got)} items{at}; expected {len(node.items)}: {_names(node)}")
        for g, n, e in zip(got, node.items, expected):
            _check_form(g, n, e, where, top=False, student=student)
        return
    if isinstance(node, IntOut):
        if got is None:
            fail(f"your function returned None{at}; expected an int", "did you forget the `return` statement?")
        if isinstance(got, bool) or not isinstance(got, numbers.Integral):
            if isinstance(got, float) or (isinstance(got, torch.Tensor) and got.numel() == 1):
                fail(f"{what} {type(got).__name__} {got!r}{at}; expected a Python int",
                     "use integer arithmetic (// instead of /) or wrap the result in int(...)")
            fail(f"{what} a {type(got).__name__}{at}; expected a Python int")
        return
    # TensorOut
    if got is None:
        if top:
            fail(f"your function returned None{at}; expected a tensor {node.name}",
                 "did you forget the `return` statement?")
        fail(f"{node.name} is None{at}; expected a tensor",
             f"return {node.name} too: the course always returns the state (conventions: final_state is "
             "never None)" if "state" in node.name else None)
    if isinstance(got, (tuple, list)):
        shapes = ", ".join(_shape(g) if isinstance(g, torch.Tensor) else type(g).__name__ for g in got)
        fail(f"{what} a {type(got).__name__} of {len(got)} items ({shapes}){at}; expected a single tensor "
             f"{node.name} {_shape(expected)}",
             "this exercise returns only the tensor, not a tuple")
    if not isinstance(got, torch.Tensor):
        fail(f"{what} a {type(got).__name__}{at}; expected a torch.Tensor {node.name} {_shape(expected)}")
    if got.device != expected.device:
        fail(f"{node.name} is on device '{got.device}'{at}; the inputs are on '{expected.device}'",
             "create new tensors on the inputs' device, e.g. torch.zeros(..., device=q.device), or "
             "torch.zeros_like(v)")
    state_ok = node.state and student.case is not None and got.dtype in (torch.float32, student.case.dtype)
    if got.dtype != expected.dtype and not state_ok:
        inputs_dtype = _dtype_name(expected.dtype)
        hint = (f"compute in float32 if you like, but return the input dtype: .to({inputs_dtype}) "
                "(e.g. o.to(q.dtype))")
        if got.dtype == torch.float64:
            hint = "a float64 tensor crept in (torch.tensor(...) of Python floats, or numpy?); " + hint
        fail(f"{node.name} has dtype {_dtype_name(got.dtype)}{at}; expected {inputs_dtype} (the inputs' dtype)",
             hint)
    if got.shape != expected.shape:
        diagnose = student.exercise.diagnose
        hint = diagnose(Failure("shape", node.name, got, expected, student.inputs, student.case)) \
            if diagnose and student.case is not None else None
        fail(f"{node.name}: expected shape {_shape(expected)}, got {_shape(got)}{at}"
             + _shape_note(got.shape, expected.shape, node.layout), hint)


def _shape_note(got: torch.Size, exp: torch.Size, layout: str | None) -> str:
    """' — looks head-first [B,H,T,D]; ...' when got is a permutation of the expected dims."""
    if layout is None or len(got) != len(exp) or len(layout) != len(exp) or sorted(got) != sorted(exp):
        if len(got) != len(exp):
            return f" (rank {len(got)}, expected rank {len(exp)})"
        return ""
    for perm in itertools.permutations(range(len(exp))):
        if tuple(exp[p] for p in perm) == tuple(got):
            seen = "".join(layout[p] for p in perm)
            if "T" in layout and "H" in layout and seen == layout.replace("T", "_").replace("H", "T").replace("_", "H"):
                return " — looks head-first [B,H,T,D]; the course uses [B,T,H,D]"
            if layout.endswith("KV") and seen.endswith("VK"):
                return f" — looks transposed {_layout_str(seen)}; the course's state is {_layout_str(layout)}"
            return f" — looks like {_layout_str(seen)}; the course uses {_layout_str(layout)}"
    return ""


# --------------------------------------------------------------------------------------------------------
# Value checks
# --------------------------------------------------------------------------------------------------------


def _leaves(node: Any, value: Any) -> list[tuple[Any, Any]]:
    """(node, value) pairs for every TensorOut/IntOut in a structure."""
    if isinstance(node, TupleOut):
        return [pair for n, v in zip(node.items, value) for pair in _leaves(n, v)]
    return [(node, value)]


def rel_err(got: torch.Tensor, exp: torch.Tensor) -> float:
    """Relative RMS error ||got - exp|| / ||exp|| (absolute RMS when exp is all zeros)."""
    g, e = got.detach().double().cpu(), exp.detach().double().cpu()
    denom = e.norm().item()
    diff = (g - e).norm().item()
    return diff / denom if denom > 0 else diff / math.sqrt(max(e.numel(), 1))


def _time_first_order(t: torch.Tensor, layout: str | None) -> torch.Tensor:
    """Indices of the True entries of a bool tensor, sorted by time step first (then b, h, ...)."""
    idx = t.nonzero()
    if layout and "T" in layout and len(layout) == t.dim() and len(idx):
        ti = layout.index("T")
        key = idx[:, ti] * (t.numel() + 1)
        flat = torch.zeros(len(idx), dtype=torch.long)
        for d in range(t.dim()):
            flat = flat * t.shape[d] + idx[:, d]
        idx = idx[torch.argsort(key + flat)]
    return idx


@dataclass
class _Ctx:
    exercise: Exercise
    case: Case
    inputs: dict[str, Any]
    expected: Any
    tol: float
    alternatives: Callable[[], list[Alt]]
    where: str = ""


def _check_values(got: Any, node: Any, expected: Any, ctx: _Ctx, kind: str = "value") -> float:
    """Compare every leaf; return the worst relative error. Raises _Fail with a diagnosis."""
    worst = 0.0
    for n, g, e in [(n, g, e) for (n, g), (_, e) in zip(_leaves(node, got), _leaves(node, expected))]:
        if isinstance(n, IntOut):
            if int(g) != int(e):
                hint = _match_alternatives(n.name, g, ctx) or _diagnose(ctx, Failure(kind, n.name, g, e,
                                                                                    ctx.inputs, ctx.case))
                fail(f"{n.name}: expected {int(e):,}, got {int(g):,} (ratio {int(g) / max(int(e), 1):.4g})", hint)
            continue
        worst = max(worst, _check_tensor(g, e, n, ctx, kind))
    return worst


def _check_tensor(got: torch.Tensor, exp: torch.Tensor, node: TensorOut, ctx: _Ctx, kind: str) -> float:
    layout = node.layout
    g, e = got.detach().float(), exp.detach().float()
    bad = ~torch.isfinite(g) & torch.isfinite(e)
    if bad.any():
        first = tuple(_time_first_order(bad.cpu(), layout)[0].tolist())
        what = "NaN" if torch.isnan(g[first]).item() else "Inf"
        hint = _diagnose(ctx, Failure("nan", node.name, got, exp, ctx.inputs, ctx.case)) or ctx.exercise.nan_hint
        fail(f"{node.name}: {what} at {_index_str(first, layout, keep_last=False)} ({int(bad.sum())} of "
             f"{bad.numel()} entries are not finite)", f"{what} at {_index_str(first, layout, False)}: {hint}")
    err = rel_err(g, e)
    if err <= ctx.tol:
        return err
    diff = (g - e).abs()
    scale = e.pow(2).mean().sqrt().item()
    wrong = (diff > ctx.tol * max(scale, 1e-30)).cpu()
    order = _time_first_order(wrong, layout)
    first = tuple(order[0].tolist()) if len(order) else tuple(torch.nonzero(diff == diff.max())[0].tolist())
    amax = tuple(torch.nonzero(diff == diff.max())[0].tolist())
    lines = [
        f"{node.name}: relative RMS error {err:.2e} (tolerance {ctx.tol:.0e}), max abs error "
        f"{diff.max().item():.3e} at {_index_str(amax, layout)}, shape {_shape(got)} ✓",
        f"first wrong at {_index_str(first, layout)}:",
        f"   expected {_row(e.cpu(), first)}",
        f"   got      {_row(g.cpu(), first)}",
    ]
    where = _where_wrong(wrong, layout)
    if where:
        lines.append(f"wrong entries: {where}")
    failure = Failure(kind, node.name, got, exp, ctx.inputs, ctx.case,
                      {"wrong": wrong, "err": err, "first": first, "layout": layout})
    hint = (_all_zero_hint(g) or _match_alternatives(node.name, got, ctx, err) or _diagnose(ctx, failure)
            or _generic_value_hint(node.name, g, e, layout, err, ctx.tol))
    fail("\n".join(lines), hint)
    return err  # unreachable


def _diagnose(ctx: _Ctx, failure: Failure) -> str | None:
    return ctx.exercise.diagnose(failure) if ctx.exercise.diagnose else None


def _all_zero_hint(g: torch.Tensor) -> str | None:
    if g.abs().max().item() == 0:
        return "your output is all zeros: is the result written into the tensor you return?"
    return None


def _match_alternatives(name: str, got: Any, ctx: _Ctx, err: float | None = None) -> str | None:
    """The hint of the known mistake whose output the student's matches best, if any matches."""
    best, best_err = None, math.inf
    for alt in ctx.alternatives():
        if name not in alt.values:
            continue
        a = alt.values[name]
        if isinstance(a, torch.Tensor):
            if not isinstance(got, torch.Tensor) or a.shape != got.shape or not torch.isfinite(a).all():
                continue
            e = rel_err(got, a)
            ok = e <= max(10 * ctx.tol, 1e-3) and (err is None or e < 0.5 * err)
        else:
            e = 0.0 if int(a) == int(got) else math.inf
            ok = e == 0.0
        if ok and e < best_err:
            best, best_err = alt.hint, e
    return best


def _generic_value_hint(name: str, g: torch.Tensor, e: torch.Tensor, layout: str | None, err: float,
                        tol: float) -> str:
    """What the numbers alone say: reversed time, a constant factor, or a small (precision) error."""
    if layout and "T" in layout and len(layout) == g.dim() and g.shape[layout.index("T")] > 1:
        flipped = e.flip(layout.index("T"))
        if rel_err(g, flipped) <= max(10 * tol, 1e-3):
            return f"your {name} is the expected one reversed in time: iterating t backwards, or a flip?"
    denom = (e * e).sum().item()
    if denom > 0:
        c = (g * e).sum().item() / denom
        if abs(c - 1) > 10 * tol and rel_err(g, c * e) <= max(10 * tol, 1e-3):
            return (f"your {name} is {c:.4g} × the expected one: a missing or extra constant factor "
                    "(the scale?)")
    if err < 0.05:
        return ("close but above tolerance: a small term missing (an eps in the wrong place?) or low "
                "precision accumulation (accumulate in float32)")
    return "compare your computation with the equation in the exercise's docstring step by step"


def _where_wrong(wrong: torch.Tensor, layout: str | None) -> str:
    """'t in [1, 62] (62 of 63 steps); only b=1' — which slices along B, T, H hold the wrong entries."""
    if not layout or len(layout) != wrong.dim():
        return ""
    parts = []
    for axis, letter in enumerate(layout[:-1]):
        if letter not in "BTH":
            continue
        other = tuple(d for d in range(wrong.dim()) if d != axis)
        hit = wrong.any(dim=other) if other else wrong
        ids = hit.nonzero().flatten().tolist()
        n = wrong.shape[axis]
        if letter == "T" and ids:
            parts.append(f"t in [{ids[0]}, {ids[-1]}] ({len(ids)} of {n} steps)")
        elif 0 < len(ids) < n:
            parts.append(f"only {letter.lower()} in {ids} of {n}")
    return "; ".join(parts)


# --------------------------------------------------------------------------------------------------------
# Expected values (cached: the references are deterministic given the seed)
# --------------------------------------------------------------------------------------------------------

_CACHE: dict[tuple, tuple[Any, list[Any] | None, str]] = {}


def _ref_inputs(inputs: dict[str, Any], grad_names: tuple[str, ...]) -> dict[str, Any]:
    """Contiguous detached copies for the reference; grad inputs become fresh leaves."""

    def copy(name: str, v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            c = v.detach().clone().contiguous()
            return c.requires_grad_(True) if name in grad_names else c
        if isinstance(v, tuple):
            return tuple(copy(name, x) for x in v)
        return v

    return {n: copy(n, v) for n, v in inputs.items()}


def _loss_weights(node: Any, expected: Any, seed: int) -> list[torch.Tensor | None]:
    gen = torch.Generator().manual_seed(seed + 7919)
    return [randn(gen, *e.shape).to(e.device) if isinstance(n, TensorOut) else None
            for n, e in _leaves(node, expected)]


def _loss(node: Any, out: Any, weights: list[torch.Tensor | None]) -> torch.Tensor | None:
    terms = [(v.float() * w).sum() for (n, v), w in zip(_leaves(node, out), weights)
             if w is not None and isinstance(v, torch.Tensor) and v.requires_grad]
    return torch.stack(terms).sum() if terms else None


def _grad_leaves(inputs: dict[str, Any], names: tuple[str, ...]) -> list[tuple[str, torch.Tensor]]:
    return [(n, inputs[n]) for n in names if isinstance(inputs.get(n), torch.Tensor)]


def _expected(ex: Exercise, case: Case, device: torch.device, inputs: dict[str, Any]
              ) -> tuple[Any, list[Any] | None, str]:
    key = (ex.id, case.label(), case.seed, str(device))
    if key in _CACHE:
        return _CACHE[key]
    grad_names = ex.grad_inputs if case.grad else ()
    ref_in = _ref_inputs(inputs, grad_names)
    with torch.set_grad_enabled(bool(grad_names)):
        out = ex.expected(ref_in, case)
    backend = ex.reference_name or _last_backend()
    grads = None
    if grad_names:
        node = ex.output_for(case)
        loss = _loss(node, out, _loss_weights(node, out, case.seed))
        leaves = _grad_leaves(ref_in, grad_names)
        gs = torch.autograd.grad(loss, [t for _, t in leaves], allow_unused=True)
        grads = [torch.zeros_like(t) if gr is None else gr.detach() for (_, t), gr in zip(leaves, gs)]
    out = _detach(out)
    _CACHE[key] = (out, grads, backend)
    return out, grads, backend


def _detach(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, (tuple, list)):
        return tuple(_detach(v) for v in x)
    return x


def _last_backend() -> str:
    try:
        from course_utils.refs import last_backend

        return last_backend()
    except ImportError:
        return "course_utils.refs"


# --------------------------------------------------------------------------------------------------------
# Running one case
# --------------------------------------------------------------------------------------------------------


def _snapshot(inputs: dict[str, Any]) -> dict[str, Any]:
    return {n: _detach_clone(v) for n, v in inputs.items()}


def _detach_clone(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.detach().clone()
    if isinstance(v, tuple):
        return tuple(_detach_clone(x) for x in v)
    return v


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and torch.equal(a.detach(), b)
    if isinstance(a, tuple):
        return all(_same(x, y) for x, y in zip(a, b))
    return True


def check_not_mutated(inputs: dict[str, Any], snapshot: dict[str, Any], where: str = "") -> None:
    """Fail if the student changed an argument in place (compares with clones taken before the call)."""
    at = f" {where}" if where else ""
    for name, value in inputs.items():
        if not _same(value, snapshot[name]):
            fail(f"your function modified its argument `{name}` in place{at}",
                 f"arguments belong to the caller: build new tensors (`{name} = {name} + x`) instead of "
                 f"changing theirs (`{name} += x`, `{name}.mul_(...)`, `{name}[...] = ...`)")


def _run_case(ex: Exercise, student: Student, case: Case, device: torch.device) -> tuple[float, str]:
    """Run one case; return (worst relative error, reference backend). Raises _Fail."""
    inputs = ex.make_inputs(case, device)
    node = ex.output_for(case)
    grad_names = ex.grad_inputs if case.grad else ()
    if grad_names:
        inputs = _ref_inputs(inputs, grad_names)  # fresh leaves for the student, too
    expected, exp_grads, backend = _expected(ex, case, device, inputs)
    student.case, student.inputs = case, inputs
    student.noncontiguous = bool(case.get("noncontiguous"))
    snapshot = _snapshot(inputs)
    got = ex.run(student, inputs, case) if ex.run else student.call_inputs(inputs)
    check_not_mutated(inputs, snapshot)
    _check_form(got, node, expected, "", top=True, student=student)
    tol = _tolerance(case.dtype, device)
    alts: list[list[Alt]] = []

    def alternatives() -> list[Alt]:  # built only when something fails
        if not alts:
            alts.append(ex.alternatives(_snapshot(inputs), case, expected) if ex.alternatives else [])
        return alts[0]

    ctx = _Ctx(ex, case, inputs, expected, tol, alternatives)
    try:
        worst = _check_values(got, node, expected, ctx)
    except _Fail as f:
        if grad_names and ex.forward_note:
            f.message = ex.forward_note + "\n" + f.message
        raise
    if grad_names:
        worst = max(worst, _check_grads(ex, student, case, inputs, node, got, expected, exp_grads, tol))
    return worst, backend


def _check_grads(ex: Exercise, student: Student, case: Case, inputs: dict[str, Any], node: Any, got: Any,
                 expected: Any, exp_grads: list[Any], tol: float) -> float:
    loss = _loss(node, got, _loss_weights(node, expected, case.seed))
    if loss is None:
        fail("your output does not require grad, so no gradient reaches q, k, v",
             "something cut the autograd graph: .detach(), .data, torch.no_grad(), .numpy()/.item(), or "
             "torch.tensor(...) around intermediate results")
    for n, g in _leaves(node, got):
        if isinstance(n, TensorOut) and isinstance(g, torch.Tensor) and not g.requires_grad:
            fail(f"{n.name} does not require grad: it is cut from the autograd graph",
                 f"{n.name} was detached (.detach(), .data, torch.no_grad()) or rebuilt with torch.tensor(...)")
    leaves = _grad_leaves(inputs, ex.grad_inputs)
    try:
        grads = torch.autograd.grad(loss, [t for _, t in leaves], allow_unused=True)
    except NotImplementedError:
        raise
    except Exception as exc:
        fail("the backward pass through your function raised an exception\n"
             + _indent(_format_exception(exc), 4),
             "an in-place change of a tensor autograd saved (x += ..., x[...] = ...) or a custom backward "
             "returning the wrong number/shape of gradients?")
    worst = 0.0
    ctx = _Ctx(ex, case, inputs, expected, 2 * tol, lambda: [])
    for (name, t), g, e in zip(leaves, grads, exp_grads):
        gname = f"d{name}" if name in "qkv" else f"d({name})"
        if g is None:
            if e.abs().max().item() == 0:
                continue
            fail(f"{gname} is None: `{name}` does not reach your output through autograd",
                 f"is `{name}` (or something computed from it) detached (.detach(), .data, torch.no_grad())?")
        node_g = TensorOut(f"gradient {gname}", ex.input_layouts.get(name))
        worst = max(worst, _check_values(g, node_g, e, ctx, kind="grad"))
    return worst


# --------------------------------------------------------------------------------------------------------
# grade()
# --------------------------------------------------------------------------------------------------------


def _load_specs() -> None:
    """Import course_utils.exercises (which imports every labNN.py) once."""
    if not EXERCISES:
        importlib.import_module("course_utils.exercises")


def grade(exercise_id: str, fn: Callable[..., Any], **options: Any) -> None:
    """Check `fn` against the reference on the exercise's seeded cases; print two lines on success.

    options: device (str | torch.device) and dtypes (list of torch dtypes) override the environment's;
    quiet=True prints nothing on success.
    Raises AssertionError with a diagnosis on the first failing case; re-raises NotImplementedError.
    """
    _load_specs()
    if exercise_id not in EXERCISES:
        raise ValueError(f"unknown exercise {exercise_id!r}; known: {', '.join(sorted(EXERCISES))}")
    unknown = set(options) - {"device", "dtypes", "quiet"}
    if unknown:
        raise TypeError(f"grade() got unknown options {sorted(unknown)}; allowed: device, dtypes, quiet")
    if not callable(fn):
        raise TypeError(f"grade({exercise_id!r}, fn) expects your function, got {type(fn).__name__} "
                        "(did you run the exercise cell?)")
    ex = EXERCISES[exercise_id]
    device, dtypes = _env_device_and_dtypes()
    device = torch.device(options.get("device") or device)
    dtypes = list(options.get("dtypes") or dtypes)
    student = Student(fn, ex)
    cases = ex.cases(device, dtypes)
    worst, backends = 0.0, []
    for i, case in enumerate(cases):
        try:
            err, backend = _run_case(ex, student, case, device)
        except _Fail as f:
            raise AssertionError(_failure_message(ex, student, i, len(cases), case, f)) from None
        worst = max(worst, err)
        if backend not in backends:
            backends.append(backend)
    try:
        for check in ex.extra_checks:
            check(student, device)
    except _Fail as f:
        raise AssertionError(_failure_message(ex, student, None, len(cases), None, f)) from None
    if not options.get("quiet"):
        print(f"✅ Exercise {ex.id} passed: {student.name}")
        print(f"   details: {_details(ex, cases, device, backends, worst)}")


def _failure_message(ex: Exercise, student: Student, i: int | None, n: int, case: Case | None, f: _Fail) -> str:
    head = f"Exercise {ex.id}: {student.name} "
    head += f"fails case {i + 1}/{n}: {case.label()}" if case is not None else "passes every case, but:"
    lines = [head]
    if student.last_call and "(call: " not in f.message and "calling " not in f.message:
        lines.append(f"  call: {student.last_call}")
    lines.append(_indent(f.message, 2))
    if f.hint:
        lines.append(_indent("hint: " + f.hint, 2))
    return "\n".join(lines)


def _details(ex: Exercise, cases: list[Case], device: torch.device, backends: list[str], worst: float) -> str:
    dts = sorted({_dtype_name(c.dtype) for c in cases})
    grads = " + gradients" if any(c.grad for c in cases) else ""
    where = "GPU" if device.type == "cuda" else device.type.upper()
    return (f"{len(cases)} cases{grads} on {where} ({', '.join(dts)}); max rel err {worst:.1e}; "
            f"reference: {'; '.join(backends)}")
