"""Discretising a continuous state-space model x'(t) = A x(t) + B u(t) with step dt (S4, Gu et al. 2022,
§2; Mamba §2 "Discretization").

    zero-order hold (u constant over each step):  Ab = exp(dt A)       Bb = A^{-1} (exp(dt A) - I) B
    bilinear (trapezoid / Tustin):                Ab = (I - dt/2 A)^{-1} (I + dt/2 A)
                                                  Bb = (I - dt/2 A)^{-1} dt B
The oracle is scipy.signal.cont2discrete (the S4 reference code is not pip-installable); it works in
float64 on the CPU, for every device and dtype the caller uses.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np
import torch

from course_utils.refs._checks import record


def _as_numpy(fn: str, name: str, x):
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise TypeError(f"{fn}: {name} must be a real matrix; got {x.dtype}. The course's continuous SSMs are "
                            "real (S4D's complex diagonal is discretised elementwise, not here); .double() would drop "
                            "the imaginary part.")
        if not x.is_floating_point():
            raise TypeError(f"{fn}: {name} must be a floating tensor; got {x.dtype} (use {name}.double()).")
        return x.detach().to("cpu", torch.float64).numpy()
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "fiu":
            raise TypeError(f"{fn}: {name} must be a real matrix; got dtype {x.dtype}.")
        return x.astype(np.float64)
    raise TypeError(f"{fn}: {name} must be a torch.Tensor or numpy.ndarray; got {type(x).__name__}.")


def _discretize(fn: str, method: str, A, B, dt):
    if isinstance(A, torch.Tensor) != isinstance(B, torch.Tensor):
        raise TypeError(f"{fn}: A and B must both be torch tensors or both numpy arrays.")
    a, b = _as_numpy(fn, "A", A), _as_numpy(fn, "B", B)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{fn}: A must be a square matrix [N, N]; got shape {tuple(a.shape)}.")
    n = a.shape[0]
    if b.ndim != 2 or b.shape[0] != n:
        raise ValueError(
            f"{fn}: B must be [N, M] with N = {n} rows (a column [N, 1] for one input); got shape {tuple(b.shape)}."
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(f"{fn}: A and B must be finite (no NaN or Inf).")
    if isinstance(dt, torch.Tensor) and dt.numel() == 1:
        dt = dt.item()
    if isinstance(dt, bool) or not isinstance(dt, Real) or not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"{fn}: dt must be a positive finite number; got {dt!r}.")

    from scipy.signal import cont2discrete

    # cont2discrete discretises a full (A, B, C, D) system; C and D do not affect Ab, Bb.
    c, d = np.zeros((1, n)), np.zeros((1, b.shape[1]))
    ab, bb, *_ = cont2discrete((a, b, c, d), float(dt), method=method)
    record(f"scipy.signal.cont2discrete(method={method!r})", torch.device("cpu"))
    if isinstance(A, torch.Tensor):
        Ab = torch.as_tensor(ab, dtype=A.dtype, device=A.device)
        return Ab, torch.as_tensor(bb, dtype=B.dtype, device=B.device)
    return ab, bb


def discretize_zoh(A, B, dt):
    """Zero-order hold: Ab = exp(dt A), Bb = A^{-1} (exp(dt A) - I) B (also right for singular A).

    A: [N, N]   B: [N, M] (usually [N, 1])   dt: positive step; numpy arrays or torch tensors
    Returns (Ab [N, N], Bb [N, M]) of the input's type (torch: A's dtype and device; not differentiable).
    """
    return _discretize("discretize_zoh", "zoh", A, B, dt)


def discretize_bilinear(A, B, dt):
    """Bilinear (Tustin): Ab = (I - dt/2 A)^{-1} (I + dt/2 A), Bb = (I - dt/2 A)^{-1} dt B.

    A: [N, N]   B: [N, M] (usually [N, 1])   dt: positive step; numpy arrays or torch tensors
    Returns (Ab [N, N], Bb [N, M]) of the input's type (torch: A's dtype and device; not differentiable).
    """
    return _discretize("discretize_bilinear", "bilinear", A, B, dt)
