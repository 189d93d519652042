"""Checks of *how* a function computes, for exercises whose point is the how: no library call doing the
work, no T×T intermediate, no loop over chunks, code that runs on any device.

Each check runs the student's function on small probe inputs of its own and reports through `fail`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode

from course_utils.grading.trial import Trial, fail

# Python packages whose code does the work the exercises ask students to write
FORBIDDEN_PACKAGES = {
    "fla": os.sep + "fla" + os.sep,
    "mamba_ssm": os.sep + "mamba_ssm" + os.sep,
    "course_utils.refs": os.sep + "course_utils" + os.sep + "refs" + os.sep,
}


class TorchCalls(TorchFunctionMode):
    """Records every torch function / tensor method called inside the `with` block: how many, which, and
    the largest tensor any of them returned (numel)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.names: set[str] = set()
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        self.names.add(getattr(func, "__name__", str(func)))
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


TRITON_RUNTIME = {"triton": os.sep + "triton" + os.sep + "runtime" + os.sep}  # kernel launches (jit, interpreter)


@contextmanager
def library_calls(packages: dict[str, str] = FORBIDDEN_PACKAGES) -> Iterator[set[str]]:
    """`with library_calls() as used:` — `used` gets the name of every package in `packages` (by default the
    forbidden ones: fla, mamba_ssm, course_utils.refs) whose Python code runs inside the block."""
    used: set[str] = set()
    previous = sys.getprofile()

    def profile(frame, event, arg):
        if event == "call":
            filename = frame.f_code.co_filename
            for name, marker in packages.items():
                if marker in filename:
                    used.add(name)
        if previous is not None:
            previous(frame, event, arg)

    sys.setprofile(profile)
    try:
        yield used
    finally:
        sys.setprofile(previous)


def forbid(*torch_functions: str) -> Callable[[Trial, Callable[..., Any]], None]:
    """A check that fn, on the exercise's first case, calls neither fla / mamba-ssm / course_utils.refs nor
    any of `torch_functions` (by name, e.g. "scaled_dot_product_attention")."""

    def check(trial: Trial, fn: Callable[..., Any]) -> None:
        ex = trial.exercise
        case = ex.cases(trial.device, [torch.float32])[0]
        inputs = ex.make_inputs(case, trial.device)
        probe = Trial(ex, case, trial.device, inputs, trial.fn_name)
        with torch.no_grad(), TorchCalls() as calls, library_calls() as packages:
            probe.outputs_of(fn)
        trial.last_call = probe.last_call
        banned = sorted(n for n in calls.names if n in torch_functions)
        if packages or banned:
            what = ", ".join(sorted(packages) + [f"torch's {n}" for n in banned])
            fail(f"how check: your function calls {what}, which computes the answer for you",
                 "this exercise asks you to compute it yourself, from the equation in its docstring: "
                 "use basic tensor operations (einsum, matmul, softmax, cumsum, ...), not a library's attention")
    return check


NO_TXT = ("this form never materialises anything T×T: keep only what grows linearly with T (a state per step "
          "or per chunk, the outputs), as the equation in the docstring does")


# What a launcher may do in PyTorch besides launching kernels: allocate (and fill or copy into what it allocated),
# pad, look at shapes and strides, change the layout or the dtype of a tensor (views, .contiguous(), .to(...)), and
# check its inputs (comparisons, any/all, max/min, isfinite) to raise a clear error. Anything else computes part of
# the answer.
LAUNCHER_TORCH_OPS = frozenset({
    "__get__", "__len__", "__getitem__", "__bool__", "__index__", "__int__", "__float__", "__format__", "__repr__",
    "__hash__", "item", "tolist",
    "size", "stride", "dim", "ndimension", "numel", "nelement", "element_size", "is_contiguous",
    "is_floating_point", "data_ptr", "storage_offset", "untyped_storage", "get_device",
    "empty", "empty_like", "empty_strided", "zeros", "zeros_like", "ones", "ones_like", "full", "full_like",
    "new_empty", "new_zeros", "new_ones", "new_full", "new_empty_strided", "tensor", "as_tensor", "new_tensor",
    "arange",
    "__setitem__", "copy_", "fill_", "zero_", "pad", "constant_pad_nd", "cat", "concat", "concatenate",
    "contiguous", "view", "reshape", "view_as", "reshape_as", "transpose", "permute", "unsqueeze", "squeeze",
    "flatten", "unflatten", "expand", "expand_as", "broadcast_to", "as_strided", "repeat", "repeat_interleave",
    "t", "movedim", "narrow", "select", "unbind", "chunk", "split",
    "to", "type", "type_as", "float", "half", "bfloat16", "double", "int", "long", "bool", "cuda", "cpu", "detach",
    "clone", "requires_grad_",
    "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "eq", "ne", "lt", "le", "gt", "ge", "any", "all",
    "isfinite", "isnan", "isinf", "max", "min", "amax", "amin", "aminmax",
})


class LauncherCalls(TorchCalls):
    """TorchCalls for a launcher: records only the torch calls made by the launcher itself, not those Triton's
    runtime makes while it launches (data_ptr, and the interpreter's copies to and from the host)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        frame = sys._getframe(1)
        while frame is not None:
            if TRITON_RUNTIME["triton"] in frame.f_code.co_filename:
                return func(*args, **(kwargs or {}))
            frame = frame.f_back
        return super().__torch_function__(func, types, args, kwargs)


def launches_a_kernel(trial: Trial, fn: Callable[..., Any]) -> None:
    """A check that fn computes with Triton kernels only: on the exercise's first case, Triton's runtime (its
    launcher, or the interpreter on a CPU) must run inside the call, and the launcher itself may call torch only to
    allocate, pad, reshape, cast or check its inputs (LAUNCHER_TORCH_OPS) — a launcher that computes part of the
    answer in PyTorch (the chunk states with torch.einsum, the cumulative gates with torch.cumsum, a reduction of
    partial outputs) fails."""
    ex = trial.exercise
    case = ex.cases(trial.device, [torch.float32])[0]
    probe = Trial(ex, case, trial.device, ex.make_inputs(case, trial.device), trial.fn_name)
    with torch.no_grad(), LauncherCalls() as calls, library_calls(TRITON_RUNTIME) as used:
        probe.outputs_of(fn)
    trial.last_call = probe.last_call
    if not used:
        fail("kernel check: your function launched no Triton kernel — it computes the answer in PyTorch",
             "this exercise is about writing the kernel: decorate it with @triton.jit and launch it with "
             "kernel[grid](...) from the function")
    computed = sorted(n for n in calls.names if n not in LAUNCHER_TORCH_OPS)
    if computed:
        fail("kernel check: your function launches a kernel but computes part of the answer in PyTorch (it calls "
             f"torch's {', '.join(computed)} outside the kernel)",
             "the launcher only allocates outputs, makes inputs contiguous (reshapes, pads, casts) and launches; "
             "every arithmetic step of the exercise (sums, products, exponentials, cumulative sums, reductions of "
             "partial results) belongs inside your @triton.jit kernels — a preprocessing step too: give it a "
             "kernel of its own")


def no_quadratic_memory(make_probe: Callable[[int, torch.device], tuple[tuple, dict]], small: int = 256,
                        large: int = 1024, what: str = "a T×T matrix", hint: str = NO_TXT
                        ) -> Callable[[Trial, Callable[..., Any]], None]:
    """A check that the largest intermediate tensor grows linearly with T, not like T².

    make_probe(T, device) -> (args, kwargs) builds inputs of length T with tiny other dims, so a T×T
    tensor dominates any linear one. Linear growth multiplies the largest tensor by large/small (4); a T×T
    one by (large/small)² (16).
    """

    def largest(trial: Trial, fn: Callable[..., Any], T: int) -> int:
        args, kwargs = make_probe(T, trial.device)
        with torch.no_grad(), TorchCalls() as calls:
            trial.call(fn, args, kwargs, f"{trial.fn_name}(... T={T} ...)", where=f"(memory check, T={T})")
        return max(calls.largest, 1)

    def check(trial: Trial, fn: Callable[..., Any]) -> None:
        a, b = largest(trial, fn, small), largest(trial, fn, large)
        ratio, linear = b / a, large / small
        if ratio > linear * linear ** 0.5:  # well past linear (4×), towards quadratic (16×)
            fail(f"memory check: your largest intermediate tensor grows from {a:,} elements at T={small} to "
                 f"{b:,} at T={large} ({ratio:.1f}× for {linear:.0f}× the length): it grows like T², so "
                 f"your function builds {what}", hint)
    return check


def portable(trial: Trial, fn: Callable[..., Any]) -> str | None:
    """Run fn once on `meta` tensors: a tensor created without a device (torch.zeros(B, H, K, V)) shows up
    as a device error, as it would on a GPU. Returns a warning (None when fine or when the probe cannot run:
    some operations have no meta implementation)."""
    ex = trial.exercise
    if ex.run is not None:
        return None
    case = ex.cases(torch.device("cpu"), [torch.float32])[0]
    meta = torch.device("meta")
    try:
        inputs = ex.make_inputs(case, meta)
    except Exception:  # noqa: BLE001 — this exercise's inputs cannot be built on meta: nothing to say
        return None
    pos = ex.positional
    try:
        with torch.no_grad():
            fn(*(inputs[n] for n in pos), **{n: v for n, v in inputs.items() if n not in pos})
    except Exception as exc:  # noqa: BLE001
        text = str(exc)
        if "meta" in text and ("device" in text or "cpu" in text):
            return ("⚠ portability: on a GPU this function will fail — it mixes the inputs' device with a tensor "
                    "created on the CPU (" + text.splitlines()[0][:120] + "). Create new tensors with "
                    "device=q.device or from an input (q.new_zeros(...), torch.zeros_like(v)).")
    return None
