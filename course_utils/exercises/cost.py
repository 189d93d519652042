"""Family: cost models — what a form of attention costs in FLOPs (and, in later labs, bytes), counted by
the student and checked against torch's FlopCounterMode on a reference computation.

Exercise 3.2 (the chunkwise form's matmul FLOPs).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from course_utils.grading import Case, Exercise, Failure, IntOut, Mistake, register


def count_chunkwise_flops(T: int, C: int, K: int, V: int) -> int:
    """FlopCounterMode's count of a reference chunked forward (one head, meta tensors: nothing computed).

    Per chunk: A = Q K^T, masked; O = A V + Q S; S = S + K^T V (masking and additions are not matmuls).
    """
    n = T // C
    q = torch.empty(n, C, K, device="meta")
    k = torch.empty(n, C, K, device="meta")
    v = torch.empty(n, C, V, device="meta")
    mask = torch.ones(C, C, device="meta").tril()
    with FlopCounterMode(display=False) as counter:
        S = torch.zeros(K, V, device="meta")
        for i in range(n):
            a = (q[i] @ k[i].T) * mask
            _ = a @ v[i] + q[i] @ S
            S = S + k[i].T @ v[i]
    return counter.get_total_flops()


def _flop_cases(device: torch.device, dtypes: list[torch.dtype]) -> list[Case]:
    # the first case has C, K, V all different, so that each wrong formula gives a different count
    shapes = [(128, 16, 32, 64), (64, 16, 16, 16), (256, 64, 64, 128), (1024, 32, 128, 64), (96, 8, 32, 16),
              (4096, 256, 64, 64)]
    return [Case({"T": T, "C": C, "K": K, "V": V}, seed=320 + i) for i, (T, C, K, V) in enumerate(shapes)]


def _terms(C: int, K: int, V: int) -> dict[str, int]:
    """The matmuls of one chunk: Q K^T, (masked A) V, Q S (inter-chunk), K^T V (state update)."""
    return {"qk": 2 * C * C * K, "av": 2 * C * C * V, "qs": 2 * C * K * V, "kv": 2 * C * K * V}


def flops_wrong(name: str, *, drop: str = "", chunks: Callable[[int, int], int] = lambda T, C: T // C,
                factor: float = 1.0, triangle: bool = False) -> Callable[..., int]:
    """chunkwise_flops(T, C, K, V) with one mistake: a term dropped, another number of chunks, a factor,
    or a triangular count of the masked C×C products."""

    def wrong(T, C, K, V):
        terms = _terms(C, K, V)
        if triangle:
            terms["qk"], terms["av"] = C * (C + 1) * K, C * (C + 1) * V
        per_chunk = sum(v for k, v in terms.items() if k != drop)
        return int(chunks(T, C) * per_chunk * factor)

    wrong.__name__ = name
    return wrong


def _float_result(T, C, K, V):
    return T / C * sum(_terms(C, K, V).values())


def _flop_diagnose(f: Failure) -> str | None:
    if f.kind == "value":
        return ("count each matmul of one chunk ([m, n] @ [n, p] costs 2 m n p FLOPs) and multiply by the "
                "number of chunks; masking and additions are not matmuls")
    return None


register(Exercise(
    id="3.2",
    fn_name="chunkwise_flops",
    signature="chunkwise_flops(T, C, K, V) -> int",
    cases=_flop_cases,
    make_inputs=lambda case, device: {n: case[n] for n in ("T", "C", "K", "V")},
    expected=lambda inputs, case: count_chunkwise_flops(inputs["T"], inputs["C"], inputs["K"], inputs["V"]),
    output=IntOut("flops"),
    positional=("T", "C", "K", "V"),
    diagnose=_flop_diagnose,
    reference_name="torch.utils.flop_counter.FlopCounterMode on a reference chunked forward (meta tensors)",
    mistakes=(
        Mistake("1 FLOP per multiply-add", flops_wrong("half", factor=0.5),
                "count 2 FLOPs per multiply-add (one multiply and one add)"),
        Mistake("missing Q K^T", flops_wrong("no_qk", drop="qk"), "missing the Q K^T term: 2 C^2 K per chunk"),
        Mistake("missing A V", flops_wrong("no_av", drop="av"), "missing the masked A V term: 2 C^2 V per chunk"),
        Mistake("missing the state update", flops_wrong("no_update", drop="kv"),
                "missing a C K V term: the inter-chunk Q S and the state update K^T V cost 2 C K V each"),
        Mistake("triangular intra-chunk count", flops_wrong("triangle", triangle=True),
                "the matmuls compute the full C×C block: the causal mask does not reduce a matmul's FLOPs"),
        Mistake("one chunk too many", flops_wrong("off_by_one", chunks=lambda T, C: T // C + 1),
                "the number of chunks is T // C"),
        Mistake("one chunk too few", flops_wrong("one_short", chunks=lambda T, C: T // C - 1),
                "the number of chunks is T // C"),
        Mistake("per chunk only", flops_wrong("per_chunk", chunks=lambda T, C: 1),
                "multiply the per-chunk count by the number of chunks, T // C"),
        Mistake("times T", flops_wrong("times_t", chunks=lambda T, C: T),
                "multiply the per-chunk count by T // C chunks, not by T"),
        Mistake("quadratic form", lambda T, C, K, V: 2 * T * T * (K + V),
                "that is the quadratic (parallel) form's count, 2 T^2 K + 2 T^2 V; count the chunkwise form"),
        Mistake("returns a float", _float_result, says=("Python int",)),
        Mistake("unrelated wrong number", lambda T, C, K, V: 12345, says=("count each matmul",)),
    ),
))



# ------------------------------------------------------------------------------------------ 3.5 best chunk size
# The cost model of lab 03, section 2, for one (batch, head) in bf16/fp16 (E bytes per element):
#     t(C) = F(C) / P + bytes(C) / W,   F(C) = 2 T C (K + V) + 4 T K V,   bytes(C) = E (T (2K + 2V) + 2 (T / C) K V)
# dt/dC = 0 gives C* = sqrt(E K V / (K + V) * P / W): T cancels, the hardware enters through P / W only.

import math  # noqa: E402  (this section's own imports, kept beside it)
import numbers  # noqa: E402
from typing import Any  # noqa: E402

from course_utils.grading import Trial, fail  # noqa: E402

E_BYTES = 2  # bf16 / fp16, as chunkwise_bytes's default in the notebook


def model_time(C: float, T: int, K: int, V: int, hardware: tuple[float, float], e: int = E_BYTES) -> float:
    """Seconds of the model t(C) = F(C) / P + bytes(C) / W for a real-valued C (T / C chunks, not T // C)."""
    P, W = hardware
    return (2 * T * C * (K + V) + 4 * T * K * V) / P + e * (T * (2 * K + 2 * V) + 2 * T / C * K * V) / W


def best_chunk_size_closed_form(T: int, K: int, V: int, hardware: tuple[float, float]) -> float:
    """C* = sqrt(E K V / (K + V) * P / W), the minimiser of model_time over real C > 0."""
    P, W = hardware
    return math.sqrt(E_BYTES * K * V / (K + V) * P / W)


def _c_star_cases(device: torch.device, dtypes: list[torch.dtype]) -> list[Case]:
    # (T, K, V, peak TFLOP/s, bandwidth GB/s). The first has K != V and separates every catalogued derivation;
    # T varies (C* must not), the GPUs are datasheet ones and one made up (nobody remembers its C*).
    rows = [(65536, 64, 128, 989, 4800), (4096, 128, 128, 312, 2039), (16384, 32, 48, 65, 320),
            (1024, 256, 64, 989, 3350), (2**20, 16, 16, 100, 1000), (8192, 64, 96, 2000, 8000)]
    return [Case({"T": T, "K": K, "V": V, "peak_TFLOPs": P, "bandwidth_GBs": W}, seed=350 + i)
            for i, (T, K, V, P, W) in enumerate(rows)]


def _c_star_inputs(case: Case, device: torch.device) -> dict[str, Any]:
    return {"T": case["T"], "K": case["K"], "V": case["V"],
            "hardware": (case["peak_TFLOPs"] * 1e12, case["bandwidth_GBs"] * 1e9)}


def _hundredths(x: float) -> int:
    return int(round(100 * x))


def _run_c_star(trial: Trial, fn: Callable[..., Any], inputs: dict[str, Any]) -> Any:
    """Call fn(T, K, V, hardware) and compare its C* to 0.01 token: the result as round(100 * C*)."""
    got = trial.call_inputs(fn, inputs)
    if got is None:
        fail("your function returned None; expected C* (a float)", "did you forget the `return` statement?")
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, numbers.Real):
        fail(f"your function returned a {type(got).__name__}; expected C* as a number (a float)")
    if not math.isfinite(float(got)):
        fail(f"your function returned {got}; expected a finite C*", "a division by zero, or a negative square root?")
    return _hundredths(float(got))


def _c_star_diagnose(f: Failure) -> str | None:
    if f.kind != "value":
        return None
    return (f"your C* = {f.got / 100:.2f}, the model's {f.expected / 100:.2f}: write t(C) as a·C + b/C + (terms "
            "without C), set dt/dC = a - b/C² = 0, so C* = sqrt(b / a)")


def _c_star_wrong(name: str, fn: Callable[[int, int, int, float, float], float]) -> Callable[..., float]:
    def wrong(T, K, V, hardware):
        P, W = hardware
        return fn(T, K, V, P, W)

    wrong.__name__ = name
    return wrong


def _crossover(T, K, V, P, W, e=E_BYTES):
    """Where compute time equals memory time, F(C) / P = bytes(C) / W: the positive root of a C² + b C + c."""
    a, b, c = 2 * (K + V) / P, 4 * K * V / P - 2 * e * (K + V) / W, -2 * e * K * V / W
    return (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)


def _best_power_of_two(T, K, V, P, W):
    Cs = [2.0 ** i for i in range(int(math.log2(T)) + 1)]
    return min(Cs, key=lambda C: model_time(C, T, K, V, (P, W)))


ROOT = "the optimum of a·C + b/C is where its derivative a - b/C² vanishes: C* = sqrt(b / a), a square root"
INVERTED = ("C* grows with the machine balance P / W (FLOPs per byte): a GPU that computes more per byte moved "
            "can afford bigger chunks, so P is in the numerator, W in the denominator")
NO_HEAD_DIMS = ("C* depends on the head dims too: C*² = E K V / (K + V) · P / W — the state traffic grows with "
                "K·V, the intra-chunk FLOPs with K + V")
K_EQUALS_V = ("your C* is right for K = V only: keep K and V apart — the intra-chunk FLOPs grow with K + V, the "
              "state traffic with K·V, so C*² = E K V / (K + V) · P / W")
HEAD_DIMS_UPSIDE_DOWN = ("the head-dim factor is upside down: bytes give b ∝ K·V, FLOPs give a ∝ K + V, and "
                         "C*² = b / a ∝ K V / (K + V)")
TOO_SMALL = ("C* is √2 too small: a factor 2 is missing under the root — each chunk state is written and read "
             "back (2 (T/C) K V elements), and each element is E = 2 bytes")
TOO_LARGE = ("C* is √2 too large: under the root you have a factor 2 too many — an (m×n)(n×p) matmul is 2mnp "
             "FLOPs (also for the masked C×C blocks: the mask saves no FLOPs), and bf16 is E = 2 bytes, not 4")
ONE_COST = ("one cost alone has no interior optimum: FLOPs are smallest at C = 1, bytes at C = T; the best C "
            "balances them, where d/dC (F/P + bytes/W) = 0")
CROSSOVER = ("that is where compute time equals memory time (a max(F/P, bytes/W) model, perfect overlap); this "
             "model adds them, t = F/P + bytes/W: minimise the sum, dt/dC = 0")
POWER_OF_TWO = ("that is the best power of two (a search over C); the exercise asks for the model's exact optimum "
                "over real C, the closed form, unrounded")
ROUNDED = "return C* unrounded, as a float: rounding to a whole chunk size is a later decision"
T_CANCELS = ("your C* changes with T, but T cancels: FLOPs and bytes both grow linearly with T (the state traffic "
             "is paid once per chunk, T / C times)")
BALANCE_ONLY = "P / W alone is the machine balance; C* = sqrt(E K V / (K + V) · P / W)"


def _c_star_mistakes() -> tuple[Mistake, ...]:
    r = math.sqrt
    m = lambda name, hint, f: Mistake(name, _c_star_wrong(slug(name), f), hint)  # noqa: E731
    return (
        m("no square root", ROOT, lambda T, K, V, P, W: 2 * K * V / (K + V) * P / W),
        m("balance inverted (W / P)", INVERTED, lambda T, K, V, P, W: r(2 * K * V / (K + V) * W / P)),
        m("head dims dropped", NO_HEAD_DIMS, lambda T, K, V, P, W: r(P / W)),
        m("K = V formula with d = K", K_EQUALS_V, lambda T, K, V, P, W: r(2 * K / 2 * P / W)),
        m("head-dim factor upside down", HEAD_DIMS_UPSIDE_DOWN, lambda T, K, V, P, W: r(2 * (K + V) / (K * V) * P / W)),
        m("states written, not read back", TOO_SMALL, lambda T, K, V, P, W: r(K * V / (K + V) * P / W)),
        m("elements, not bytes", TOO_SMALL, lambda T, K, V, P, W: r(2 * K * V / (K + V) * P / W / 2)),
        m("1 FLOP per multiply-add", TOO_LARGE, lambda T, K, V, P, W: r(4 * K * V / (K + V) * P / W)),
        m("triangular intra-chunk FLOPs", TOO_LARGE, lambda T, K, V, P, W: r(2 * 2 * K * V / (K + V) * P / W)),
        m("float32 bytes (E = 4)", TOO_LARGE, lambda T, K, V, P, W: r(4 * K * V / (K + V) * P / W) + 0.0),
        m("FLOPs only (C = 1)", ONE_COST, lambda T, K, V, P, W: 1.0),
        m("bytes only (C = T)", ONE_COST, lambda T, K, V, P, W: float(T)),
        m("compute time = memory time", CROSSOVER, _crossover),
        m("best power of two", POWER_OF_TWO, _best_power_of_two),
        m("rounded to a whole chunk", ROUNDED, lambda T, K, V, P, W: float(round(r(2 * K * V / (K + V) * P / W)))),
        m("state traffic once, not per chunk", T_CANCELS, lambda T, K, V, P, W: r(2 * K * V / (K + V) * P / W / T)),
        m("the machine balance itself", BALANCE_ONLY, lambda T, K, V, P, W: P / W),
    )


def slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text.lower()).strip("_")


register(Exercise(
    id="3.5",
    fn_name="best_chunk_size",
    signature="best_chunk_size(T, K, V, hardware) -> float, hardware = (peak FLOP/s, bandwidth bytes/s)",
    cases=_c_star_cases,
    make_inputs=_c_star_inputs,
    expected=lambda inputs, case: _hundredths(best_chunk_size_closed_form(**inputs)),
    output=IntOut("C* in hundredths of a token, round(100 · C*)"),
    positional=("T", "K", "V", "hardware"),
    run=_run_c_star,
    diagnose=_c_star_diagnose,
    reference_name="the closed form C* = sqrt(E K V / (K + V) · P / W), E = 2 bytes (to 0.01 token)",
    mistakes=_c_star_mistakes(),
))
"""3.5: the chunk size that minimises the cost model, derived (a function of T, K, V and the hardware's peaks)."""
