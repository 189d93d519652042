"""The checks of one result: its structure (None, tuple vs tensor, type, device, dtype, shape), then its
values (NaN/Inf, relative RMS error, the worst row), each failure reading like a reviewer's note."""

from __future__ import annotations

import itertools
import numbers
from typing import Any

import torch

from course_utils.conventions import layout_str, max_row_relative_error, relative_rms_error
from course_utils.grading import diagnosis
from course_utils.grading.spec import Failure, IntOut, TensorOut, TupleOut, dtype_name
from course_utils.grading.trial import Trial, fail


def tolerance(dtype: torch.dtype, device: torch.device) -> float:
    """Relative RMS tolerance. On a GPU fp32 references run fla/mamba kernels that use TF32 matmuls."""
    if dtype == torch.float16:
        return 1e-2
    if dtype == torch.bfloat16:
        return 3e-2  # a plain bf16 loop (state accumulated in bf16) lands near 1e-2 at T=100
    if dtype == torch.float64:
        return 1e-8
    return 5e-3 if device.type == "cuda" else 1e-4


ROW_FACTOR = 5
"""A row (one b, t, h) may be this many times the tolerance off before the RMS over the tensor hides it."""


def leaves(node: Any, value: Any) -> list[tuple[Any, Any]]:
    """(node, value) pairs for every TensorOut/IntOut in a structure."""
    if isinstance(node, TupleOut):
        return [pair for n, v in zip(node.items, value) for pair in leaves(n, v)]
    return [(node, value)]


# ------------------------------------------------------------------------------------------ formatting


def shape_str(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def index_str(idx: tuple[int, ...], layout: str | None, keep_last: bool = True) -> str:
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


def _names(node: Any) -> str:
    """'(o, final_state)'; a leaf named 'final_state[0] (S)' shows as 'S'."""
    if isinstance(node, TupleOut):
        return "(" + ", ".join(_names(i) if isinstance(i, TupleOut) else _short(i.name) for i in node.items) + ")"
    return _short(node.name)


def _short(name: str) -> str:
    return name[name.index("(") + 1:name.rindex(")")] if "(" in name and name.endswith(")") else name


# ------------------------------------------------------------------------------------------ structure


def check_form(got: Any, node: Any, expected: Any, trial: Trial, where: str = "", top: bool = True) -> None:
    """None, tuple vs tensor, type, device, dtype, shape — before any value is compared."""
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
            fail(f"{what} a tensor of shape {shape_str(got)}{at}; expected a tuple {_names(node)}",
                 f"return a tuple: `return {_names(node).strip('()')}`" if top else
                 f"with these arguments {node.name} is the tuple {_names(node)}")
        if not isinstance(got, (tuple, list)):
            fail(f"{what} a {type(got).__name__}{at}; expected a tuple {_names(node)}")
        if len(got) != len(node.items):
            fail(f"{what} a tuple of {len(got)} items{at}; expected {len(node.items)}: {_names(node)}")
        for g, n, e in zip(got, node.items, expected):
            check_form(g, n, e, trial, where, top=False)
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
    _check_tensor_form(got, node, expected, trial, at, what, top)


def _check_tensor_form(got: Any, node: TensorOut, expected: torch.Tensor, trial: Trial, at: str, what: str,
                       top: bool) -> None:
    if got is None:
        if top:
            fail(f"your function returned None{at}; expected a tensor {node.name}",
                 "did you forget the `return` statement?")
        fail(f"{node.name} is None{at}; expected a tensor",
             f"return {node.name} too: the course always returns the state (conventions: final_state is "
             "never None)" if "state" in node.name else None)
    if isinstance(got, (tuple, list)):
        shapes = ", ".join(shape_str(g) if isinstance(g, torch.Tensor) else type(g).__name__ for g in got)
        fail(f"{what} a {type(got).__name__} of {len(got)} items ({shapes}){at}; expected a single tensor "
             f"{node.name} {shape_str(expected)}",
             "this exercise returns only the tensor, not a tuple")
    if not isinstance(got, torch.Tensor):
        fail(f"{what} a {type(got).__name__}{at}; expected a torch.Tensor {node.name} {shape_str(expected)}")
    if got.device != expected.device:
        fail(f"{node.name} is on device '{got.device}'{at}; the inputs are on '{expected.device}'",
             "create new tensors on the inputs' device, e.g. torch.zeros(..., device=q.device), or "
             "torch.zeros_like(v)")
    state_ok = node.state and got.dtype in (torch.float32, trial.case.dtype)
    if got.dtype != expected.dtype and not state_ok:
        inputs_dtype = dtype_name(expected.dtype)
        hint = (f"compute in float32 if you like, but return the input dtype: .to({inputs_dtype}) "
                "(e.g. o.to(q.dtype))")
        if got.dtype == torch.float64:
            hint = "a float64 tensor crept in (torch.tensor(...) of Python floats, or numpy?); " + hint
        fail(f"{node.name} has dtype {dtype_name(got.dtype)}{at}; expected {inputs_dtype} (the inputs' dtype)",
             hint)
    if got.shape != expected.shape:
        diagnose = trial.exercise.diagnose
        hint = diagnose(Failure("shape", node.name, got, expected, trial)) if diagnose else None
        fail(f"{node.name}: expected shape {shape_str(expected)}, got {shape_str(got)}{at}"
             + _shape_note(got.shape, expected.shape, node.layout), hint)


def _shape_note(got: torch.Size, exp: torch.Size, layout: str | None) -> str:
    """' — looks head-first [B,H,T,D]; ...' when got is a permutation of the expected dims."""
    if layout is None or len(got) != len(exp) or len(layout) != len(exp) or sorted(got) != sorted(exp):
        if len(got) != len(exp):
            return f" (rank {len(got)}, expected rank {len(exp)})"
        return ""
    compact = lambda s: layout_str(s).replace(" ", "")  # noqa: E731
    for perm in itertools.permutations(range(len(exp))):
        if tuple(exp[p] for p in perm) == tuple(got):
            seen = "".join(layout[p] for p in perm)
            if "T" in layout and "H" in layout and seen == layout.replace("T", "_").replace("H", "T").replace("_", "H"):
                return " — looks head-first [B,H,T,D]; the course uses [B,T,H,D]"
            if layout.endswith("KV") and seen.endswith("VK"):
                return f" — looks transposed {compact(seen)}; the course's state is {compact(layout)}"
            return f" — looks like {compact(seen)}; the course uses {compact(layout)}"
    return ""


# ------------------------------------------------------------------------------------------ values


def check_values(got: Any, node: Any, expected: Any, trial: Trial, tol: float, kind: str = "value") -> float:
    """Compare every leaf; return the worst relative error. Raises Fail with a diagnosis."""
    worst = 0.0
    for (n, g), (_, e) in zip(leaves(node, got), leaves(node, expected)):
        if isinstance(n, IntOut):
            if int(g) != int(e):
                hint = diagnosis.hint_for_value(trial, Failure(kind, n.name, g, e, trial), tol)
                fail(f"{n.name}: expected {int(e):,}, got {int(g):,} (ratio {int(g) / max(int(e), 1):.4g})", hint)
            continue
        worst = max(worst, check_tensor(g, e, n, trial, tol, kind))
    return worst


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


def check_tensor(got: torch.Tensor, exp: torch.Tensor, node: TensorOut, trial: Trial, tol: float,
                 kind: str = "value") -> float:
    layout = node.layout
    g, e = got.detach().float(), exp.detach().float()
    bad = ~torch.isfinite(g) & torch.isfinite(e)
    if bad.any():
        first = tuple(_time_first_order(bad.cpu(), layout)[0].tolist())
        what = "NaN" if torch.isnan(g[first]).item() else "Inf"
        diagnose = trial.exercise.diagnose
        hint = (diagnose(Failure("nan", node.name, got, exp, trial)) if diagnose else None) \
            or trial.exercise.nan_hint
        fail(f"{node.name}: {what} at {index_str(first, layout, keep_last=False)} ({int(bad.sum())} of "
             f"{bad.numel()} entries are not finite)", f"{what} at {index_str(first, layout, False)}: {hint}")
    err = relative_rms_error(g, e)
    row_err = max_row_relative_error(g, e)
    if err <= tol and row_err <= ROW_FACTOR * tol:
        return err
    diff = (g - e).abs()
    scale = e.pow(2).mean().sqrt().item()
    wrong = (diff > tol * max(scale, 1e-30)).cpu()
    order = _time_first_order(wrong, layout)
    first = tuple(order[0].tolist()) if len(order) else tuple(torch.nonzero(diff == diff.max())[0].tolist())
    amax = tuple(torch.nonzero(diff == diff.max())[0].tolist())
    head = (f"{node.name}: relative RMS error {err:.2e} (tolerance {tol:.0e})" if err > tol else
            f"{node.name}: relative RMS error {err:.2e} is within tolerance, but the worst row is "
            f"{row_err:.2e} off (tolerance {ROW_FACTOR * tol:.0e} per row)")
    lines = [
        f"{head}, max abs error {diff.max().item():.3e} at {index_str(amax, layout)}, shape {shape_str(got)} ✓",
        f"first wrong at {index_str(first, layout)}:",
        f"   expected {_row(e.cpu(), first)}",
        f"   got      {_row(g.cpu(), first)}",
    ]
    where = diagnosis.where_wrong(wrong, layout)
    if where:
        lines.append(f"wrong entries: {where}")
    failure = Failure(kind, node.name, got, exp, trial, {"wrong": wrong, "err": err, "first": first,
                                                         "layout": layout})
    picture = trial.exercise.explain(failure) if trial.exercise.explain and kind == "value" else None
    if picture:
        lines.append(picture)
    fail("\n".join(lines), diagnosis.hint_for_value(trial, failure, tol))
    return err  # unreachable
