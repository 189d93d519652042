"""Exercise specs of Lab 03 (the chunkwise-parallel form, GLA paper §4 / Sun et al. 2023 §2.4).

3.1 (chunk by chunk) and 3.3 (all chunks at once) are graded against course_utils.refs.linear_attn (fla's
chunk kernel on GPU, the naive chunk form on CPU); 3.3 must also make as many torch calls for many chunks as
for few (no loop over chunks). 3.2 is graded against torch's FlopCounterMode counting a reference chunked
forward on meta tensors.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

from course_utils.exercises import lab02
from course_utils.exercises.common import half_dtype_cases
from course_utils.grading import Alt, Case, Exercise, Failure, IntOut, Student, fail, randn, register

# ------------------------------------------------------------------------------------------------ 3.1

DEFAULT_CHUNK = 16


def _chunk(case: Case) -> int:
    return case.get("chunk_size", DEFAULT_CHUNK)


def _chunk_cases(device: torch.device, dtypes: list[torch.dtype]) -> list[Case]:
    base = {"K": lab02.K_DIM, "V": lab02.V_DIM, "dtype": torch.float32}
    return [
        Case({"B": 1, "T": 64, "H": 2, **base}, seed=301),  # whole chunks first: ragged bugs show apart
        Case({"B": 1, "T": 63, "H": 2, **base}, seed=302),
        Case({"B": 2, "T": 100, "H": 3, **base, "chunk_size": 7, "initial_state": True}, seed=303),
        Case({"B": 2, "T": 63, "H": 2, **base, "chunk_size": 1}, seed=304),
        Case({"B": 2, "T": 100, "H": 2, **base, "chunk_size": 64, "scale": 0.3, "initial_state": True,
              "noncontiguous": True}, seed=305),
        Case({"B": 2, "T": 63, "H": 2, **base, "chunk_size": 16, "initial_state": True}, seed=306, grad=True),
        *half_dtype_cases(dtypes, {"B": 2, "T": 100, "H": 2, "K": lab02.K_DIM, "V": lab02.V_DIM,
                                   "chunk_size": 16, "initial_state": True}, seed=307),
    ]


def _chunk_inputs(case: Case, device: torch.device) -> dict[str, Any]:
    inputs = lab02.make_qkv(case, device)
    if "chunk_size" in case.params:
        inputs["chunk_size"] = case["chunk_size"]
    return inputs


def _chunk_reference(inputs: dict[str, Any], case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    from course_utils.refs import linear_attn

    return linear_attn.linear_attention(inputs["q"], inputs["k"], inputs["v"], scale=inputs.get("scale"),
                                        initial_state=inputs.get("initial_state"), normalize=False,
                                        mode="chunk")  # 3.1 is the chunked form: compare with fla's chunk kernel


def chunk_variant(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, C: int,
                  S0: torch.Tensor | None, intra: str = "tril", inter: str = "prev", ragged: str = "ok"
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunkwise form with a mistake, float32. q, k: [B, T, H, K], v: [B, T, H, V]; S0: [B, H, K, V].

    intra: "tril" (right), "none" (no causal mask), "strict" (mask hides the diagonal)
    inter: "prev" (right: state of the previous chunks), "none" (dropped), "incl" (state after this chunk)
    ragged: "ok", or "zero" (the last partial chunk is skipped: zeros out, not in the state)
    Returns (o [B, T, H, V], S [B, H, K, V]).
    """
    q, k, v = q.float() * scale, k.float(), v.float()
    B, T, H, K = q.shape
    S = torch.zeros(B, H, K, v.shape[-1], device=q.device) if S0 is None else S0.float().clone()
    o = torch.zeros_like(v)
    stop = (T // C) * C if ragged == "zero" else T
    for start in range(0, stop, C):
        qc, kc, vc = q[:, start:start + C], k[:, start:start + C], v[:, start:start + C]
        n = qc.shape[1]
        a = torch.einsum("bthk,bshk->bhts", qc, kc)
        if intra != "none":
            a = a * torch.ones(n, n, device=q.device).tril(-1 if intra == "strict" else 0)
        oc = torch.einsum("bhts,bshv->bthv", a, vc)
        S_next = S + torch.einsum("bthk,bthv->bhkv", kc, vc)
        if inter == "prev":
            oc = oc + torch.einsum("bthk,bhkv->bthv", qc, S)
        elif inter == "incl":
            oc = oc + torch.einsum("bthk,bhkv->bthv", qc, S_next)
        o[:, start:start + n] = oc
        S = S_next
    return o, S


RAGGED = ("the last, partial chunk is mishandled: T={T} is not a multiple of chunk_size={C}, so the last "
          "chunk has {r} tokens — loop over range(0, T, chunk_size) and size masks from the chunk itself")


def _chunk_alternatives(inputs: dict[str, Any], case: Case, expected: Any) -> list[Alt]:
    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    scale = lab02._scale(inputs)
    S0 = inputs.get("initial_state")
    C = inputs.get("chunk_size", DEFAULT_CHUNK)
    T = q.shape[1]
    cv = lambda **kw: chunk_variant(q, k, v, **(dict(scale=scale, C=C, S0=S0) | kw))
    o, S = cv()
    alts = lab02.recurrent_alternatives(inputs, case, expected)
    alts += [
        Alt("intra-chunk scores not masked: inside a chunk only s <= t may be read (tril of the C×C block)",
            {"o": cv(intra="none")[0]}),
        Alt("the intra-chunk mask hides the diagonal: keep s <= t (tril(..., 0)); the state is inclusive",
            {"o": cv(intra="strict")[0]}),
        Alt("missing the inter-chunk term: each chunk also reads scale * q_t^T S, the state of all previous "
            "chunks (GLA paper §4, Eq. for O_[i])", {"o": cv(inter="none")[0]}),
        Alt("the inter-chunk term reads the state *after* adding this chunk (counted twice): use S from the "
            "previous chunks, then update it", {"o": cv(inter="incl")[0]}),
    ]
    last = ((T - 1) // C) * C  # start of the last chunk
    if last > 0:
        _, S_wo_last = chunk_variant(q[:, :last], k[:, :last], v[:, :last], scale, C, S0)
        alts.append(Alt("final_state misses the last chunk: update S after every chunk, the last one too",
                        {"final_state": S_wo_last}))
    if T % C:
        hint = RAGGED.format(T=T, C=C, r=T % C)
        o_r, S_r = cv(ragged="zero")
        alts += [Alt(hint, {"o": o_r}), Alt(hint, {"final_state": S_r})]
    return alts


def _chunk_diagnose(f: Failure) -> str | None:
    """Failures explained by chunk boundaries: a ragged tail, or an error starting at the second chunk."""
    case = f.case
    T, C = case["T"], _chunk(case)
    if f.kind == "shape" and f.name == "o" and f.got.dim() == 4 and T % C:
        if f.got.shape[1] == (T // C) * C:
            return RAGGED.format(T=T, C=C, r=T % C) + " (your output drops it)"
        if f.got.shape[1] == -(-T // C) * C:
            return f"you return the zero-padded length {f.got.shape[1]}: slice the output back to T={T}"
    if f.kind in ("value", "grad") and f.info.get("layout", "").startswith("BT"):
        t_wrong = f.info["wrong"].any(dim=(0, 2, 3)).nonzero().flatten().tolist()
        if t_wrong and T % C and t_wrong[0] >= (T // C) * C:
            return RAGGED.format(T=T, C=C, r=T % C)
        if t_wrong and C > 1 and t_wrong[0] == C:
            return (f"chunk 0 (t < {C}) is right and the error starts at the second chunk (t={C}): check the "
                    "inter-chunk state (S of the previous chunks, updated after each chunk)")
    return None


def _chunk_exception_hint(case: Case) -> str | None:
    T, C = case["T"], _chunk(case)
    if T % C:
        return RAGGED.format(T=T, C=C, r=T % C)
    return None


# 3.1 and 3.3 compute the same thing (3.3 without a loop over chunks): same cases, reference and diagnoses
CHUNKWISE_SPEC = dict(
    cases=_chunk_cases,
    make_inputs=_chunk_inputs,
    expected=_chunk_reference,
    output=lab02.output_node,
    positional=("q", "k", "v"),
    input_layouts=lab02.LAYOUTS,
    grad_inputs=("q", "k", "v", "initial_state"),
    alternatives=_chunk_alternatives,
    diagnose=_chunk_diagnose,
    exception_hint=_chunk_exception_hint,
)

register(Exercise(
    id="3.1",
    fn_name="chunk_linear_attention",
    signature=("chunk_linear_attention(q, k, v, chunk_size=16, scale=None, initial_state=None) "
               "-> (o, final_state)"),
    **CHUNKWISE_SPEC,
))


# ------------------------------------------------------------------------------------------------ 3.2


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


def _flop_inputs(case: Case, device: torch.device) -> dict[str, Any]:
    return {n: case[n] for n in ("T", "C", "K", "V")}


def _flop_reference(inputs: dict[str, Any], case: Case) -> int:
    return count_chunkwise_flops(inputs["T"], inputs["C"], inputs["K"], inputs["V"])


def _flop_alternatives(inputs: dict[str, Any], case: Case, expected: Any) -> list[Alt]:
    T, C, K, V = (inputs[n] for n in ("T", "C", "K", "V"))
    n = T // C
    qk, av, qs, kv = 2 * C * C * K, 2 * C * C * V, 2 * C * K * V, 2 * C * K * V
    per_chunk = qk + av + qs + kv
    tri = C * (C + 1)
    options = [
        ("count 2 FLOPs per multiply-add (one multiply and one add)", n * per_chunk // 2),
        ("missing the Q K^T term: 2 C^2 K per chunk", n * (av + qs + kv)),
        ("missing the masked A V term: 2 C^2 V per chunk", n * (qk + qs + kv)),
        ("missing a C K V term: the inter-chunk Q S and the state update K^T V cost 2 C K V each",
         n * (qk + av + qs)),
        ("the matmuls compute the full C×C block: the causal mask does not reduce a matmul's FLOPs",
         n * (tri * K + tri * V + qs + kv)),
        ("the number of chunks is T // C", (n + 1) * per_chunk),
        ("the number of chunks is T // C", (n - 1) * per_chunk),
        ("multiply the per-chunk count by the number of chunks, T // C", per_chunk),
        ("multiply the per-chunk count by T // C chunks, not by T", T * per_chunk),
        ("that is the quadratic (parallel) form's count, 2 T^2 K + 2 T^2 V; count the chunkwise form",
         2 * T * T * K + 2 * T * T * V),
    ]
    return [Alt(h, {"flops": f}) for h, f in options]


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
    make_inputs=_flop_inputs,
    expected=_flop_reference,
    output=IntOut("flops"),
    positional=("T", "C", "K", "V"),
    alternatives=_flop_alternatives,
    diagnose=_flop_diagnose,
    reference_name="torch.utils.flop_counter.FlopCounterMode on a reference chunked forward (meta tensors)",
))



# ------------------------------------------------------------------------------------------------ 3.3


class _CountTorchCalls(TorchFunctionMode):
    """Counts torch function and tensor-method calls made inside the `with` block (a loop shows up as more)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


_FEW, _MANY, _LOOP_C = 4, 32, 8  # chunks in the two probes, and their chunk size


def _torch_calls(student: Student, n_chunks: int, device: torch.device) -> int:
    gen = torch.Generator().manual_seed(330)
    T = n_chunks * _LOOP_C - 3  # ragged, like the graded cases
    q, k = (randn(gen, 1, T, 2, 8).abs().to(device) for _ in range(2))
    v = randn(gen, 1, T, 2, 8).to(device)
    with _CountTorchCalls() as counter, torch.no_grad():
        student.call((q, k, v), {"chunk_size": _LOOP_C}, f"{student.name}(q, k, v, chunk_size={_LOOP_C})",
                     where=f"(loop check, T={T})")
    return counter.calls


def _check_no_chunk_loop(student: Student, device: torch.device) -> None:
    """All chunks at once: the number of torch calls must not grow with the number of chunks."""
    few, many = _torch_calls(student, _FEW, device), _torch_calls(student, _MANY, device)
    if many >= few + (_MANY - _FEW):  # at least one more call per extra chunk: a loop over chunks
        fail(f"loop check: your function makes {few} torch calls for {_FEW} chunks and {many} for {_MANY} chunks "
             f"(chunk_size={_LOOP_C}): it still works chunk by chunk, so its cost grows with T/C launches — "
             "Exercise 3.1 already does that",
             "pad T up to N·C with zeros (zero keys and values add nothing to any state), view the inputs as "
             "[B, N, C, H, D], compute every diagonal block with one einsum, every chunk's K^T V with another, "
             "and the states before each chunk with an exclusive cumsum over N (GLA paper §4, materialized "
             "chunk states)")


register(Exercise(
    id="3.3",
    fn_name="chunk_linear_attention_batched",
    signature=("chunk_linear_attention_batched(q, k, v, chunk_size=16, scale=None, initial_state=None) "
               "-> (o, final_state)"),
    extra_checks=(_check_no_chunk_loop,),
    **CHUNKWISE_SPEC,
))
