"""Family: linear time-invariant state-space models (S4, Gu, Goel, Ré 2022, §2) — the continuous SSM, its
discretisations, the HiPPO-LegS matrix, the convolution kernel and its FFT convolution, the diagonal kernel.

    continuous (§2.1):      x'(t) = A x(t) + B u(t),   y(t) = C x(t) + D u(t)
    discrete (§2.3):        x_k = Ab x_{k-1} + Bb u_k,  y_k = C x_k + D u_k
    convolution (§2.4):     y = K * u + D u,  K = (C Bb, C Ab Bb, ..., C Ab^(L-1) Bb)

Lab 07:
    7.1a zero-order hold            discretize_zoh(A, B, dt) -> (Ab, Bb)
    7.1b bilinear (Tustin)          discretize_bilinear(A, B, dt) -> (Ab, Bb)
    7.2  the HiPPO-LegS matrix      hippo_legs(N, dtype, device) -> (A, B)
    7.3a the SSM kernel             ssm_kernel(Ab, Bb, C, L) -> K [L]
    7.3b FFT convolution            ssm_conv(u, K, D) -> y [B, L, H]
    7.4  the diagonal (S4D) kernel  s4d_kernel(A, B, C, dt, L) -> K [H, L]   (a Vandermonde product)

Shapes follow course_utils.conventions (a continuous SSM: A [N, N], B [N, 1], C [1, N]). Expected values:
7.1 from course_utils.refs.discretize (scipy.signal.cont2discrete, float64); 7.2 from the closed form of
HiPPO-LegS written here in float64 (tests cross-check it against state-spaces/s4's construction); 7.3a from
a float64 loop of matrix-vector products; 7.3b from the *recurrence* x_k = Ab x_{k-1} + Bb u_k in float64,
run on the SSM that made K; 7.4 from scipy's zero-order hold of diag(A) and that same loop.

Every mistake is an implementation that makes it, with the exercise's signature.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable

import torch

from course_utils.exercises.cases import case_list, generator, randn
from course_utils.grading import Case, Exercise, Failure, Mistake, TensorOut, Trial, TupleOut, fail, register
from course_utils.grading.how import FORBIDDEN_PACKAGES, TorchCalls, forbid, library_calls, no_quadratic_memory
from course_utils.grading.spec import dtype_name

# ================================================================================================
# 7.1 discretisation
# ================================================================================================


def stable_matrix(gen: torch.Generator, N: int, lo: float = 0.5, hi: float = 2.0) -> torch.Tensor:
    """A seeded float64 [N, N] matrix with eigenvalues' real parts in [-hi, -lo] (stable, invertible):
    -diag(rates) plus a skew-symmetric part, which rotates the state without changing its energy."""
    rates = lo + (hi - lo) * torch.rand(N, generator=gen, dtype=torch.float64)
    M = torch.randn(N, N, generator=gen, dtype=torch.float64) / math.sqrt(N)
    return -torch.diag(rates) + (M - M.T)


def legs_closed_form(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO-LegS in S4's sign convention (S4 §2.2, Eq. 2), float64: (A [N, N], B [N, 1]) with
    A[n, k] = -sqrt(2n+1) sqrt(2k+1) for n > k, -(n+1) for n = k, 0 for n < k;  B[n] = sqrt(2n+1)."""
    n = torch.arange(N, dtype=torch.float64)
    r = (2 * n + 1).sqrt()
    below = n[:, None] > n[None, :]
    A = -torch.where(below, r[:, None] * r[None, :], torch.diag(n + 1))
    return A, r[:, None].clone()


def _disc_inputs(case: Case, device: torch.device) -> dict[str, Any]:
    """A [N, N] (stable, or HiPPO-LegS), B [N, M], dt; A a transposed view when the case is non-contiguous."""
    gen = generator(case)
    N, M = case["N"], case.get("M", 1)
    A = legs_closed_form(N)[0] if case.get("hippo") else stable_matrix(gen, N)
    B = randn(gen, N, M).double()
    A = A.to(device, case.dtype)
    if case.get("noncontiguous"):
        A = A.T.contiguous().T  # same values, column-major strides
    return {"A": A, "B": B.to(device, case.dtype), "dt": case["dt"]}


def _disc_reference(method: str) -> Callable[[dict[str, Any], Case], Any]:
    def reference(inputs: dict[str, Any], case: Case) -> tuple[torch.Tensor, torch.Tensor]:
        from course_utils.refs import discretize

        fn = discretize.discretize_zoh if method == "zoh" else discretize.discretize_bilinear
        return fn(inputs["A"], inputs["B"], inputs["dt"])

    return reference


def column_hint(f: Failure) -> str | None:
    """Shape hints: (Ab, Bb) returned in the other order; a B-like output as a vector [N] (or a row) instead of the
    column [N, M] the conventions use, or as a matrix [N, N] (B itself left out of Bb)."""
    if f.kind != "shape" or not isinstance(f.got, torch.Tensor):
        return None
    if f.name in ("A", "Ab"):
        other = "Bb" if f.name == "Ab" else "B"
        if f.got.ndim == 2 and f.got.shape[0] == f.expected.shape[0] and f.got.shape[1] != f.expected.shape[1]:
            return f"is the order swapped? the function returns ({f.name}, {other}), the [N, N] matrix first"
        return None
    if f.name not in ("B", "Bb"):
        return None
    if f.got.numel() == f.expected.numel():
        return (f"{f.name} is a column [N, 1] (course_utils.conventions: B [N, 1], C [1, N]), so that "
                f"A @ x + B * u and C @ x keep their shapes: return {f.name}[:, None] (or .reshape(-1, 1))")
    if f.name == "Bb" and f.got.shape == (f.expected.shape[0],) * 2:
        return "Bb has the shape of A: is B missing? Bb ends with B, Bb = (...) @ B, a column [N, M] like B"
    return None


def _disc_explain_value(f: Failure) -> str | None:
    """A value failure on a HiPPO case that is far off: what an eigendecomposition does to that matrix."""
    if f.kind == "value" and f.case.get("hippo") and f.info.get("err", 0.0) > 1e-2:
        return (f"this case's A is HiPPO-LegS (N={f.case['N']}), far from normal: if you go through an "
                "eigendecomposition, V exp(dt Λ) V^-1, its eigenvectors are so ill-conditioned (S4 §3.1) that every "
                "digit is lost. torch.linalg.matrix_exp (scaling and squaring) does not diagonalise")
    return None


def _disc_diagnose(f: Failure) -> str | None:
    return column_hint(f) or _disc_explain_value(f)


LINALG_LOW_PRECISION = ("torch.linalg (matrix_exp, solve, inv) does not compute in float16 / bfloat16: compute in "
                        "float32 or float64 (A.double()) and return the results in A's dtype (.to(A.dtype))")


def _low_precision_hint(hint: str) -> Callable[[Case], str | None]:
    """An exception hint shown in the float16 / bfloat16 cases only (a GPU's, or the tests')."""
    return lambda case: hint if case.dtype in (torch.float16, torch.bfloat16) else None


def _b_vector(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    """fn with its second output flattened to a vector [N] (a shape mistake)."""

    def wrong(*args, **kwargs):
        first, second = fn(*args, **kwargs)
        return first, second.reshape(-1)

    wrong.__name__ = name
    return wrong


def _disc_output(case: Case) -> TupleOut:
    return TupleOut("(Ab, Bb)", (TensorOut("Ab", "NN"), TensorOut("Bb", "NM")))


def _disc_cases(seed: int) -> Callable[[torch.device, list[torch.dtype]], list[Case]]:
    def cases(device: torch.device, dtypes: list[torch.dtype]) -> list[Case]:
        return case_list({}, [
            {"N": 4, "dt": 0.3},
            {"N": 8, "dt": 0.05, "hippo": True},
            {"N": 6, "dt": 0.7, "M": 2},
            {"N": 16, "dt": 0.1, "noncontiguous": True},
            {"N": 32, "dt": 0.02, "hippo": True},
        ], seed, dtypes, half={"N": 8, "dt": 0.2})

    return cases


# a wrong discretisation, in float64, cast back: (A, B, dt) -> (Ab, Bb)
Rule = Callable[[torch.Tensor, torch.Tensor, float, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _expm(X: torch.Tensor) -> torch.Tensor:
    return torch.linalg.matrix_exp(X)


RULES: dict[str, Rule] = {
    "zoh": lambda A, B, dt, I: (_expm(dt * A), torch.linalg.solve(A, (_expm(dt * A) - I) @ B)),
    "bilinear": lambda A, B, dt, I: (torch.linalg.solve(I - dt / 2 * A, I + dt / 2 * A),
                                     torch.linalg.solve(I - dt / 2 * A, dt * B)),
    "euler": lambda A, B, dt, I: (I + dt * A, dt * B),
    "backward_euler": lambda A, B, dt, I: (torch.linalg.inv(I - dt * A), torch.linalg.solve(I - dt * A, dt * B)),
    # ZOH's mistakes
    "zoh_no_dt": lambda A, B, dt, I: RULES["zoh"](A, B, 1.0, I),
    "zoh_bb_dt": lambda A, B, dt, I: (_expm(dt * A), dt * B),
    "zoh_elementwise": lambda A, B, dt, I: ((dt * A).exp(), torch.linalg.solve(A, ((dt * A).exp() - I) @ B)),
    "zoh_no_inverse": lambda A, B, dt, I: (_expm(dt * A), (_expm(dt * A) - I) @ B),
    "zoh_times_a": lambda A, B, dt, I: (_expm(dt * A), A @ (_expm(dt * A) - I) @ B),
    "zoh_transposed": lambda A, B, dt, I: RULES["zoh"](A.T, B, dt, I),
    "zoh_bb_extra_dt": lambda A, B, dt, I: (_expm(dt * A), dt * RULES["zoh"](A, B, dt, I)[1]),
    # the bilinear rule's mistakes
    "bilinear_sign": lambda A, B, dt, I: RULES["bilinear"](-A, B, dt, I),
    "bilinear_no_half": lambda A, B, dt, I: RULES["bilinear"](A, B, 2 * dt, I)[0:1]
    + (torch.linalg.solve(I - dt * A, dt * B),),
    "bilinear_bb_dt": lambda A, B, dt, I: (RULES["bilinear"](A, B, dt, I)[0], dt * B),
    "bilinear_bb_no_dt": lambda A, B, dt, I: (RULES["bilinear"](A, B, dt, I)[0],
                                              torch.linalg.solve(I - dt / 2 * A, B)),
    "bilinear_no_dt": lambda A, B, dt, I: RULES["bilinear"](A, B, 1.0, I),
    "bilinear_bb_half_dt": lambda A, B, dt, I: (RULES["bilinear"](A, B, dt, I)[0],
                                                torch.linalg.solve(I - dt / 2 * A, dt / 2 * B)),
}


def rule_fn(rule: str) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """A discretisation (A, B, dt) -> (Ab, Bb) by one of RULES, computed in float64, returned in A's dtype."""

    def discretize(A, B, dt):
        A64, B64 = A.double(), B.double()
        eye = torch.eye(A.shape[0], dtype=torch.float64, device=A.device)
        Ab, Bb = RULES[rule](A64, B64, float(dt), eye)
        return Ab.to(A.dtype), Bb.to(B.dtype)

    discretize.__name__ = rule
    return discretize


EULER = ("this is forward Euler (Ab = I + dt A, Bb = dt B), only the first-order approximation of "
         "{name}: {formula}")
ZOH = "Ab = exp(dt A) (a matrix exponential), Bb = A^-1 (exp(dt A) - I) B"
BILINEAR = "Ab = (I - dt/2 A)^-1 (I + dt/2 A), Bb = (I - dt/2 A)^-1 dt B"
DT_MISSING = "dt is missing: every A in the formula comes multiplied by the step, {formula}"


def _scipy_signal() -> dict[str, str]:
    return {**FORBIDDEN_PACKAGES, "scipy.signal": os.sep + "scipy" + os.sep + "signal" + os.sep}


def no_oracle(trial: Trial, fn: Callable[..., Any]) -> None:
    """How check for 7.1: the discretisation is computed from the formula, not by scipy.signal.cont2discrete
    (the grader's oracle) or course_utils.refs."""
    ex = trial.exercise
    case = ex.cases(trial.device, [torch.float32])[0]
    probe = Trial(ex, case, trial.device, ex.make_inputs(case, trial.device), trial.fn_name)
    with torch.no_grad(), library_calls(_scipy_signal()) as used:
        probe.outputs_of(fn)
    trial.last_call = probe.last_call
    if used:
        fail(f"how check: your function calls {', '.join(sorted(used))}, which discretises for you",
             "write the formula of the docstring with torch (torch.linalg.matrix_exp, torch.linalg.solve): "
             "scipy.signal.cont2discrete is the grader's oracle, and it cannot run on a GPU tensor")


ZOH_SPEC = Exercise(
    id="7.1a",
    fn_name="discretize_zoh",
    signature="discretize_zoh(A, B, dt) -> (Ab, Bb)",
    cases=_disc_cases(701),
    make_inputs=_disc_inputs,
    expected=_disc_reference("zoh"),
    output=_disc_output,
    positional=("A", "B", "dt"),
    input_layouts={"A": "NN", "B": "NM"},
    mistakes=(
        Mistake("forward Euler", rule_fn("euler"), EULER.format(name="zero-order hold", formula=ZOH)),
        Mistake("bilinear instead of ZOH", rule_fn("bilinear"),
                "this is the bilinear (Tustin) rule of Exercise 7.1b; zero-order hold holds u constant over the "
                "step and integrates exactly: " + ZOH),
        Mistake("dt missing", rule_fn("zoh_no_dt"), DT_MISSING.format(formula=ZOH)),
        Mistake("Bb = dt B", rule_fn("zoh_bb_dt"),
                "Bb = dt B is Euler's Bb (Mamba's simplification of B, not exact ZOH): zero-order hold integrates "
                "exp(s A) B over the step, Bb = A^-1 (exp(dt A) - I) B"),
        Mistake("elementwise exp", rule_fn("zoh_elementwise"),
                "torch.exp is elementwise: exp(dt A) here is the matrix exponential I + dt A + (dt A)^2/2 + ..., "
                "torch.linalg.matrix_exp(dt * A)"),
        Mistake("Bb without A^-1", rule_fn("zoh_no_inverse"),
                "A^-1 is missing in Bb = A^-1 (exp(dt A) - I) B (solve A X = (exp(dt A) - I) B: "
                "torch.linalg.solve(A, ...))"),
        Mistake("Bb with A, not A^-1", rule_fn("zoh_times_a"),
                "Bb multiplies by A^-1, the inverse, not by A: Bb = A^-1 (exp(dt A) - I) B"),
        Mistake("A transposed", rule_fn("zoh_transposed"),
                "A is transposed: x' = A x multiplies the state by A, so Ab = exp(dt A), not exp(dt A^T)"),
        Mistake("Bb times dt", rule_fn("zoh_bb_extra_dt"),
                "Bb has an extra factor dt: the integral of exp(s A) over the step already carries it, "
                "Bb = A^-1 (exp(dt A) - I) B (about dt B for a small step), not dt A^-1 (exp(dt A) - I) B"),
        Mistake("Bb a vector [N]", _b_vector(rule_fn("zoh"), "bb_vector"), says=("Bb is a column [N, 1]",)),
    ),
    diagnose=_disc_diagnose,
    exception_hint=_low_precision_hint(LINALG_LOW_PRECISION),
    extra_checks=(no_oracle,),
    reference_name="scipy.signal.cont2discrete(method='zoh'), float64",
)
register(ZOH_SPEC)

register(dataclasses.replace(
    ZOH_SPEC,
    id="7.1b",
    fn_name="discretize_bilinear",
    signature="discretize_bilinear(A, B, dt) -> (Ab, Bb)",
    cases=_disc_cases(711),
    expected=_disc_reference("bilinear"),
    mistakes=(
        Mistake("forward Euler", rule_fn("euler"), EULER.format(name="the bilinear rule", formula=BILINEAR)),
        Mistake("backward Euler", rule_fn("backward_euler"),
                "this is backward Euler, Ab = (I - dt A)^-1: the bilinear rule averages the two ends of the step, "
                "half forward and half backward: " + BILINEAR),
        Mistake("ZOH instead of bilinear", rule_fn("zoh"),
                "this is zero-order hold (Exercise 7.1a); the bilinear rule (S4 §2.3, Eq. 3) is " + BILINEAR),
        Mistake("signs swapped", rule_fn("bilinear_sign"),
                "the signs are swapped: Ab = (I - dt/2 A)^-1 (I + dt/2 A) (the inverse of what you computed: "
                "a stable A would give an unstable Ab)"),
        Mistake("dt instead of dt/2", rule_fn("bilinear_no_half"),
                "the half step is missing: the bilinear rule uses dt/2 on both sides, " + BILINEAR),
        Mistake("Bb = dt B", rule_fn("bilinear_bb_dt"),
                "Bb is missing the inverse: Bb = (I - dt/2 A)^-1 dt B, the same inverse as in Ab"),
        Mistake("Bb without dt", rule_fn("bilinear_bb_no_dt"),
                "Bb is missing the step: Bb = (I - dt/2 A)^-1 dt B"),
        Mistake("dt missing", rule_fn("bilinear_no_dt"), DT_MISSING.format(formula=BILINEAR)),
        Mistake("Bb with dt/2", rule_fn("bilinear_bb_half_dt"),
                "Bb takes the whole step: the input enters over the full step, Bb = (I - dt/2 A)^-1 dt B (only the "
                "state is averaged over the two ends, with dt/2)"),
        Mistake("Bb a vector [N]", _b_vector(rule_fn("bilinear"), "bb_vector"), says=("Bb is a column [N, 1]",)),
    ),
    reference_name="scipy.signal.cont2discrete(method='bilinear'), float64",
))


# ================================================================================================
# 7.2 HiPPO-LegS
# ================================================================================================


def _hippo_inputs(case: Case, device: torch.device) -> dict[str, Any]:
    return {"N": case["N"], "dtype": case.dtype, "device": device}


def _hippo_reference(inputs: dict[str, Any], case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    A, B = legs_closed_form(inputs["N"])
    return A.to(inputs["device"], inputs["dtype"]), B.to(inputs["device"], inputs["dtype"])


def hippo_wrong(*, sign: int = -1, transpose: bool = False, diag: str = "n+1", lower: str = "sqrt",
                full: bool = False, one_based: bool = False, b: str = "sqrt",
                lower_sign: int = 1) -> Callable[..., Any]:
    """HiPPO-LegS (N, dtype, device) -> (A, B) with at most the mistakes asked for: sign=+1 (the HiPPO paper's
    positive A), transpose, diag "n+1" / "n" / "2n+1", lower "sqrt" / "2n+1" / "2k+1" (no square roots), full (also
    above the diagonal), one_based (n, k from 1), b "sqrt" / "ones" / "2n+1", lower_sign=-1 (only the diagonal
    negated)."""

    def hippo_legs(N, dtype=torch.float32, device="cpu"):
        n = torch.arange(N, dtype=torch.float64) + (1 if one_based else 0)
        r = (2 * n + 1).sqrt()
        off = {"sqrt": r[:, None] * r[None, :], "2n+1": (2 * n + 1)[:, None].expand(N, N),
               "2k+1": (2 * n + 1)[None, :].expand(N, N)}[lower]
        d = {"n+1": n + 1, "n": n, "2n+1": 2 * n + 1}[diag]
        mask = n[:, None] != n[None, :] if full else n[:, None] > n[None, :]
        A = sign * torch.where(mask, lower_sign * off, torch.diag(d))
        A = A.T if transpose else A
        Bv = {"sqrt": r, "ones": torch.ones_like(r), "2n+1": 2 * n + 1}[b]
        return A.to(device, dtype), Bv[:, None].to(device, dtype)

    return hippo_legs


LEGS = "A[n, k] = -sqrt(2n+1) sqrt(2k+1) for n > k, -(n+1) for n = k, 0 for n < k (n, k = 0 .. N-1)"

HIPPO_SPEC = register(Exercise(
    id="7.2",
    fn_name="hippo_legs",
    signature="hippo_legs(N, dtype=torch.float32, device='cpu') -> (A, B)",
    cases=lambda device, dtypes: case_list({}, [
        {"N": 8}, {"N": 1}, {"N": 3}, {"N": 64},
    ], 721, dtypes, half={"N": 16}),
    make_inputs=_hippo_inputs,
    expected=_hippo_reference,
    output=TupleOut("(A, B)", (TensorOut("A", "NN"), TensorOut("B", "NM"))),
    positional=("N",),
    mistakes=(
        Mistake("positive A", hippo_wrong(sign=+1),
                "the sign: S4 writes x' = A x + B u, so its HiPPO matrix is negative (stable); the HiPPO paper's "
                "A is positive because its ODE reads c' = -A c + B f. " + LEGS),
        Mistake("transposed", hippo_wrong(transpose=True),
                "A is transposed: it is lower triangular, A[n, k] != 0 for n > k (coefficient n is driven by the "
                "lower-order ones k < n), zero above the diagonal"),
        Mistake("diagonal -n", hippo_wrong(diag="n"),
                "off by one on the diagonal: A[n, n] = -(n + 1), so A[0, 0] = -1"),
        Mistake("diagonal -(2n+1)", hippo_wrong(diag="2n+1"),
                "the diagonal is -(n + 1), not -(2n + 1) (-(2n+1) + n: S4's code adds diag(n) to it)"),
        Mistake("-(2n+1) below the diagonal", hippo_wrong(lower="2n+1"),
                "below the diagonal A[n, k] = -sqrt(2n+1) sqrt(2k+1), the same in n and k (the Legendre basis made "
                "orthonormal), not -(2n+1)"),
        Mistake("-(2k+1) below the diagonal (S4's code before its transform)", hippo_wrong(lower="2k+1"),
                "below the diagonal A[n, k] = -sqrt(2n+1) sqrt(2k+1): -(2k+1) is the matrix M of state-spaces/s4's "
                "code before its change of basis T M T^-1 with T = diag(sqrt(2n+1))"),
        Mistake("positive below the diagonal", hippo_wrong(lower_sign=-1),
                "the minus sign covers the whole lower triangle, not only the diagonal: A[n, k] = -sqrt(2n+1) "
                "sqrt(2k+1) for n > k, as A[n, n] = -(n+1)"),
        Mistake("full, not triangular", hippo_wrong(full=True),
                "A is zero above the diagonal (n < k): the LegS dynamics are lower triangular"),
        Mistake("indices from 1", hippo_wrong(one_based=True),
                "indices start at 0: n, k = 0 .. N-1, so A[0, 0] = -1 and B[0] = 1"),
        Mistake("B = 1", hippo_wrong(b="ones"), "B[n] = sqrt(2n + 1), not 1"),
        Mistake("B = 2n+1", hippo_wrong(b="2n+1"), "B[n] = sqrt(2n + 1): the square root is missing"),
        Mistake("B a vector [N]", _b_vector(hippo_wrong(), "b_vector"), says=("B is a column [N, 1]",)),
    ),
    diagnose=column_hint,
    extra_checks=(forbid(),),
    reference_name="the HiPPO-LegS closed form (S4 §2.2, Eq. 2), float64",
))


# ================================================================================================
# 7.3 the convolution kernel, and the FFT convolution
# ================================================================================================


def bilinear64(A: torch.Tensor, B: torch.Tensor, dt: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The bilinear rule in float64 (the grader's own, for building inputs; 7.1b checks the student's)."""
    eye = torch.eye(A.shape[-1], dtype=torch.float64)
    left = eye - dt / 2 * A
    return torch.linalg.solve(left, eye + dt / 2 * A), torch.linalg.solve(left, dt * B)


def kernel64(Ab: torch.Tensor, Bb: torch.Tensor, C: torch.Tensor, L: int) -> torch.Tensor:
    """K_l = C Ab^l Bb for l = 0 .. L-1, float64 [..., L], by L matrix-vector products (Ab [..., N, N],
    Bb [..., N, 1], C [..., 1, N])."""
    x, out = Bb.double(), []
    for _ in range(L):
        out.append((C.double() @ x)[..., 0, 0])
        x = Ab.double() @ x
    return torch.stack(out, dim=-1)


def ssm64(gen: torch.Generator, N: int, L: int, H: int | None = None) -> tuple[torch.Tensor, ...]:
    """A seeded discrete SSM (Ab, Bb, C), float64, one per channel if H is given ([H, N, N], [H, N, 1],
    [H, 1, N]): a stable A discretised with a step such that its slowest mode decays over about L steps
    (so the kernel is still alive at its far end: a wrapped-around convolution shows)."""
    shape = () if H is None else (H,)
    A = torch.stack([stable_matrix(gen, N, 0.5, 2.0) for _ in range(H or 1)])
    B, C = torch.randn(H or 1, N, 1, generator=gen, dtype=torch.float64), \
        torch.randn(H or 1, 1, N, generator=gen, dtype=torch.float64) / math.sqrt(N)
    Ab, Bb = bilinear64(A, B, 2.0 / max(L, 4))
    return Ab.reshape(*shape, N, N), Bb.reshape(*shape, N, 1), C.reshape(*shape, 1, N)


def _kernel_inputs(case: Case, device: torch.device) -> dict[str, Any]:
    gen = generator(case)
    Ab, Bb, C = ssm64(gen, case["N"], case["L"])
    Ab = Ab.to(device, case.dtype)
    if case.get("noncontiguous"):
        Ab = Ab.T.contiguous().T
    return {"Ab": Ab, "Bb": Bb.to(device, case.dtype), "C": C.to(device, case.dtype), "L": case["L"]}


def _kernel_reference(inputs: dict[str, Any], case: Case) -> torch.Tensor:
    Ab = inputs["Ab"]
    return kernel64(Ab.cpu(), inputs["Bb"].cpu(), inputs["C"].cpu(), inputs["L"]).to(Ab.device, Ab.dtype)


def kernel_wrong(*, start: int = 0, power: str = "matrix", transpose: bool = False, flip: bool = False,
                 no_b: bool = False, length: int = 0) -> Callable[..., torch.Tensor]:
    """ssm_kernel (Ab, Bb, C, L) -> K [L] with at most the mistakes asked for: start=1 (K_0 = C Ab Bb),
    power="elementwise" (Ab ** l entry by entry), transpose (Ab^T), flip (K reversed), no_b (Bb replaced by
    ones), length (L + length entries)."""

    def ssm_kernel(Ab, Bb, C, L):
        A = Ab.double().T if transpose else Ab.double()
        b = torch.ones_like(Bb, dtype=torch.float64) if no_b else Bb.double()
        ls = range(start, start + L + length)
        if power == "elementwise":
            K = torch.stack([(C.double() @ (A ** l) @ b)[0, 0] for l in ls])
        else:
            K = torch.stack([(C.double() @ torch.linalg.matrix_power(A, l) @ b)[0, 0] for l in ls])
        return (K.flip(0) if flip else K).to(Ab.dtype)

    return ssm_kernel


def _reshaped(fn: Callable[..., torch.Tensor], shape: tuple[int, ...], name: str) -> Callable[..., torch.Tensor]:
    def wrong(*args, **kwargs):
        return fn(*args, **kwargs).reshape(shape)

    wrong.__name__ = name
    return wrong


def _kernel_shape_hint(f: Failure) -> str | None:
    if f.kind != "shape":
        return None
    if f.got.ndim == 1:
        return "K has L entries, K_l = C Ab^l Bb for l = 0 .. L-1"
    if f.got.numel() == f.expected.numel():
        return ("K is a 1-D tensor [L] (one number per lag l): drop the [1, 1] of C @ x (.reshape(-1) or "
                "[..., 0, 0])")
    return ("K_l = C Ab^l Bb is one number per lag, K is [L]: is C (the read-out [1, N]) missing, or Bb multiplied "
            "in the wrong order?")


KERNEL_SPEC = register(Exercise(
    id="7.3a",
    fn_name="ssm_kernel",
    signature="ssm_kernel(Ab, Bb, C, L) -> K",
    cases=lambda device, dtypes: case_list({}, [
        {"N": 4, "L": 16}, {"N": 8, "L": 100}, {"N": 6, "L": 1}, {"N": 16, "L": 64, "noncontiguous": True},
    ], 731, dtypes, half={"N": 8, "L": 64}),
    make_inputs=_kernel_inputs,
    expected=_kernel_reference,
    output=TensorOut("K", "T"),
    positional=("Ab", "Bb", "C", "L"),
    input_layouts={"Ab": "NN", "Bb": "NM", "C": "MN"},
    mistakes=(
        Mistake("starts at C Ab Bb", kernel_wrong(start=1),
                "off by one: the kernel starts at K_0 = C Bb (Ab^0 = I): u_k enters the state at step k and is "
                "read at step k, so K = (C Bb, C Ab Bb, ..., C Ab^(L-1) Bb)"),
        Mistake("elementwise power", kernel_wrong(power="elementwise"),
                "Ab ** l raises every entry to the power l; the kernel needs the matrix power Ab^l = Ab @ ... @ Ab "
                "(or, cheaper, carry the vector x = Ab @ x from one l to the next)"),
        Mistake("Ab transposed", kernel_wrong(transpose=True),
                "Ab is transposed: the state evolves as x_k = Ab x_{k-1}, so K_l = C Ab^l Bb (not C (Ab^T)^l Bb)"),
        Mistake("kernel reversed", kernel_wrong(flip=True),
                "the kernel is reversed: K[l] = C Ab^l Bb, so K[0] = C Bb comes first"),
        Mistake("Bb missing", kernel_wrong(no_b=True),
                "Bb is missing: K_l = C Ab^l Bb (the input enters the state through Bb)"),
        Mistake("L - 1 entries", kernel_wrong(length=-1), says=("expected shape", "l = 0 .. L-1")),
        Mistake("K as [L, 1]", _reshaped(kernel_wrong(), (-1, 1), "column_kernel"), says=("K is a 1-D tensor [L]",)),
    ),
    diagnose=_kernel_shape_hint,
    extra_checks=(forbid(),),
    reference_name="float64 C Ab^l Bb (a loop of matrix-vector products)",
))


# ------------------------------------------------------------------------------------------ 7.3b


def _conv_ssm(case: Case) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The case's SSM, one per channel (float64; the same every time it is asked for)."""
    return ssm64(generator(case, salt=1), case["N"], case["L"], case["H"])


def _conv_inputs(case: Case, device: torch.device) -> dict[str, Any]:
    """u [B, L, H], K [H, L] (the kernel of the case's SSM), D [H]."""
    gen = generator(case)
    Bsz, L, H = case["B"], case["L"], case["H"]
    if case.get("noncontiguous"):
        u = randn(gen, Bsz, H, L).to(device, case.dtype).transpose(1, 2)
    else:
        u = randn(gen, Bsz, L, H).to(device, case.dtype)
    Ab, Bb, C = _conv_ssm(case)
    K = kernel64(Ab, Bb, C, L)
    return {"u": u, "K": K.to(device, case.dtype), "D": randn(gen, H).to(device, case.dtype)}


def recurrence64(u: torch.Tensor, Ab: torch.Tensor, Bb: torch.Tensor, C: torch.Tensor, D: torch.Tensor
                 ) -> torch.Tensor:
    """The discrete SSM run step by step in float64: x_k = Ab x_{k-1} + Bb u_k, y_k = C x_k + D u_k, x_{-1} = 0.
    u [B, L, H]; Ab [H, N, N], Bb [H, N, 1], C [H, 1, N], D [H]. Returns y [B, L, H] float64 (u's device)."""
    u64 = u.double().cpu()
    Bsz, L, H = u64.shape
    x = torch.zeros(Bsz, H, Ab.shape[-1], dtype=torch.float64)
    ys = []
    for k in range(L):
        x = torch.einsum("hnm,bhm->bhn", Ab, x) + Bb[None, :, :, 0] * u64[:, k, :, None]  # [B, H, N]
        ys.append(torch.einsum("hn,bhn->bh", C[:, 0], x) + D.double().cpu() * u64[:, k])
    return torch.stack(ys, dim=1).to(u.device)


def _conv_reference(inputs: dict[str, Any], case: Case) -> torch.Tensor:
    """The recurrence (not a convolution) on the SSM that made K."""
    Ab, Bb, C = _conv_ssm(case)
    u = inputs["u"]
    return recurrence64(u, Ab, Bb, C, inputs["D"]).to(u.dtype)


def conv_wrong(*, n: str = "2L", conj: bool = False, window: str = "first", skip: str = "add", shift: int = 0,
               flip_k: bool = False, irfft_n: bool = True, norm: str = "backward") -> Callable[..., torch.Tensor]:
    """ssm_conv (u, K, D) -> y with at most the mistakes asked for: n="L" (FFT length L: circular), n="2L-2"
    (one short of 2L - 1: the last product wraps onto y_0), n="2L-1" with irfft_n=False (irfft's default length
    2(m - 1) = 2L - 2 for the odd n), conj (a correlation), window="last" / "tail" (the last L outputs of the full
    convolution / of the length-n inverse FFT), skip "add" / "none" / "scale" (D * (K * u)), shift (outputs
    delayed), flip_k (K reversed), norm="ortho" (every transform scaled by 1/sqrt(n))."""

    def ssm_conv(u, K, D):
        L = u.shape[1]
        uf = u.float().transpose(1, 2)  # [B, H, L]
        k = K.float().flip(-1) if flip_k else K.float()
        size = {"L": L, "2L": 2 * L, "2L-1": 2 * L - 1, "2L-2": max(2 * L - 2, 1)}[n]
        Kf = torch.fft.rfft(k, n=size, norm=norm)
        if conj:
            Kf = Kf.conj()
        full = torch.fft.irfft(torch.fft.rfft(uf, n=size, norm=norm) * Kf, n=size if irfft_n else None, norm=norm)
        if full.shape[-1] < L:
            full = torch.nn.functional.pad(full, (0, L - full.shape[-1]))
        y = full[..., -L:] if window == "tail" else full[..., L - 1 if window == "last" else 0:][..., :L]
        if window == "last" and y.shape[-1] < L:
            y = torch.nn.functional.pad(y, (0, L - y.shape[-1]))
        if shift:
            y = torch.nn.functional.pad(y, (shift, 0))[..., :L]
        y = y.transpose(1, 2)
        if skip == "add":
            y = y + D.float() * u.float()
        elif skip == "scale":
            y = D.float() * y
        return y.to(u.dtype)

    return ssm_conv


def _probe_conv(L: int, device: torch.device) -> tuple[tuple[torch.Tensor, ...], dict[str, Any]]:
    gen = torch.Generator().manual_seed(7300 + L)
    u = torch.randn(1, L, 1, generator=gen).to(device)
    K = (0.99 ** torch.arange(L, dtype=torch.float32)[None]).to(device)
    return (u, K, torch.ones(1, device=device)), {}


def _count_calls(trial: Trial, fn: Callable[..., Any], L: int) -> TorchCalls:
    args, kwargs = _probe_conv(L, trial.device)
    with torch.no_grad(), TorchCalls() as calls:
        trial.call(fn, args, kwargs, f"{trial.fn_name}(u, K, D)", where=f"(how check, L={L})")
    return calls


def fft_without_loop(trial: Trial, fn: Callable[..., Any]) -> None:
    """How check for 7.3b: an FFT does the convolution — torch.fft is called, the number of torch calls does not
    grow with L (no loop over time), and no direct convolution (conv1d) does the work. (No L x L Toeplitz
    matrix: how.no_quadratic_memory, the next check.)"""
    small, large = _count_calls(trial, fn, 128), _count_calls(trial, fn, 512)
    if not any("fft" in name for name in large.names):
        fail("how check: your function never calls torch.fft",
             "this exercise is the FFT convolution (S4 §2.4): transform u and K with torch.fft.rfft (zero-padded "
             "to n = 2L), multiply, transform back with torch.fft.irfft and keep the first L outputs")
    if large.calls - small.calls >= (512 - 128) // 2:
        fail(f"how check: your function makes {small.calls} torch calls at L=128 and {large.calls} at L=512: it "
             "loops over time steps, O(L^2) work in Python",
             "one FFT of u and one of K (zero-padded to 2L), one product, one inverse FFT: no loop over t")
    banned = {"conv1d", "conv2d", "conv_transpose1d"} & large.names
    if banned:
        fail(f"how check: your function calls torch's {', '.join(sorted(banned))}, a direct convolution "
             "(O(L^2) work for a kernel as long as the sequence)",
             "compute the convolution with torch.fft (rfft, multiply, irfft), as S4 does")


FFT_LOW_PRECISION = ("torch.fft does not compute in bfloat16, and in float16 only on a GPU at power-of-two lengths: "
                     "transform u.float() and K.float() and return y.to(u.dtype)")
NO_TOEPLITZ = ("the FFT convolution needs O(L) memory and O(L log L) time: transform u and K (zero-padded to 2L), "
               "multiply, transform back — no [L, L] matrix of kernel entries K[t - s]")


CONV_SPEC = register(Exercise(
    id="7.3b",
    fn_name="ssm_conv",
    signature="ssm_conv(u, K, D) -> y",
    cases=lambda device, dtypes: case_list({"N": 8}, [
        {"B": 2, "L": 64, "H": 3},
        {"B": 1, "L": 100, "H": 2},
        {"B": 2, "L": 63, "H": 3, "noncontiguous": True},
        {"B": 1, "L": 1, "H": 2},
        {"B": 1, "L": 300, "H": 2, "N": 4},
    ], 741, dtypes, half={"B": 2, "L": 64, "H": 2}),  # n = 2L = 128: cuFFT takes float16 at powers of two only
    make_inputs=_conv_inputs,
    expected=_conv_reference,
    output=TensorOut("y", "BTH"),
    positional=("u", "K", "D"),
    input_layouts={"u": "BTH", "K": "HT"},
    mistakes=(
        Mistake("circular convolution", conv_wrong(n="L"),
                "circular convolution: an FFT of length L wraps around, so y_t also reads u_(t-j+L) for j > t "
                "(the end of the sequence leaks into its start). Zero-pad both to n >= 2L - 1 "
                "(torch.fft.rfft(x, n=2 * L)) and keep the first L outputs"),
        Mistake("correlation (conjugate)", conv_wrong(conj=True),
                "non-causal: conjugating K's FFT computes a correlation, y_t = sum_j K_j u_(t+j), which reads the "
                "future. Multiply the two FFTs as they are"),
        Mistake("last L outputs", conv_wrong(window="last"),
                "non-causal window: the full convolution has 2L - 1 outputs and y_t is output t, so keep the "
                "first L (y_t = sum_(j<=t) K_j u_(t-j)), not the last"),
        Mistake("last L of the inverse FFT", conv_wrong(window="tail"),
                "non-causal window: the full convolution has 2L - 1 outputs and y_t is output t, so keep the "
                "first L (y_t = sum_(j<=t) K_j u_(t-j)), not the last"),
        Mistake("D missing", conv_wrong(skip="none"),
                "the skip term is missing: y = K * u + D u (D [H] per channel, S4 §2.1)"),
        Mistake("D scales the output", conv_wrong(skip="scale"),
                "D is a skip connection, added: y = K * u + D u, not D (K * u)"),
        Mistake("one step late", conv_wrong(shift=1),
                "your output is one step late: K_0 = C Bb multiplies u_t itself (y_t = K_0 u_t + K_1 u_(t-1) "
                "+ ...)"),
        Mistake("kernel reversed", conv_wrong(flip_k=True),
                "K is reversed: convolution pairs K_j with u_(t-j), K_0 with the newest input"),
        Mistake("FFT length 2L - 2", conv_wrong(n="2L-2"),
                "the FFT is one sample short: the full convolution has 2L - 1 outputs, and with n = 2L - 2 the last "
                "one (K_(L-1) u_(L-1)) wraps around onto y_0. Zero-pad to n >= 2L - 1 (n = 2L is simplest)"),
        Mistake("orthonormal FFTs", conv_wrong(norm="ortho"),
                "norm='ortho' scales each of the three transforms by 1/sqrt(n), so the product theorem leaves K * u "
                "divided by sqrt(n): keep the default norm (rfft unscaled, irfft divides by n)"),
        Mistake("irfft without n", conv_wrong(n="2L-1", irfft_n=False),
                "torch.fft.irfft without n returns 2(m - 1) samples for m frequencies, an even length: for the odd "
                "n = 2L - 1 that is 2L - 2, the wrong transform. Pass the same n to irfft as to rfft"),
    ),
    exception_hint=_low_precision_hint(FFT_LOW_PRECISION),
    extra_checks=(forbid(), fft_without_loop,
                  no_quadratic_memory(_probe_conv, small=128, large=512,
                                      what="an L×L (Toeplitz) matrix of kernel entries", hint=NO_TOEPLITZ)),
    reference_name="the recurrence x_k = Ab x_(k-1) + Bb u_k, y_k = C x_k + D u_k in float64",
))


# ================================================================================================
# 7.4 the diagonal (S4D) kernel
# ================================================================================================


def _s4d_inputs(case: Case, device: torch.device) -> dict[str, Any]:
    """A [H, N] < 0 (S4D-Real, -(n+1), or random rates), B, C [H, N], dt [H] > 0 (log-uniform), L."""
    gen = generator(case)
    H, N, L = case["H"], case["N"], case["L"]
    if case.get("init") == "real":
        A = -(torch.arange(N, dtype=torch.float32) + 1).expand(H, N).clone()
    else:
        A = -(0.05 + 2 * torch.rand(H, N, generator=gen))
    B, C = randn(gen, H, N), randn(gen, H, N) / math.sqrt(N)
    dt = torch.exp(math.log(1e-3) + torch.rand(H, generator=gen) * (math.log(1e-1) - math.log(1e-3)))
    A = A.to(device, case.dtype)
    if case.get("noncontiguous"):
        A = A.T.contiguous().T
    return {"A": A, "B": B.to(device, case.dtype), "C": C.to(device, case.dtype),
            "dt": dt.to(device, case.dtype), "L": L}


def _s4d_reference(inputs: dict[str, Any], case: Case) -> torch.Tensor:
    """Per channel: scipy's zero-order hold of the dense diag(A) (course_utils.refs.discretize), then the
    loop of matrix-vector products — no Vandermonde, no closed form of the diagonal."""
    from course_utils.refs.discretize import discretize_zoh

    A, B, C, dt, L = (inputs[n] for n in ("A", "B", "C", "dt", "L"))
    rows = []
    for h in range(A.shape[0]):
        Ab, Bb = discretize_zoh(torch.diag(A[h]).double().cpu().numpy(), B[h, :, None].double().cpu().numpy(),
                                float(dt[h]))
        rows.append(kernel64(torch.from_numpy(Ab), torch.from_numpy(Bb), C[h].double().cpu()[None], L))
    return torch.stack(rows).to(A.device, A.dtype)


def s4d_wrong(*, start: int = 0, power_dt: bool = True, bbar: str = "zoh", abar: str = "zoh", no_c: bool = False
              ) -> Callable[..., torch.Tensor]:
    """s4d_kernel (A, B, C, dt, L) -> K [H, L] with at most the mistakes asked for: start=1 (powers from 1),
    power_dt=False (dt missing in the powers: exp(A l)), bbar "zoh" / "none" (B itself) / "euler" (dt B) /
    "times_a" ((exp(dt A) - 1) A B) / "no_b" ((exp(dt A) - 1) / A),
    abar "zoh" / "euler" (1 + dt A), no_c (C left out)."""

    def s4d_kernel(A, B, C, dt, L):
        A, B, C, dt = A.double(), B.double(), C.double(), dt.double()[:, None]
        l = torch.arange(start, start + L, dtype=torch.float64, device=A.device)
        dA = dt * A
        Ab = dA.exp() if abar == "zoh" else 1 + dA
        if abar == "zoh":
            V = ((dA if power_dt else A)[..., None] * l).exp()  # [H, N, L]: Ab_n^l = exp(l dt A_n)
        else:
            V = Ab[..., None] ** l
        Bb = {"zoh": (dA.exp() - 1) / A * B, "none": B, "euler": dt * B, "times_a": (dA.exp() - 1) * A * B,
              "no_b": (dA.exp() - 1) / A}[bbar]
        w = Bb if no_c else C * Bb
        return torch.einsum("hn,hnl->hl", w, V)

    def typed(A, B, C, dt, L):
        return s4d_kernel(A, B, C, dt, L).to(A.dtype)

    typed.__name__ = "s4d_kernel"
    return typed


def no_dense_powers(small: int = 64, large: int = 256, L: int = 8) -> Callable[[Trial, Callable[..., Any]], None]:
    """How check for 7.4: no power (or exponential) of a dense N x N matrix — torch.linalg.matrix_power /
    matrix_exp are not called, and the largest intermediate grows linearly with N, not like N^2."""

    def largest(trial: Trial, fn: Callable[..., Any], N: int) -> TorchCalls:
        gen = torch.Generator().manual_seed(7400 + N)
        A = -(0.1 + torch.rand(1, N, generator=gen)).to(trial.device)
        B, C = (torch.randn(1, N, generator=gen).to(trial.device) for _ in range(2))
        dt = torch.full((1,), 0.01, device=trial.device)
        with torch.no_grad(), TorchCalls() as calls:
            trial.call(fn, (A, B, C, dt, L), {}, f"{trial.fn_name}(A, B, C, dt, L={L})", where=f"(how check, N={N})")
        return calls

    def check(trial: Trial, fn: Callable[..., Any]) -> None:
        a, b = largest(trial, fn, small), largest(trial, fn, large)
        dense = {"matrix_power", "matrix_exp", "linalg_matrix_power", "linalg_matrix_exp"} & (a.names | b.names)
        ratio = b.largest / max(a.largest, 1)
        if dense or ratio > (large / small) ** 1.5:
            what = (f"calls torch's {', '.join(sorted(dense))}" if dense else
                    f"has a largest intermediate of {a.largest:,} elements at N={small} and {b.largest:,} at "
                    f"N={large} ({ratio:.1f}x for {large // small}x the state): it grows like N^2")
            fail(f"how check: your function {what} — it materialises a dense N x N matrix (diag(A) and its powers)",
                 "with a diagonal A every power is elementwise: Ab^l = exp(l dt A) per state entry n, so "
                 "K = (C * Bb) @ V with the Vandermonde matrix V[n, l] = Ab_n^l ([H, N, L], never N x N)")

    return check


def _s4d_low_precision(f: Failure) -> str | None:
    """A wrong kernel in a float16 / bfloat16 case (its float32 ones passed): the precision of the computation."""
    if f.kind == "value" and f.case.dtype in (torch.float16, torch.bfloat16):
        return (f"in {dtype_name(f.case.dtype)} (2 to 3 significant digits) exp(dt A) rounds to 1 for the small "
                "steps here (dt down to 1e-3), so exp(dt A) - 1, and Bb with it, is lost: compute the kernel in "
                "float32 (A.float(), ...) and return K.to(A.dtype)")
    return None


def _s4d_exception_hint(case: Case) -> str:
    if case["L"] == 1:
        return ("this case has L = 1 (one lag, K = C Bb): torch.linalg.vander needs at least 2 columns, while "
                "exp(dt A * l) over l = torch.arange(L) works for every L")
    return ("if this is a size mismatch: dt is [H], one step per channel, and A is [H, N], so the step broadcasts "
            "over n as dt[:, None] * A")


S4D_SPEC = register(Exercise(
    id="7.4",
    fn_name="s4d_kernel",
    signature="s4d_kernel(A, B, C, dt, L) -> K",
    cases=lambda device, dtypes: case_list({}, [
        {"H": 3, "N": 8, "L": 64},
        {"H": 2, "N": 16, "L": 200, "init": "real"},
        {"H": 4, "N": 4, "L": 1},
        {"H": 3, "N": 8, "L": 100, "noncontiguous": True},
    ], 751, dtypes, half={"H": 2, "N": 8, "L": 64}),
    make_inputs=_s4d_inputs,
    expected=_s4d_reference,
    output=TensorOut("K", "HT"),
    positional=("A", "B", "C", "dt", "L"),
    input_layouts={"A": "HN", "B": "HN", "C": "HN"},
    mistakes=(
        Mistake("powers from 1", s4d_wrong(start=1),
                "off by one: the Vandermonde matrix starts at Ab^0 = 1, V[n, l] = Ab_n^l for l = 0 .. L-1 "
                "(K_0 = C Bb)"),
        Mistake("dt missing in the powers", s4d_wrong(power_dt=False),
                "the powers miss dt: Ab_n^l = exp(dt A_n)^l = exp(l dt A_n), not exp(l A_n)"),
        Mistake("B, not Bb", s4d_wrong(bbar="none"),
                "the Bb factor is missing: K_l = sum_n C_n Bb_n Ab_n^l with Bb_n = (exp(dt A_n) - 1) / A_n B_n "
                "(zero-order hold, Exercise 7.1a on a diagonal A)"),
        Mistake("Bb = dt B", s4d_wrong(bbar="euler"),
                "Bb = dt B is Euler's; the zero-order hold of a diagonal A gives Bb_n = (exp(dt A_n) - 1) / A_n B_n"),
        Mistake("Euler Ab", s4d_wrong(abar="euler"),
                "Ab = 1 + dt A is forward Euler: zero-order hold gives Ab_n = exp(dt A_n)"),
        Mistake("C missing", s4d_wrong(no_c=True), "C is missing: K_l = sum_n C_n Bb_n Ab_n^l"),
        Mistake("Bb multiplied by A", s4d_wrong(bbar="times_a"),
                "Bb divides by A: Bb_n = (exp(dt A_n) - 1) / A_n B_n (A^-1 (exp(dt A) - I) B of 7.1a, entry by entry)"),
        Mistake("B missing in Bb", s4d_wrong(bbar="no_b"),
                "B is missing: Bb_n = (exp(dt A_n) - 1) / A_n B_n, so K_l = sum_n C_n Bb_n Ab_n^l carries both "
                "B and C"),
    ),
    diagnose=_s4d_low_precision,
    exception_hint=_s4d_exception_hint,
    extra_checks=(forbid(), no_dense_powers()),
    reference_name="scipy's zero-order hold of diag(A) per channel, then float64 C Ab^l Bb",
))
