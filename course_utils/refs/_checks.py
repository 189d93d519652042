"""Input checks shared by the reference adapters, the record of which backend ran last, two helpers.

Every check raises TypeError (wrong kind of object or dtype) or ValueError (wrong shape, layout or
values) with a message a student can act on: what was expected, what was given, and the likely fix.
A library kernel fed a wrong shape fails deep inside Triton or an einsum; failing here instead is the
point of this module.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import warnings
from collections.abc import Iterator
from numbers import Real

import torch

from course_utils.conventions import default_scale

MODES = ("auto", "recurrent", "chunk")

_last_backend: str | None = None
_recorders: list[list[str]] = []


def last_backend() -> str | None:
    """A short string naming what the last reference call ran, e.g. "fla.ops.gla.chunk_gla (CUDA)".

    For notebooks ("which kernel did that cell use?"). Code that needs to know what a given computation
    ran (the graders) uses `backends_used()` instead, which returns it with the result.
    """
    return _last_backend


@contextlib.contextmanager
def backends_used() -> Iterator[list[str]]:
    """`with backends_used() as used: ...` — `used` lists (once each, in order) what every reference call
    inside the block ran."""
    used: list[str] = []
    _recorders.append(used)
    try:
        yield used
    finally:
        _recorders.remove(used)


def record(name: str, device: torch.device, note: str = "") -> None:
    """Remember that `name` ran on `device` (note: an adaptation worth knowing, e.g. a fallback)."""
    global _last_backend
    where = "CUDA" if device.type == "cuda" else device.type.upper()
    _last_backend = f"{name} ({where}{'; ' + note if note else ''})"
    for used in _recorders:
        if _last_backend not in used:
            used.append(_last_backend)


def on_cuda(x: torch.Tensor) -> bool:
    """Whether to dispatch to a GPU kernel (Triton kernels need CUDA tensors)."""
    return x.device.type == "cuda"


def import_fla(module: str):
    """Import an fla module lazily, without fla's "Triton is not supported ... roll back to CPU" warning.

    That warning is fla telling us what we already know on a CPU machine; in a notebook it only adds noise.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Triton is not supported.*", category=UserWarning)
        return importlib.import_module(module)


# ----------------------------------------------------------------------------------------------- basics


def _shape(x) -> str:
    return "(" + ", ".join(str(int(s)) for s in x.shape) + ")"


def check_tensor(fn: str, name: str, x, layout: str, floating: bool = True) -> None:
    """x must be a torch.Tensor whose ndim matches `layout` (e.g. "[B, T, H, K]"), floating and finite."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor {layout}; got {type(x).__name__}.")
    ndim = layout.count(",") + 1
    if x.ndim != ndim:
        raise ValueError(f"{fn}: {name} must be {ndim}-D {layout}; got {x.ndim}-D shape {_shape(x)}.")
    if floating and not x.is_floating_point():
        raise TypeError(
            f"{fn}: {name} must be a floating tensor (float32, float16 or bfloat16); got {x.dtype}. "
            f"Convert it with {name}.float()."
        )
    check_finite(fn, name, x)


def check_finite(fn: str, name: str, x: torch.Tensor) -> None:
    if x.device.type == "meta":  # shape-only tensors hold no values to check
        return
    if x.is_floating_point() and x.numel() and not bool(torch.isfinite(x.detach()).all()):
        bad = (~torch.isfinite(x.detach())).nonzero()[0].tolist()
        raise ValueError(
            f"{fn}: {name} contains NaN or Inf (first at index {tuple(bad)}). "
            "Check the step that produced it (an exp that overflowed, a division by zero, log of 0?)."
        )


def check_same_device(fn: str, **tensors) -> torch.device:
    """All given tensors (None skipped) on one device; returns it."""
    items = [(n, t) for n, t in tensors.items() if t is not None]
    dev = items[0][1].device
    for name, t in items[1:]:
        if t.device != dev:
            raise ValueError(
                f"{fn}: all tensors must be on one device; {items[0][0]} is on {dev} but {name} is on "
                f"{t.device}. Move them with .to({items[0][0]}.device)."
            )
    return dev


def check_same_dtype(fn: str, **tensors) -> None:
    """q, k, v (and friends) must share a dtype: the kernels load them into one matmul."""
    items = [(n, t) for n, t in tensors.items() if t is not None]
    for name, t in items[1:]:
        if t.dtype != items[0][1].dtype:
            raise TypeError(
                f"{fn}: {items[0][0]} is {items[0][1].dtype} but {name} is {t.dtype}; "
                f"give them one dtype (e.g. {name}.to({items[0][0]}.dtype))."
            )


def check_scale(fn: str, scale, head_dim: int) -> float:
    """None → K ** -0.5 (the conventions' default); otherwise a positive real number."""
    if scale is None:
        return default_scale(head_dim)
    if isinstance(scale, torch.Tensor) and scale.numel() == 1:
        scale = scale.item()
    if isinstance(scale, bool) or not isinstance(scale, Real):
        raise TypeError(f"{fn}: scale must be a positive number or None (= K ** -0.5); got {scale!r}.")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"{fn}: scale must be a positive finite number; got {scale}.")
    return float(scale)


def check_mode(fn: str, mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"{fn}: mode must be one of {MODES}; got {mode!r}.")


# ----------------------------------------------------------------------------------------- layouts


def _head_first_hint(name: str, ref: str, got: tuple, expected: tuple) -> str:
    """A hint when swapping dims 1 and 2 of `got` gives `expected`'s (B, T, H)."""
    if len(got) >= 3 and got[1] != got[2] and (got[0], got[2], got[1]) == tuple(expected[:3]):
        return (
            f" Dims 1 and 2 of {name} are swapped relative to {ref}: {name} looks head-first "
            f"[B, H, T, ...] (or {ref} does); the course layout is [B, T, H, ...], sequence first: "
            "use .transpose(1, 2)."
        )
    return ""


def check_like(fn: str, name: str, x: torch.Tensor, expected: tuple, layout: str, ref: str = "q") -> None:
    """x.shape must equal `expected` (ints, or None for "any"), which was read off tensor `ref`."""
    got = tuple(int(s) for s in x.shape)
    if len(got) == len(expected) and all(e is None or e == g for e, g in zip(expected, got)):
        return
    shown = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
    raise ValueError(
        f"{fn}: {name} must have shape {layout} = {shown}; got {_shape(x)}."
        + _head_first_hint(name, ref, got, expected)
    )


def check_qkv(fn: str, q, k, v) -> tuple[int, int, int, int, int]:
    """q, k: [B, T, H, K], v: [B, T, H, V], one dtype and device. Returns (B, T, H, K, V)."""
    check_tensor(fn, "q", q, "[B, T, H, K]")
    check_tensor(fn, "k", k, "[B, T, H, K]")
    check_tensor(fn, "v", v, "[B, T, H, V]")
    B, T, H, K = (int(s) for s in q.shape)
    check_like(fn, "k", k, (B, T, H, K), "[B, T, H, K] (same as q)")
    check_like(fn, "v", v, (B, T, H, None), "[B, T, H, V] (B, T, H as q)")
    if T < 1:
        raise ValueError(f"{fn}: the sequence is empty (T = 0 in q {_shape(q)}).")
    check_same_device(fn, q=q, k=k, v=v)
    check_same_dtype(fn, q=q, k=k, v=v)
    return B, T, H, K, int(v.shape[-1])


def check_state(fn: str, name: str, s, B: int, H: int, K: int, V: int, T: int | None = None) -> None:
    """A recurrent state [B, H, K, V]. With T, a state whose dim 1 is T hints at head-first q, k, v."""
    check_tensor(fn, name, s, "[B, H, K, V]")
    got = tuple(int(x) for x in s.shape)
    if got == (B, H, K, V):
        return
    msg = f"{fn}: {name} must have shape [B, H, K, V] = ({B}, {H}, {K}, {V}); got {_shape(s)}."
    if T is not None and T != H and got == (B, T, K, V):
        msg += (
            f" Its H ({T}) equals q's dim 1, which is T in the course layout: q, k, v look head-first "
            "[B, H, T, D]; pass them as [B, T, H, D] (x.transpose(1, 2))."
        )
    elif got == (B, H, V, K) and K != V:
        msg += " It looks transposed ([B, H, V, K]); the state is keys x values: [B, H, K, V]."
    raise ValueError(msg)


# -------------------------------------------------------------------------------- value constraints


def check_log_gate(fn: str, name: str, g: torch.Tensor) -> None:
    """Gates are log-decays: g <= 0 so that decay = exp(g) is in (0, 1]."""
    gmax = float(g.detach().max()) if g.numel() else 0.0
    if gmax > 0:
        raise ValueError(
            f"{fn}: gates are in log space: {name} <= 0 (decay = exp({name}) <= 1); got max {name} = "
            f"{gmax:.4g}. If you have the decay itself, pass torch.log(decay); from logits, "
            "F.logsigmoid(x)."
        )


def check_beta(fn: str, beta: torch.Tensor) -> None:
    """beta is the delta rule's per-token learning rate in (0, 1).

    Exactly 0 or 1 are let through: torch.sigmoid saturates to 1.0 in float32 for inputs above ~17, and
    both ends are still well-defined updates (skip the token / overwrite the memory).
    """
    lo, hi = float(beta.detach().min()), float(beta.detach().max())
    if lo < 0 or hi > 1:
        raise ValueError(
            f"{fn}: beta must lie in (0, 1) (a learning rate, e.g. torch.sigmoid(x)); got values in "
            f"[{lo:.4g}, {hi:.4g}]."
        )


# ------------------------------------------------------------------------------------------ helpers


def pad_time(x: torch.Tensor, multiple: int, dim: int = 1) -> torch.Tensor:
    """Zero-pad `x` along `dim` up to a multiple of `multiple` (references that need whole chunks).

    Zeros are a no-op for every recurrence here: k = 0 (or dt = 0, beta = 0) adds nothing to the state and
    g = 0 decays nothing, so the real tokens' outputs and the final state are unchanged.
    """
    extra = (-x.shape[dim]) % multiple
    if extra == 0:
        return x
    shape = list(x.shape)
    shape[dim] = extra
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def state_f32(s: torch.Tensor | None) -> torch.Tensor | None:
    """States are float32 in every kernel (chunk_gla asserts it); cast a caller's state once here."""
    return None if s is None else s.to(torch.float32).contiguous()
