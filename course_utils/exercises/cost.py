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

