"""HiPPO-LegS as online function approximation (Gu, Dao, Ermon, Rudra, Ré 2020, HiPPO; S4 §2.2): the state
of the LegS ODE holds the Legendre coefficients of the whole history of its input, and the history can be read
back from it.

    c'(t) = (1/t) A c(t) + (1/t) B f(t)      (S4's sign: A = -[LegS], B[n] = sqrt(2n+1))
    c_n(t) ~= integral_0^1 f(s t) g_n(s) ds,  g_n(s) = sqrt(2n+1) P_n(2s - 1)   (orthonormal on [0, 1])
    f(s t) ~= sum_n c_n(t) g_n(s)           (the history, squeezed onto s in [0, 1])

`legs_online` runs the recurrence (the bilinear rule with step 1/k at step k, as S4's HiPPO code does),
`legs_project` computes the coefficients directly by quadrature (what the recurrence approximates),
`legendre_basis` and `legs_reconstruct` read a history back. Lab 07 (Exercise 7.2's figure and explorer)
uses them with the student's own (A, B). Everything is float64 on the CPU (numpy in, numpy out).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["example_signal", "legendre_basis", "legs_online", "legs_project", "legs_reconstruct"]


def _as_real(fn: str, name: str, x: Any) -> np.ndarray:
    """x (numpy, torch or a sequence) as a float64 array; a complex one is refused, not silently made real."""
    import torch

    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise TypeError(f"{fn}: {name} must be real; got a {x.dtype} tensor (HiPPO-LegS and the signal are real; "
                            "take .real only where the imaginary part is zero).")
        return x.detach().to("cpu", torch.float64).numpy()
    a = np.asarray(x)
    if np.iscomplexobj(a):
        raise TypeError(f"{fn}: {name} must be real; got dtype {a.dtype} (HiPPO-LegS and the signal are real).")
    return a.astype(np.float64)


def _as_vector(fn: str, name: str, x: Any) -> np.ndarray:
    a = _as_real(fn, name, x)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{fn}: {name} must be a non-empty 1-D signal [L]; got shape {a.shape}.")
    if not np.isfinite(a).all():
        raise ValueError(f"{fn}: {name} contains NaN or Inf.")
    return a


def _as_legs(fn: str, A: Any, B: Any) -> tuple[np.ndarray, np.ndarray]:
    A, B = _as_real(fn, "A", A), _as_real(fn, "B", B)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"{fn}: A must be a square matrix [N, N]; got shape {A.shape}.")
    B = B.reshape(-1)
    if B.shape[0] != A.shape[0]:
        raise ValueError(f"{fn}: B must have N = {A.shape[0]} entries ([N] or [N, 1]); got {B.shape[0]}.")
    if not (np.isfinite(A).all() and np.isfinite(B).all()):
        raise ValueError(f"{fn}: A and B contain NaN or Inf.")
    return A, B


def legendre_basis(N: int, s: Any) -> np.ndarray:
    """g_n(s) = sqrt(2n+1) P_n(2s - 1) for n = 0 .. N-1 at the points s in [0, 1]: [len(s), N]
    (orthonormal on [0, 1]; scipy.special.eval_legendre)."""
    from scipy.special import eval_legendre

    if not isinstance(N, (int, np.integer)) or isinstance(N, bool) or N < 1:
        raise ValueError(f"legendre_basis: N must be a positive int; got {N!r}.")
    s = np.asarray(s, dtype=np.float64).reshape(-1)
    n = np.arange(N)
    return np.sqrt(2 * n + 1)[None, :] * eval_legendre(n[None, :], 2 * s[:, None] - 1)


def legs_online(f: Any, A: Any, B: Any) -> np.ndarray:
    """Run the LegS recurrence over a signal: c_k = (I - A/2k)^-1 [(I + A/2k) c_{k-1} + B f_k / k], k = 1 .. L
    (the bilinear rule for c' = A c / t + B f / t with t = k), from c_0 = 0.

    f: [L] the signal, sample k at time k (numpy or torch)   A: [N, N]   B: [N] or [N, 1] (HiPPO-LegS)
    Returns c: [L, N] float64, row k-1 the coefficients after k samples (the history f_1 .. f_k).
    """
    from scipy.linalg import solve_triangular

    fn = "legs_online"
    f = _as_vector(fn, "f", f)
    A, B = _as_legs(fn, A, B)
    N = A.shape[0]
    lower = np.allclose(A, np.tril(A))
    eye = np.eye(N)
    c, out = np.zeros(N), np.empty((f.size, N))
    for k in range(1, f.size + 1):
        left = eye - A / (2 * k)
        rhs = (eye + A / (2 * k)) @ c + B * f[k - 1] / k
        c = solve_triangular(left, rhs, lower=True) if lower else np.linalg.solve(left, rhs)
        out[k - 1] = c
    return out


def legs_project(f: Any, N: int) -> np.ndarray:
    """The LegS coefficients of a whole signal by quadrature: c_n = integral_0^1 f(s) g_n(s) ds with the
    samples of f spread evenly over s in [0, 1] (Simpson's rule, scipy.integrate.simpson).
    f: [L]. Returns c: [N] float64."""
    from scipy.integrate import simpson

    f = _as_vector("legs_project", "f", f)
    if f.size < 2:
        raise ValueError("legs_project: f needs at least 2 samples for the quadrature.")
    s = np.linspace(0.0, 1.0, f.size)
    return simpson(f[:, None] * legendre_basis(N, s), x=s, axis=0)


def legs_reconstruct(c: Any, points: int) -> np.ndarray:
    """The history read back from coefficients c [N]: sum_n c_n g_n(s) at `points` evenly spaced s in [0, 1]
    (s = 0 the first sample, s = 1 the newest). Returns [points] float64."""
    c = _as_vector("legs_reconstruct", "c", c)
    return legendre_basis(c.size, np.linspace(0.0, 1.0, points)) @ c


def example_signal(L: int = 1000, seed: int = 0) -> np.ndarray:
    """A seeded smooth signal of L samples with a few frequencies and a jump (what a memory must keep):
    float64 [L]."""
    if L < 2:
        raise ValueError(f"example_signal: L must be >= 2; got {L}.")
    rng = np.random.default_rng(seed)
    s = np.linspace(0.0, 1.0, L)
    freq = rng.uniform(4, 9, size=3)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    f = sum(np.sin(2 * np.pi * fr * s + ph) / (i + 1) for i, (fr, ph) in enumerate(zip(freq, phase)))
    return f + 0.8 * (s > 0.6)
