"""Running an exercise: expected values (cached), each case through the checks, gradients, extra checks,
and the two lines printed on success.

`grade(exercise, fn)` takes the Exercise itself; `course_utils.grade("2.2", fn)` looks it up by id in
course_utils.exercises (the engine never imports the exercise specs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from course_utils.grading.checks import check_form, check_values, leaves, tolerance
from course_utils.grading.diagnosis import grad_name
from course_utils.grading.how import portable
from course_utils.grading.spec import Case, Exercise, TensorOut, dtype_name
from course_utils.grading.trial import (
    Fail,
    Trial,
    check_not_mutated,
    fail,
    format_exception,
    indent,
    is_unsolved_stub,
    library_gap_hint,
    snapshot,
)


@dataclass(frozen=True)
class Reference:
    """The expected result of a case, its input gradients (gradient cases) and what computed it."""

    value: Any
    grads: list[torch.Tensor] | None
    backend: str


@dataclass(frozen=True)
class Result:
    """What grade() found: passed, or the message of the first failure (one line: `summary`)."""

    exercise_id: str
    fn_name: str
    passed: bool
    message: str
    details: str = ""
    warnings: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        return self.message.splitlines()[0] if self.message else ""


_CACHE: dict[tuple, Reference] = {}
_COMPILED: set[tuple] = set()  # (reference, dtype, backward) already run on the GPU in this process


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
    return [torch.randn(*e.shape, generator=gen).to(e.device) if isinstance(n, TensorOut) else None
            for n, e in leaves(node, expected)]


def _loss(node: Any, out: Any, weights: list[torch.Tensor | None]) -> torch.Tensor | None:
    terms = [(v.float() * w).sum() for (n, v), w in zip(leaves(node, out), weights)
             if w is not None and isinstance(v, torch.Tensor) and v.requires_grad]
    return torch.stack(terms).sum() if terms else None


def _grad_leaves(inputs: dict[str, Any], names: tuple[str, ...]) -> list[tuple[str, torch.Tensor]]:
    return [(n, inputs[n]) for n in names if isinstance(inputs.get(n), torch.Tensor)]


def _detach(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, (tuple, list)):
        return tuple(_detach(v) for v in x)
    return x


def compile_notice(dtype: torch.dtype) -> str:
    """The line printed before a reference's first call on a GPU in `dtype` (removed by tests/nbval_sanitize.cfg,
    one or several in a row: the CPU outputs stored in the solutions have none)."""
    return (f"compiling: the first {dtype_name(dtype)} call of this reference on the GPU compiles its Triton kernels "
            "(seconds; tuned kernels can take a minute); later calls take milliseconds")


def reference(ex: Exercise, case: Case, device: torch.device, inputs: dict[str, Any]) -> Reference:
    """The expected result of a case (deterministic given the seed, so cached)."""
    from course_utils.refs import backends_used

    key = (ex.id, case.label(), case.seed, str(device))
    if key in _CACHE:
        return _CACHE[key]
    grad_names = ex.grad_inputs if case.grad else ()
    ref_in = _ref_inputs(inputs, grad_names)
    kernel = ex.reference_name is None  # a course_utils.refs call: fla / mamba-ssm kernels on a GPU
    if kernel and device.type == "cuda" and (ex.expected, case.dtype, bool(grad_names)) not in _COMPILED:
        _COMPILED.add((ex.expected, case.dtype, bool(grad_names)))
        print(compile_notice(case.dtype), flush=True)
    with torch.set_grad_enabled(bool(grad_names)), backends_used() as used:
        out = ex.expected(ref_in, case)
    backend = ex.reference_name or "; ".join(used) or "course_utils.refs"
    grads = None
    if grad_names:
        node = ex.output_for(case)
        loss = _loss(node, out, _loss_weights(node, out, case.seed))
        grad_leaves = _grad_leaves(ref_in, grad_names)
        gs = torch.autograd.grad(loss, [t for _, t in grad_leaves], allow_unused=True)
        grads = [torch.zeros_like(t) if gr is None else gr.detach() for (_, t), gr in zip(grad_leaves, gs)]
    ref = Reference(_detach(out), grads, backend)
    _CACHE[key] = ref
    return ref


# ------------------------------------------------------------------------------------------ one case


def run_case(ex: Exercise, fn: Callable[..., Any], fn_name: str, case: Case, device: torch.device
             ) -> tuple[float, str]:
    """Run one case; return (worst relative error, reference backend). Raises Fail."""
    inputs = ex.make_inputs(case, device)
    node = ex.output_for(case)
    grad_names = ex.grad_inputs if case.grad else ()
    if grad_names:
        inputs = _ref_inputs(inputs, grad_names)  # fresh leaves for the student, too
    ref = reference(ex, case, device, inputs)
    trial = Trial(ex, case, device, inputs, fn_name, tolerance(case.dtype, device), ref.value,
                  noncontiguous=bool(case.get("noncontiguous")))
    try:
        before = snapshot(inputs)
        got = trial.outputs_of(fn)
        check_not_mutated(inputs, before)
        check_form(got, node, ref.value, trial)
        try:
            worst = check_values(got, node, ref.value, trial, trial.tol)
        except Fail as f:
            if grad_names and ex.forward_note:
                f.message = ex.forward_note + "\n" + f.message
            raise
        if grad_names:
            worst = max(worst, _check_grads(trial, node, got, ref.grads))
    except Fail as f:
        f.last_call = trial.last_call
        raise
    return worst, ref.backend


def _check_grads(trial: Trial, node: Any, got: Any, exp_grads: list[Any]) -> float:
    ex, case, inputs = trial.exercise, trial.case, trial.inputs
    loss = _loss(node, got, _loss_weights(node, trial.expected, case.seed))
    if loss is None:
        fail("your output does not require grad, so no gradient reaches q, k, v",
             "something cut the autograd graph: .detach(), .data, torch.no_grad(), .numpy()/.item(), or "
             "torch.tensor(...) around intermediate results")
    for n, g in leaves(node, got):
        if isinstance(n, TensorOut) and isinstance(g, torch.Tensor) and not g.requires_grad:
            fail(f"{n.name} does not require grad: it is cut from the autograd graph",
                 f"{n.name} was detached (.detach(), .data, torch.no_grad()) or rebuilt with torch.tensor(...)")
    grad_leaves = _grad_leaves(inputs, ex.grad_inputs)
    try:
        grads = torch.autograd.grad(loss, [t for _, t in grad_leaves], allow_unused=True)
    except NotImplementedError as exc:
        if is_unsolved_stub(exc):
            raise
        fail("the backward pass through your function raised NotImplementedError\n" + indent(format_exception(exc), 4),
             library_gap_hint(exc))
    except Exception as exc:
        fail("the backward pass through your function raised an exception\n" + indent(format_exception(exc), 4),
             "an in-place change of a tensor autograd saved (x += ..., x[...] = ...) or a custom backward "
             "returning the wrong number/shape of gradients?")
    worst = 0.0
    weights = _loss_weights(node, trial.expected, case.seed)
    grad_trial = Trial(ex, case, trial.device, inputs, trial.fn_name, 2 * trial.tol, trial.expected,
                       grad_loss=(node, weights, ex.grad_inputs))
    for (name, t), g, e in zip(grad_leaves, grads, exp_grads):
        gname = grad_name(name)
        if g is None:
            if e.abs().max().item() == 0:
                continue
            fail(f"{gname} is None: `{name}` does not reach your output through autograd",
                 f"is `{name}` (or something computed from it) detached (.detach(), .data, torch.no_grad())?")
        node_g = TensorOut(f"gradient {gname}", ex.input_layouts.get(name))
        worst = max(worst, check_values(g, node_g, e, grad_trial, grad_trial.tol, kind="grad"))
    return worst


# ------------------------------------------------------------------------------------------ grade()


def _env_device_and_dtypes() -> tuple[torch.device, list[torch.dtype]]:
    """Device and dtypes to grade on: course_utils.env's (the GPU if any; fp16/bf16 where supported)."""
    from course_utils.env import get_env

    env = get_env()
    return env.device, list(env.dtypes)


def evaluate(ex: Exercise, fn: Callable[..., Any], device: torch.device | str | None = None,
             dtypes: list[torch.dtype] | None = None) -> Result:
    """Grade fn on every case, then the extra checks; never raises for the student's mistakes.

    NotImplementedError from an unsolved stub propagates unchanged.
    """
    if not callable(fn):
        raise TypeError(f"grade({ex.id!r}, fn) expects your function, got {type(fn).__name__} "
                        "(did you run the exercise cell?)")
    env_device, env_dtypes = _env_device_and_dtypes()
    device = torch.device(device or env_device)
    dtypes = list(dtypes or env_dtypes)
    fn_name = getattr(fn, "__name__", type(fn).__name__)
    cases = ex.cases(device, dtypes)
    worst, backends = 0.0, []
    for i, case in enumerate(cases):
        try:
            err, backend = run_case(ex, fn, fn_name, case, device)
        except Fail as f:
            return Result(ex.id, fn_name, False, _failure_message(ex, fn_name, f, case, i, len(cases)))
        worst = max(worst, err)
        if backend not in backends:
            backends.append(backend)
    for check in ex.extra_checks:
        trial = Trial(ex, cases[0], device, {}, fn_name)
        try:
            check(trial, fn)
        except Fail as f:
            f.last_call = trial.last_call
            return Result(ex.id, fn_name, False, _failure_message(ex, fn_name, f, None, None, len(cases)))
    # A CPU-only student has not met a GPU yet: warn now about tensors created without a device.
    warning = portable(Trial(ex, cases[0], device, {}, fn_name), fn) if device.type == "cpu" else None
    return Result(ex.id, fn_name, True, "", _details(cases, device, backends, worst),
                  (warning,) if warning else ())


def grade(ex: Exercise, fn: Callable[..., Any], device: torch.device | str | None = None,
          dtypes: list[torch.dtype] | None = None, quiet: bool = False) -> Result:
    """Check `fn` on the exercise's seeded cases; print two lines on success.

    Raises AssertionError with a diagnosis on the first failing case; re-raises NotImplementedError.
    """
    result = evaluate(ex, fn, device, dtypes)
    if not result.passed:
        raise AssertionError(result.message)
    if not quiet:
        print(f"✅ Exercise {ex.id} passed: {result.fn_name}")
        print(f"   details: {result.details}")
        for warning in result.warnings:
            print(f"   {warning}")
    return result


def _failure_message(ex: Exercise, fn_name: str, f: Fail, case: Case | None, i: int | None, n: int) -> str:
    head = f"Exercise {ex.id}: {fn_name} "
    head += f"fails case {i + 1}/{n}: {case.label()}" if case is not None and i is not None else \
        "passes every case, but:"
    lines = [head]
    if f.last_call and "(call: " not in f.message and "calling " not in f.message:
        lines.append(f"  call: {f.last_call}")
    lines.append(indent(f.message, 2))
    if f.hint:
        lines.append(indent("hint: " + f.hint, 2))
    return "\n".join(lines)


def _details(cases: list[Case], device: torch.device, backends: list[str], worst: float) -> str:
    dts = sorted({dtype_name(c.dtype) for c in cases})
    grads = " + gradients" if any(c.grad for c in cases) else ""
    where = "GPU" if device.type == "cuda" else device.type.upper()
    return (f"{len(cases)} cases{grads} on {where} ({', '.join(dts)}); max rel err {worst:.1e}; "
            f"reference: {'; '.join(backends)}")
