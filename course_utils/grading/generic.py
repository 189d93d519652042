"""Mistakes every exercise must catch whatever it computes, made from a correct implementation: a wrong
return structure, dtype or device, an argument changed in place, an exception, NaN, zeros, a layout slip.

They test the engine's structure and value checks; each exercise's own catalogue (`Exercise.mistakes`)
holds the mistakes in its formula. `catalogue(exercise, correct_fn)` is both lists together.

Only mistakes that apply are made, decided from what the exercise declares (its main output's layout, its first
argument in the first case), never from its id: a layout slip needs the axes it names (head-first: a rank >= 3
output; reversed in time: a time axis, T or mamba's L), NaN at (0, 5, 1) a rank >= 3 output, and mutating,
raising on, or .view()-ing the first argument need a tensor there (a .view() of one with fewer than 3 dims to its
own shape never fails, so it is correct code, not a mistake). Where a layout is not declared (None), the course's
[B, T, H, D] is assumed.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from course_utils.grading.checks import index_str
from course_utils.grading.spec import Exercise, IntOut, Mistake, TensorOut, TupleOut

CPU = {"device": "cpu", "dtypes": [torch.float32]}
BF16 = {"device": "cpu", "dtypes": [torch.float32, torch.bfloat16]}  # CPU torch has bf16: the tests use it
RAISE_LINE = "boom = first[..., first.shape[-1]]"


def _named(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    fn.__name__ = name
    return fn


def _map_main(fn: Callable[..., Any], f: Callable[[Any], Any], name: str) -> Callable[..., Any]:
    """fn with f applied to its main output (the first item of a tuple)."""

    def wrong(*args, **kwargs):
        out = fn(*args, **kwargs)
        return (f(out[0]),) + tuple(out[1:]) if isinstance(out, tuple) else f(out)

    return _named(wrong, name)


def _noise(o: torch.Tensor) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return o + 1e-3 * o.float().pow(2).mean().sqrt() * torch.randn(o.shape, generator=gen).to(o.device, o.dtype)


def _nan_at(index: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
    def put(o: torch.Tensor) -> torch.Tensor:
        o = o.clone()
        o[index] = float("nan")
        return o

    return put


def _mutating(fn: Callable[..., Any]) -> Callable[..., Any]:
    def mutates_input(first, *args, **kwargs):
        out = fn(first, *args, **kwargs)
        first.mul_(2.0)
        return out

    return mutates_input


def _viewing(fn: Callable[..., Any]) -> Callable[..., Any]:
    def uses_view(first, *args, **kwargs):
        flat = first.view(-1, first.shape[-1])
        return fn(flat.view(first.shape), *args, **kwargs)

    return uses_view


def _raising(fn: Callable[..., Any]) -> Callable[..., Any]:
    def raises_inside(first, *args, **kwargs):
        boom = first[..., first.shape[-1]]  # one past the end: IndexError
        return fn(boom, *args, **kwargs)

    return raises_inside


def _divides_by_zero(T, C, K, V):
    return T // (C - C)


def _main_layout(node: Any) -> str | None:
    """The layout of the main output (the first item of a tuple, as _map_main changes it); None if undeclared."""
    while isinstance(node, TupleOut):
        node = node.items[0]
    return node.layout if isinstance(node, TensorOut) else None


def _time_axis(layout: str) -> int | None:
    """Where time is in a layout: T (the course's [B, T, H, D]) or L (mamba-ssm's [B, D, L]); None if absent."""
    for letter in "TL":
        if letter in layout:
            return layout.index(letter)
    return None


def _first_argument(ex: Exercise) -> Any:
    """The first positional argument of the first case (what _mutating, _raising and _viewing receive)."""
    if not ex.positional:
        return None
    case = ex.cases(torch.device("cpu"), [torch.float32])[0]
    return ex.make_inputs(case, torch.device("cpu")).get(ex.positional[0])


def generic_mistakes(ex: Exercise, fn: Callable[..., Any]) -> list[Mistake]:
    """The structure/value mistakes that apply to this exercise's output and arguments, made from the correct
    `fn` (see the module docstring for what applies when)."""
    cases = ex.cases(torch.device("cpu"), [torch.float32])
    node = ex.output_for(cases[0])
    if isinstance(node, IntOut):
        return [
            Mistake("returns None", _named(lambda *a, **k: None, "returns_none"), says=("`return`",)),
            Mistake("raises inside", _divides_by_zero, says=("ZeroDivisionError", "T // (C - C)")),
        ]
    tuple_out = isinstance(node, TupleOut)
    layout = _main_layout(node)
    if ex.run is not None:  # a driver calls fn with its own arguments (a step's [B, H, K] slices), not the inputs'
        tensor_first, first_rank = True, 3
    else:
        first = _first_argument(ex)
        tensor_first = isinstance(first, torch.Tensor)
        first_rank = first.dim() if tensor_first else 0
    out = [
        Mistake("zeros", _map_main(fn, torch.zeros_like, "zeros"), says=("all zeros",)),
        Mistake("output + 0.1% noise", _map_main(fn, _noise, "noisy"), says=("close but above tolerance",)),
        Mistake("returns None", _named(lambda *a, **k: None, "returns_none"), says=("`return`",)),
        Mistake("returns float64", _map_main(fn, lambda o: o.double(), "float64"), says=("dtype float64",)),
        Mistake("casts bf16 input to fp32", _map_main(fn, lambda o: o.float(), "upcasts"), says=("dtype float32",),
                options=BF16),
        Mistake("wrong device", _map_main(fn, lambda o: o.to("meta"), "on_meta"), says=("device 'meta'",)),
    ]
    if tensor_first:
        out += [
            Mistake("mutates its input", _mutating(fn), says=("in place",)),
            Mistake("raises inside", _raising(fn), says=("IndexError", RAISE_LINE, "raises_inside")),
        ]
    # gradient-only exercises pass contiguous inputs: a .view() does not fail there
    if first_rank >= 3 and not all(c.grad for c in cases):
        out.append(Mistake("fails on non-contiguous inputs", _viewing(fn), says=(".reshape()",)))
    if tuple_out:
        out.append(Mistake("returns a tensor, tuple expected", _named(lambda *a, **k: fn(*a, **k)[0], "tensor_only"),
                           says=("expected a tuple",)))
    else:
        out.append(Mistake("returns a tuple, tensor expected", _named(lambda *a, **k: (fn(*a, **k), None), "tupled"),
                           says=("expected a single tensor",)))
    if ex.run is None:  # the function returns the whole output itself
        rank = 4 if layout is None else len(layout)
        time = 1 if layout is None else _time_axis(layout)
        if rank >= 3:
            # what the engine prints: "looks head-first" for [B, T, H, ...], "looks like [...]" for other layouts;
            # a NaN's position named by the layout's letters, the last one dropped ("(b=0, t=5)" for [B, T, H])
            swapped = "head-first" if layout is None or layout[1:3] == "TH" else "looks like"
            at = index_str((0, 5, 1) + (0,) * (rank - 3), layout or "BTHD", keep_last=False)
            out += [
                Mistake("head-first [B,H,T,D]", _map_main(fn, lambda o: o.transpose(1, 2), "head_first"),
                        says=(swapped,)),
                Mistake("NaN", _map_main(fn, _nan_at((0, 5, 1)), "nan"), says=(f"NaN at {at}",)),
            ]
        if time is not None:
            # the engine recognises a reversal along T; along mamba's L it reports the error alone
            out.append(Mistake("output reversed in time", _map_main(fn, lambda o: o.flip(time), "flipped"),
                               says=("reversed" if layout is None or layout[time] == "T" else "relative RMS error",)))
    else:  # a step function driven token by token: o_t is [B, H, V]
        out.append(Mistake("NaN", _map_main(fn, _nan_at((0, 1)), "nan"), says=("NaN at (b=0, t=0, h=1)",)))
    return out


def catalogue(ex: Exercise, fn: Callable[..., Any]) -> list[Mistake]:
    """Everything an exercise's grader must reject: the generic mistakes, then the exercise's own."""
    return generic_mistakes(ex, fn) + list(ex.mistakes)
