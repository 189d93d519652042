"""Mistakes every exercise must catch whatever it computes, made from a correct implementation: a wrong
return structure, dtype or device, an argument changed in place, an exception, NaN, zeros, a layout slip.

They test the engine's structure and value checks; each exercise's own catalogue (`Exercise.mistakes`)
holds the mistakes in its formula. `catalogue(exercise, correct_fn)` is both lists together.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from course_utils.grading.spec import Exercise, IntOut, Mistake, TupleOut

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


def generic_mistakes(ex: Exercise, fn: Callable[..., Any]) -> list[Mistake]:
    """The structure/value mistakes that apply to this exercise's output, made from the correct `fn`."""
    node = ex.output_for(ex.cases(torch.device("cpu"), [torch.float32])[0])
    if isinstance(node, IntOut):
        return [
            Mistake("returns None", _named(lambda *a, **k: None, "returns_none"), says=("`return`",)),
            Mistake("raises inside", _divides_by_zero, says=("ZeroDivisionError", "T // (C - C)")),
        ]
    tuple_out = isinstance(node, TupleOut)
    out = [
        Mistake("zeros", _map_main(fn, torch.zeros_like, "zeros"), says=("all zeros",)),
        Mistake("output + 0.1% noise", _map_main(fn, _noise, "noisy"), says=("close but above tolerance",)),
        Mistake("returns None", _named(lambda *a, **k: None, "returns_none"), says=("`return`",)),
        Mistake("returns float64", _map_main(fn, lambda o: o.double(), "float64"), says=("dtype float64",)),
        Mistake("casts bf16 input to fp32", _map_main(fn, lambda o: o.float(), "upcasts"), says=("dtype float32",),
                options=BF16),
        Mistake("wrong device", _map_main(fn, lambda o: o.to("meta"), "on_meta"), says=("device 'meta'",)),
        Mistake("mutates its input", _mutating(fn), says=("in place",)),
        Mistake("raises inside", _raising(fn), says=("IndexError", RAISE_LINE, "raises_inside")),
        Mistake("fails on non-contiguous inputs", _viewing(fn), says=(".reshape()",)),
    ]
    if tuple_out:
        out.append(Mistake("returns a tensor, tuple expected", _named(lambda *a, **k: fn(*a, **k)[0], "tensor_only"),
                           says=("expected a tuple",)))
    else:
        out.append(Mistake("returns a tuple, tensor expected", _named(lambda *a, **k: (fn(*a, **k), None), "tupled"),
                           says=("expected a single tensor",)))
    if ex.run is None:  # the function returns the whole [B, T, H, D] output itself
        out += [
            Mistake("head-first [B,H,T,D]", _map_main(fn, lambda o: o.transpose(1, 2), "head_first"),
                    says=("head-first",)),
            Mistake("NaN", _map_main(fn, _nan_at((0, 5, 1)), "nan"), says=("NaN at (b=0, t=5, h=1)",)),
            Mistake("output reversed in time", _map_main(fn, lambda o: o.flip(1), "flipped"), says=("reversed",)),
        ]
    else:  # a step function driven token by token: o_t is [B, H, V]
        out.append(Mistake("NaN", _map_main(fn, _nan_at((0, 1)), "nan"), says=("NaN at (b=0, t=0, h=1)",)))
    if all(c.grad for c in ex.cases(torch.device("cpu"), [torch.float32])):
        # gradient-only exercises pass contiguous inputs: a .view() does not fail there
        out = [m for m in out if m.name != "fails on non-contiguous inputs"]
    return out


def catalogue(ex: Exercise, fn: Callable[..., Any]) -> list[Mistake]:
    """Everything an exercise's grader must reject: the generic mistakes, then the exercise's own."""
    return generic_mistakes(ex, fn) + list(ex.mistakes)
