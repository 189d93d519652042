"""Naming the mistake behind a wrong value.

In order: an all-zero output; the exercise's catalogue (run each mistake's wrong implementation on the
failing case and see whose output the student's matches); the exercise's own diagnose hook; and what the
numbers alone say (reversed in time, a constant factor, a small error).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from course_utils.conventions import relative_rms_error
from course_utils.grading.spec import Failure

if TYPE_CHECKING:
    from course_utils.grading.trial import Trial


def hint_for_value(trial: Trial, failure: Failure, tol: float) -> str | None:
    got = failure.got
    if isinstance(got, torch.Tensor):
        if got.detach().abs().max().item() == 0:
            return "your output is all zeros: is the result written into the tensor you return?"
        err = failure.info.get("err")
        hint = matching_mistake(trial, failure.name, got, tol, err) or _diagnose(trial, failure)
        return hint or generic_value_hint(failure.name, got.detach().float(), failure.expected.detach().float(),
                                          failure.info.get("layout"), err, tol)
    return matching_mistake(trial, failure.name, got, tol) or _diagnose(trial, failure)


def _diagnose(trial: Trial, failure: Failure) -> str | None:
    return trial.exercise.diagnose(failure) if trial.exercise.diagnose else None


def mistake_outputs(trial: Trial) -> list[tuple[Any, Any]]:
    """(mistake, {leaf name: value}) for every catalogued mistake with a hint, run on the failing case
    (cached). In a gradient check the values are the mistake's input gradients ("gradient dq", ...), for
    the mistakes whose forward output is right (the student's forward passed already)."""
    if trial._mistake_outputs is None:
        from course_utils.grading.trial import Fail, snapshot

        outs = []
        node = trial.exercise.output_for(trial.case)
        last_call, noncontiguous = trial.last_call, trial.noncontiguous  # keep the student's for the message
        for mistake in trial.exercise.mistakes:
            if mistake.hint is None:
                continue
            try:
                if trial.grad_loss is None:
                    with torch.no_grad():
                        out = _by_name(node, trial.outputs_of(mistake.wrong_fn, snapshot(trial.inputs)))
                else:
                    out = _mistake_grads(trial, mistake.wrong_fn)
            except (Fail, Exception):  # a mistake that cannot run on this case names nothing here
                continue
            if out:
                outs.append((mistake, out))
        trial.last_call, trial.noncontiguous = last_call, noncontiguous
        trial._mistake_outputs = outs
    return trial._mistake_outputs


def _mistake_grads(trial: Trial, wrong_fn: Any) -> dict[str, Any]:
    from course_utils.grading.checks import leaves

    node, weights, names = trial.grad_loss
    inputs = {n: (v.detach().clone().requires_grad_(n in names) if isinstance(v, torch.Tensor) else v)
              for n, v in trial.inputs.items()}
    out = trial.outputs_of(wrong_fn, inputs)
    pairs = leaves(node, out)
    if not all(_close(v, e, trial.tol) for (_, v), (_, e) in zip(pairs, leaves(node, trial.expected))):
        return {}  # its forward is wrong too: not what the student did
    loss = sum((v.float() * w).sum() for (_, v), w in zip(pairs, weights)
               if w is not None and isinstance(v, torch.Tensor) and v.requires_grad)
    wrt = [n for n in names if isinstance(inputs.get(n), torch.Tensor)]
    grads = torch.autograd.grad(loss, [inputs[n] for n in wrt], allow_unused=True)
    return {f"gradient {grad_name(n)}": g for n, g in zip(wrt, grads) if g is not None}


def grad_name(name: str) -> str:
    """dq for q, d(initial_state) for initial_state."""
    return f"d{name}" if name in "qkv" else f"d({name})"


def _by_name(node: Any, value: Any) -> dict[str, Any]:
    from course_utils.grading.checks import leaves

    try:
        return {n.name: v for n, v in leaves(node, value)}
    except TypeError:
        return {}


def matching_mistake(trial: Trial, name: str, got: Any, tol: float, err: float | None = None) -> str | None:
    """The hint of the catalogued mistake whose output the student's matches best, if any matches.

    A mistake whose output equals the expected one on this case (e.g. "ignores the scale argument" in a
    case without one) says nothing and is skipped.
    """
    order = [n.name for n, _ in _expected_leaves(trial)]
    expected = {n.name: v for n, v in _expected_leaves(trial)}
    before = order[:order.index(name)] if name in order else []  # leaves already checked, and right
    best, best_err = None, math.inf
    for mistake, values in mistake_outputs(trial):
        a = values.get(name)
        if a is None or not all(_close(values.get(n), expected[n], tol) for n in before):
            continue  # this mistake would also have changed an output the student got right
        if isinstance(a, torch.Tensor):
            if not isinstance(got, torch.Tensor) or a.shape != got.shape or not torch.isfinite(a).all():
                continue
            exp = expected.get(name)
            if isinstance(exp, torch.Tensor) and exp.shape == a.shape and relative_rms_error(a, exp) <= tol:
                continue
            e = relative_rms_error(got, a)
            ok = e <= max(10 * tol, 1e-3) and (err is None or e < 0.5 * err)
        else:
            if not isinstance(a, int) or isinstance(a, bool) or a == expected.get(name):
                continue
            e = 0.0 if a == int(got) else math.inf
            ok = e == 0.0
        if ok and e < best_err:
            best, best_err = mistake.hint_for(trial.case), e
    return best


def _close(a: Any, b: Any, tol: float) -> bool:
    if isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and a.shape == b.shape and relative_rms_error(a, b) <= tol
    return a == b


def _expected_leaves(trial: Trial) -> list[tuple[Any, Any]]:
    from course_utils.grading.checks import leaves

    return leaves(trial.exercise.output_for(trial.case), trial.expected)


def generic_value_hint(name: str, g: torch.Tensor, e: torch.Tensor, layout: str | None, err: float | None,
                       tol: float) -> str:
    """What the numbers alone say: reversed time, a constant factor, or an error confined to a few rows."""
    time_axis = next((layout.index(a) for a in "TL" if layout and a in layout), None)  # T, or mamba's L
    if time_axis is not None and len(layout) == g.dim() and g.shape[time_axis] > 1:
        flipped = e.flip(time_axis)
        if relative_rms_error(g, flipped) <= max(10 * tol, 1e-3):
            return f"your {name} is the expected one reversed in time: iterating t backwards, or a flip?"
    denom = (e * e).sum().item()
    if denom > 0:
        c = (g * e).sum().item() / denom
        if abs(c - 1) > 10 * tol and relative_rms_error(g, c * e) <= max(10 * tol, 1e-3):
            return (f"your {name} is {c:.4g} × the expected one: a missing or extra constant factor "
                    "(a scale or step size applied twice, or not at all?)")
    if err is not None and err <= tol:
        return ("the error is confined to a few rows (the others are right): look at what is special about "
                "the rows listed above — the first or last step, one head, a chunk boundary")
    if err is not None and err < 2e-3:
        return ("close but above tolerance: low-precision accumulation? accumulate in float32 (and keep "
                "the state in float32)")
    return "compare your computation with the equation in the exercise's docstring step by step"


def where_wrong(wrong: torch.Tensor, layout: str | None) -> str:
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
