"""One case of one exercise being graded, and calling a function on it.

A `Trial` carries everything about the case at hand — the exercise, the case, its inputs, the tolerance,
the expected result — and is passed explicitly to every check, runner and diagnosis. Calling the
student's function through it turns whatever goes wrong into a `Fail` with the student's own line.
"""

from __future__ import annotations

import os
import re
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from course_utils.grading.spec import Case, Exercise

_LIBRARY_DIRS = ("/site-packages/", "/dist-packages/")
_TORCH_DTYPE_GAP = re.compile(r"not implemented for '([^']+)'|Could not run '")


def is_unsolved_stub(exc: NotImplementedError) -> bool:
    """Whether `exc` is an unsolved exercise's `raise NotImplementedError(...)` (passed through unchanged), not a
    library refusing a call the student's code made: torch without a kernel for a dtype ('"lu_cpu" not
    implemented for 'BFloat16'', raised from C++, so the student's line is the innermost frame) or a Python
    library's own `raise` (e.g. an fla kernel without a backward)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if frames and any(d in frames[-1].filename.replace("\\", "/") for d in _LIBRARY_DIRS):
        return False
    return not _TORCH_DTYPE_GAP.search(str(exc))


def library_gap_hint(exc: NotImplementedError) -> str:
    """What to do when a library call raised NotImplementedError (see is_unsolved_stub)."""
    gap = _TORCH_DTYPE_GAP.search(str(exc))
    if gap and gap.group(1):
        return (f"torch has no {gap.group(1)} version of an operation you call on this device: compute that step in "
                "float32 (x.float()) and cast the result back to the inputs' dtype (.to(q.dtype))")
    return ("a library function you call does not support this use (its message above says what): compute "
            "that step yourself, as the exercise asks")


class Fail(Exception):
    """A failed check; the engine turns it into the AssertionError the student sees."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.last_call = ""  # the call that produced what failed (set by the engine)


def fail(message: str, hint: str | None = None) -> None:
    """For runners and extra checks: report a failure of the current case."""
    raise Fail(message, hint)


@dataclass
class Trial:
    """The case being graded. `noncontiguous` explains exceptions raised on views; `last_call` is shown
    in the failure message."""

    exercise: Exercise
    case: Case
    device: torch.device
    inputs: dict[str, Any]
    fn_name: str
    tol: float = 0.0
    expected: Any = None
    noncontiguous: bool = False
    last_call: str = ""
    # gradient checks: (output structure, loss weights, names of the inputs whose gradients are compared)
    grad_loss: tuple[Any, list[Any], tuple[str, ...]] | None = None
    _mistake_outputs: list[tuple[Any, Any]] | None = field(default=None, repr=False)

    # ---------------------------------------------------------------------------------------- calling
    def call(self, fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any], call_repr: str,
             where: str = "") -> Any:
        """fn(*args, **kwargs). NotImplementedError passes through unchanged (an unsolved stub)."""
        self.last_call = call_repr
        try:
            return fn(*args, **kwargs)
        except NotImplementedError as exc:
            if is_unsolved_stub(exc):
                raise
            at = f" {where}" if where else ""
            fail(f"a library call in your function raised NotImplementedError{at} (call: {call_repr})\n"
                 + indent(format_exception(exc), 4), library_gap_hint(exc))
        except Exception as exc:  # the student's bug: show it with their line
            at = f" {where}" if where else ""
            if isinstance(exc, TypeError) and len(traceback.extract_tb(exc.__traceback__)) == 1:
                # raised by the call itself (no frame of the function ran): the signature does not match
                fail(f"calling {call_repr}{at} raised {type(exc).__name__}: {exc}",
                     f"the function must accept the arguments of the spec: {self.exercise.signature}")
            fail(f"your function raised an exception{at} (call: {call_repr})\n"
                 + indent(format_exception(exc), 4), self._exception_hint(exc))

    def _exception_hint(self, exc: Exception) -> str | None:
        text = str(exc)
        if "in-place" in text:
            return ("an argument (or a tensor autograd needs) is modified in place (x *= ..., x.mul_(...), "
                    "x[...] = ...): build new tensors instead")
        if "Expected all tensors to be on the same device" in text or "device" in text and "cpu" in text:
            return ("a tensor you created is on another device than the inputs: make new tensors with "
                    "device=q.device (torch.zeros(..., device=q.device)) or from an input (q.new_zeros(...), "
                    "torch.zeros_like(v))")
        if self.noncontiguous and ("view" in text or "stride" in text):
            return ("this case passes non-contiguous inputs (strided views such as x.transpose(1, 2) "
                    "or q[:, t]): use .reshape() or .contiguous() where you used .view()")
        if self.exercise.exception_hint:
            hint = self.exercise.exception_hint(self.case)
            if hint:
                return hint
        if self.noncontiguous:
            return ("this case passes non-contiguous inputs (strided views such as x.transpose(1, 2) "
                    "or q[:, t]): use .reshape() or .contiguous() where you used .view()")
        return None

    def call_inputs(self, fn: Callable[..., Any], inputs: dict[str, Any] | None = None, where: str = "") -> Any:
        """Call with the exercise's positional names first and everything else as keywords."""
        inputs = self.inputs if inputs is None else inputs
        pos = self.exercise.positional
        args = tuple(inputs[n] for n in pos)
        kwargs = {n: v for n, v in inputs.items() if n not in pos}
        return self.call(fn, args, kwargs, self.call_repr(inputs), where)

    def call_repr(self, inputs: dict[str, Any]) -> str:
        pos = self.exercise.positional
        parts = [_short_repr(n, inputs[n]) for n in pos]
        parts += [f"{n}={_short_repr(n, v)}" for n, v in inputs.items() if n not in pos]
        return f"{self.fn_name}({', '.join(parts)})"

    def outputs_of(self, fn: Callable[..., Any], inputs: dict[str, Any] | None = None) -> Any:
        """What fn returns on this case, through the exercise's driver (its runner, or one call)."""
        inputs = self.inputs if inputs is None else inputs
        if self.exercise.run:
            return self.exercise.run(self, fn, inputs)
        return self.call_inputs(fn, inputs)


def _short_repr(name: str, value: Any) -> str:
    if isinstance(value, (torch.Tensor, tuple)):
        return name
    return repr(value)


def indent(text: str, n: int) -> str:
    return "\n".join(" " * n + line for line in text.splitlines())


_LIBRARY_MARKERS = (os.sep + "site-packages" + os.sep, os.sep + "dist-packages" + os.sep, os.sep + "lib" + os.sep
                    + "python", os.sep + "course_utils" + os.sep, "<frozen ")


_ENGINE_FILES = {"trial.py", "engine.py", "checks.py", "diagnosis.py"}


def format_exception(exc: BaseException) -> str:
    """'RuntimeError: ...' plus the last frame of the student's code, as a traceback shows it."""
    lines = [f"{type(exc).__name__}: {exc}".rstrip()]
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if not any(m in f.filename for m in _LIBRARY_MARKERS)]
    # fall back to the deepest frame outside the engine (student code kept under a "lib/python" path, or
    # the catalogue's own wrong implementations)
    frames = mine or [f for f in frames[1:] if os.path.basename(f.filename) not in _ENGINE_FILES]
    if frames:
        f = frames[-1]
        lines.append(f'  File "{f.filename}", line {f.lineno}, in {f.name}')
        if f.line:
            lines.append(f"    {f.line.strip()}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ mutation


def snapshot(inputs: dict[str, Any]) -> dict[str, Any]:
    return {n: detach_clone(v) for n, v in inputs.items()}


def detach_clone(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.detach().clone()
    if isinstance(v, tuple):
        return tuple(detach_clone(x) for x in v)
    return v


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and torch.equal(a.detach(), b)
    if isinstance(a, tuple):
        return all(_same(x, y) for x, y in zip(a, b))
    return True


def check_not_mutated(inputs: dict[str, Any], before: dict[str, Any], where: str = "") -> None:
    """Fail if the function changed an argument in place (compares with clones taken before the call)."""
    at = f" {where}" if where else ""
    for name, value in inputs.items():
        if not _same(value, before[name]):
            fail(f"your function modified its argument `{name}` in place{at}",
                 f"arguments belong to the caller: build new tensors (`{name} = {name} + x`) instead of "
                 f"changing theirs (`{name} += x`, `{name}.mul_(...)`, `{name}[...] = ...`)")
