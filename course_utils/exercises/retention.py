"""Family: retention (RetNet, Sun et al. 2023, §2.1-2.2) — causal linear attention whose state decays by a
fixed gamma_h per head, gamma_h = 1 - 2^(-5-h) (multi-scale retention), in its three forms: parallel (the D
decay mask), recurrent, and chunkwise (a loop over chunks).

    S_t = gamma_h S_{t-1} + k_t v_t^T      o_t = scale * S_t^T q_t      (state [K, V] per head, inclusive)
    O = ((scale Q K^T) * D) V,   D[t, s] = gamma_h^(t-s) for s <= t, else 0

Exercises 5.1a (parallel, o only), 5.1b (recurrent), 5.1c (chunkwise). Expected values come from
course_utils.refs.retention: fla's naive parallel retention on a CPU (fused recurrent kernel on a GPU) for
5.1a, fla's simple-GLA recurrence with g = log gamma (fused_recurrent_retention on a GPU) for 5.1b, fla's
chunked simple GLA (chunk_retention on a GPU) for 5.1c.

Retention is simple GLA with the constant gate g = log gamma_h: this family belongs with the gated family
(course_utils/exercises/gated.py, lab 04) and could be merged into it.

Every mistake below is an implementation that makes it, with the exercise's signature: `core` computes the
parallel closed form (outputs and final state) with one thing wrong, `chunk_wrong` the chunkwise loop.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

from course_utils.conventions import QK_LAYOUT, STATE_LAYOUT, VO_LAYOUT, default_scale, resolve_scale
from course_utils.exercises.cases import bthd, case_list, generator, randn
from course_utils.grading import Case, Exercise, Failure, Mistake, TensorOut, TupleOut, register
from course_utils.grading.how import forbid, no_quadratic_memory

K_DIM, V_DIM = 16, 32  # K != V so that a transposed state shows in its shape
LAYOUTS = {"q": QK_LAYOUT, "k": QK_LAYOUT, "v": VO_LAYOUT, "initial_state": STATE_LAYOUT}
DEFAULT_CHUNK = 16

NO_DECAY = ("no decay: this is plain linear attention. Retention multiplies the state by gamma_h at every step "
            "(D[t, s] = gamma_h^(t-s)), gamma_h = 1 - 2^(-5-h)")
SAME_GAMMA = ("every head uses the same gamma: multi-scale retention gives head h its own gamma_h = 1 - 2^(-5-h), "
              "h = 0 .. H-1 (RetNet §2.2)")
GAMMA_REVERSED = "the gammas run backwards over the heads: head h = 0 has the fastest decay, 1 - 2^(-5)"
GAMMA_ONE_BASED = "gamma_h off by one head: h counts from 0, so head 0 has gamma = 1 - 2^(-5) = 0.96875"
EXPONENT_PLUS1 = ("one decay too many: D[t, s] = gamma^(t-s), so a token reads itself undecayed (D[t, t] = 1); "
                  "in the recurrence, decay the old state before adding k_t v_t^T, not after")
EXPONENT_NEG = "the decay grows with distance: D[t, s] = gamma^(t-s) with t - s >= 0 (not gamma^(s-t))"
NON_CAUSAL = "non-causal: D[t, s] = 0 for s > t (the future); mask it (gamma^(t-s) alone is > 1 there)"
STRICT = "the mask hides the diagonal: keep s <= t (D[t, t] = gamma^0 = 1); the state is inclusive"
D_NORMALIZED = ("D is normalised (RetNet's retention-score normalisation, §2.2, belongs to the layer): the "
                "operator uses D[t, s] = gamma^(t-s) as it is")
NO_SCALE = "missing scale? o_t = scale * S_t^T q_t with scale = K**-0.5 when scale=None"
IGNORES_SCALE = "ignores the scale argument: use it when given, K**-0.5 only when scale is None"
EXCLUSIVE = ("state read before the update: the state is inclusive, S_t = gamma S_{t-1} + k_t v_t^T, then "
             "o_t = scale S_t^T q_t")
IGNORES_INIT = "ignores initial_state? start the recurrence from S_0 = initial_state (zeros only when None)"
INIT_UNDECAYED = ("the initial state is never decayed: token t reads gamma^(t+1) S_0 (S_0 decays once per token, "
                  "before k_t v_t^T is added), and S_T holds gamma^T S_0")
INIT_OFF_BY_ONE = ("the initial state decays one step too few: S_0 is decayed before the first token is added, "
                   "so token t reads gamma^(t+1) S_0 (not gamma^t)")
STATE_UNDECAYED = ("final_state is not decayed: S_T = gamma^T S_0 + sum_s gamma^(T-1-s) k_s v_s^T (older tokens "
                   "count less)")
STATE_OFF_BY_ONE = "final_state decays once too often: the last token enters S_T undecayed, gamma^(T-1-s) for s"
STATE_MISSES_LAST = "final_state misses the last token: return S after adding k_{T-1} v_{T-1}^T"
STATE_IS_INIT = "final_state equals initial_state: the state is never updated, or you return the wrong variable"
REVERSED = "reversed time: o_t reads the tokens s >= t; the recurrence runs forward, t = 0 .. T-1"


# ------------------------------------------------------------------------------------------ inputs


def gammas(H: int, device: torch.device | str | None = None) -> torch.Tensor:
    """gamma_h = 1 - 2^(-5-h), h = 0 .. H-1, float32 [H] (as course_utils.refs.retention_gammas)."""
    return 1 - 2.0 ** (-5.0 - torch.arange(H, dtype=torch.float32, device=device))


def make_qkv(case: Case, device: torch.device) -> dict[str, Any]:
    """q, k, v as drawn (retention takes raw projections, no feature map), and the case's optional arguments."""
    gen = generator(case)
    inputs: dict[str, Any] = {"q": bthd(gen, case, K_DIM, device), "k": bthd(gen, case, K_DIM, device),
                              "v": bthd(gen, case, V_DIM, device)}
    for name in ("chunk_size", "scale"):
        if name in case.params:
            inputs[name] = case[name]
    if case.get("initial_state"):
        inputs["initial_state"] = (0.5 * randn(gen, case["B"], case["H"], K_DIM, V_DIM)).to(device, case.dtype)
    return inputs


def _reference(mode: str) -> Callable[[dict[str, Any], Case], Any]:
    def reference(inputs: dict[str, Any], case: Case) -> tuple[torch.Tensor, torch.Tensor]:
        from course_utils.refs.retention import retention

        q = inputs["q"]
        # "auto": fla's parallel naive_retention on a CPU; on a GPU the fused recurrent kernel (no autotuning)
        m = "recurrent" if mode == "auto" and q.is_cuda else mode
        return retention(q, inputs["k"], inputs["v"], scale=inputs.get("scale"),
                                   initial_state=inputs.get("initial_state"), mode=m)

    return reference


def output_node(case: Case) -> TupleOut:
    return TupleOut("(o, final_state)", (TensorOut("o", VO_LAYOUT), TensorOut("final_state", STATE_LAYOUT, state=True)))


# ------------------------------------------------------------------------------------------ mistakes

Core = Callable[..., tuple[torch.Tensor, Any]]


def _scale_as(how: str, scale: float | None, head_dim: int) -> float:
    return {"given": resolve_scale(scale, head_dim), "none": 1.0, "default": default_scale(head_dim)}[how]


def _gammas_as(how: str, H: int, device: torch.device) -> torch.Tensor:
    g = gammas(H, device)
    return {"right": g, "one": torch.ones_like(g), "head0": g[:1].expand(H), "reversed": g.flip(0),
            "one_based": 1 - 2.0 ** (-6.0 - torch.arange(H, dtype=torch.float32, device=device))}[how]


def core(*, gamma: str = "right", expo: str = "right", causal: bool = True, diag: bool = True,
         normalize_d: bool = False, reverse: bool = False, scale_as: str = "given", init: str = "right",
         state: str = "right") -> Core:
    """Retention (q, k, v, scale, initial_state) -> (o, final_state) in its parallel closed form, float32, with
    at most the mistakes asked for.

    gamma: "right", "one" (no decay), "head0" (one gamma for all heads), "reversed", "one_based";
    expo: "right" (gamma^(t-s)), "plus1" (gamma^(t-s+1): decayed after the write), "neg" (gamma^(s-t));
    causal=False: the future is not masked; diag=False: the mask hides the diagonal; normalize_d: D rows
    divided by the square root of their sums; reverse: time reversed; scale_as: "given", "none", "default";
    init: "right" (o_t += gamma^(t+1) q_t S_0), "ignored", "undecayed", "off_by_one" (gamma^t);
    state: "right", "undecayed", "off_by_one" (gamma^(T-s)), "misses_last", "is_init", "transposed", "none".
    """

    def run(q, k, v, scale=None, initial_state=None):
        B, T, H, K = q.shape
        s = _scale_as(scale_as, scale, K)
        g = _gammas_as(gamma, H, q.device)[:, None, None]  # [H, 1, 1]
        qf, kf, vf = q.float(), k.float(), v.float()
        if reverse:
            qf, kf, vf = qf.flip(1), kf.flip(1), vf.flip(1)
        t = torch.arange(T, device=q.device, dtype=torch.float32)
        dist = t[:, None] - t[None, :]  # t - s
        expo_of = {"right": dist, "plus1": dist + 1, "neg": -dist}[expo]
        D = g ** expo_of  # [H, T, T]
        if causal:
            D = D * ((dist >= 0) if diag else (dist > 0))
        if normalize_d:
            D = D / D.sum(-1, keepdim=True).sqrt()
        A = torch.einsum("bthk,bshk->bhts", qf * s, kf) * D
        o = torch.einsum("bhts,bshv->bthv", A, vf)
        S0 = None if init == "ignored" or initial_state is None else initial_state.float()
        plus = 1.0 if expo == "plus1" else 0.0
        if S0 is not None:
            p = {"right": t + 1, "undecayed": 0 * t, "off_by_one": t, "ignored": t}[init] + plus  # [T]
            o = o + s * torch.einsum("bthk,bhkv->bthv", qf, S0) * (g[:, 0, 0] ** p[:, None])[None, :, :, None]
        e = {"undecayed": 0 * t, "off_by_one": T - t}.get(state, T - 1 - t) + plus  # [T]
        w = g[:, 0, 0] ** e[:, None]  # [T, H]
        S = torch.einsum("bthk,bthv,th->bhkv", kf, vf, w)
        if S0 is not None:
            n = {"undecayed": 0.0, "off_by_one": T - 1.0}.get(init, T + plus)
            S = S + (g ** (0.0 if state == "undecayed" else n)) * S0
        if reverse:
            o = o.flip(1)
        last = torch.einsum("bhk,bhv->bhkv", kf[:, -1], vf[:, -1]) * (g ** plus)
        S = {"misses_last": S - last, "is_init": S if S0 is None else S0, "transposed": S.transpose(-1, -2),
             "none": None}.get(state, S)
        return o.to(q.dtype), S

    return run


def as_form(form: str, fn: Core, name: str) -> Callable[..., Any]:
    """fn with the signature of a form: "parallel" (5.1a: o only), "recurrent" (5.1b), "chunk" (5.1c)."""
    if form == "parallel":
        def wrong(q, k, v, scale=None):
            return fn(q, k, v, scale, None)[0]
    elif form == "recurrent":
        def wrong(q, k, v, scale=None, initial_state=None):
            return fn(q, k, v, scale, initial_state)
    elif form == "chunk":
        def wrong(q, k, v, chunk_size=DEFAULT_CHUNK, scale=None, initial_state=None):
            return fn(q, k, v, scale, initial_state)
    else:
        raise ValueError(form)
    wrong.__name__ = name
    return wrong


def formula_mistakes(form: str) -> tuple[Mistake, ...]:
    """The mistakes in the formula, shared by the three forms (the state ones where there is a state)."""
    m = lambda name, hint, **kw: Mistake(name, as_form(form, core(**kw), name), hint)  # noqa: E731
    out = (
        m("no decay", NO_DECAY, gamma="one"),
        m("one gamma for all heads", SAME_GAMMA, gamma="head0"),
        m("gammas reversed over heads", GAMMA_REVERSED, gamma="reversed"),
        m("gamma from a 1-based head index", GAMMA_ONE_BASED, gamma="one_based"),
        m("decay exponent t-s+1", EXPONENT_PLUS1, expo="plus1"),
        m("decay exponent s-t", EXPONENT_NEG, expo="neg"),
        m("mask hides the diagonal", STRICT if form == "parallel" else EXCLUSIVE, diag=False),
        m("no scale", NO_SCALE, scale_as="none"),
        m("ignores the scale argument", IGNORES_SCALE, scale_as="default"),
    )
    if form == "parallel":
        return out + (
            m("future not masked", NON_CAUSAL, causal=False),
            m("D normalised", D_NORMALIZED, normalize_d=True),
            m("reversed time", REVERSED, reverse=True),
        )
    return out + (
        m("ignores initial_state", IGNORES_INIT, init="ignored"),
        m("initial state undecayed", INIT_UNDECAYED, init="undecayed"),
        m("initial state decayed gamma^t", INIT_OFF_BY_ONE, init="off_by_one"),
        m("final_state undecayed", STATE_UNDECAYED, state="undecayed"),
        m("final_state decayed once too often", STATE_OFF_BY_ONE, state="off_by_one"),
        m("final_state misses the last token", STATE_MISSES_LAST, state="misses_last"),
        m("final_state is initial_state", STATE_IS_INIT, state="is_init"),
        Mistake("final_state None", as_form(form, core(state="none"), "no_state"), says=("final_state is None",)),
        Mistake("state transposed [B,H,V,K]", as_form(form, core(state="transposed"), "transposed"),
                says=("looks transposed",)),
    )


def _probe(T: int, device: torch.device, **kwargs: Any) -> tuple[tuple, dict]:
    """Inputs of length T with tiny other dims (B = H = 1, K = V = 4): a T×T tensor dominates any linear one."""
    gen = torch.Generator().manual_seed(0)
    return tuple(randn(gen, 1, T, 1, 4).to(device) for _ in range(3)), kwargs


def _parallel_as(form: str) -> Callable[..., Any]:
    return as_form(form, core(), "parallel_form")


def _via_refs(q, k, v, scale=None, initial_state=None):
    from course_utils.refs.retention import retention

    return retention(q, k, v, scale=scale, initial_state=initial_state)


# ------------------------------------------------------------------------------------------ 5.1b recurrent

RECURRENT = Exercise(
    id="5.1b",
    fn_name="retention_recurrent",
    signature="retention_recurrent(q, k, v, scale=None, initial_state=None) -> (o, final_state)",
    cases=lambda device, dtypes: case_list({"K": K_DIM, "V": V_DIM}, [
        {"B": 1, "T": 63, "H": 3},
        {"B": 2, "T": 100, "H": 4, "initial_state": True},
        {"B": 2, "T": 63, "H": 3, "scale": 0.3, "initial_state": True},
        {"B": 2, "T": 100, "H": 2, "initial_state": True, "noncontiguous": True},
        {"B": 1, "T": 63, "H": 3, "initial_state": True, "grad": True},
    ], 501, dtypes, half={"B": 2, "T": 100, "H": 3, "initial_state": True}),
    make_inputs=make_qkv,
    expected=_reference("recurrent"),
    output=output_node,
    positional=("q", "k", "v"),
    input_layouts=LAYOUTS,
    grad_inputs=("q", "k", "v", "initial_state"),
    mistakes=formula_mistakes("recurrent") + (
        Mistake("the T×T parallel form (Exercise 5.1a)", _parallel_as("recurrent"), says=("memory check",)),
        Mistake("calls the course's reference", as_form("recurrent", _via_refs, "via_refs"),
                says=("how check", "course_utils.refs")),
    ),
    extra_checks=(forbid(), no_quadratic_memory(_probe, small=128, large=512,
                                                what="a T×T matrix (the parallel form with its D mask)")),
    nan_hint="overflow? gamma^(t-s) is > 1 for s > t: mask the future before (or instead of) raising gamma to it",
)
"""The recurrent form: the family's base spec; the other forms are variations of it."""
register(RECURRENT)


# ------------------------------------------------------------------------------------------ 5.1a parallel

register(dataclasses.replace(
    RECURRENT,
    id="5.1a",
    fn_name="retention_parallel",
    signature="retention_parallel(q, k, v, scale=None) -> o [B, T, H, V]",
    cases=lambda device, dtypes: case_list({"K": K_DIM, "V": V_DIM}, [
        {"B": 1, "T": 63, "H": 3},
        {"B": 2, "T": 100, "H": 4, "scale": 0.3},
        {"B": 2, "T": 63, "H": 2, "noncontiguous": True},
        {"B": 1, "T": 63, "H": 3, "grad": True},
    ], 511, dtypes, half={"B": 2, "T": 100, "H": 3}),
    expected=lambda inputs, case: _reference("auto")(inputs, case)[0],
    output=TensorOut("o", VO_LAYOUT),
    grad_inputs=("q", "k", "v"),
    extra_checks=(forbid(),),
    mistakes=formula_mistakes("parallel") + (
        Mistake("calls the course's reference", as_form("parallel", lambda q, k, v, s, i: _via_refs(q, k, v, s),
                                                        "via_refs"), says=("how check",)),
    ),
))


# ------------------------------------------------------------------------------------------ 5.1c chunkwise

RAGGED = ("the last, partial chunk is mishandled: T={T} is not a multiple of chunk_size={C}, so the last chunk "
          "has {r} tokens — its masks, its decays (gamma^L with L its length) and its slices come from the chunk "
          "itself")


def _ragged(case: Case) -> str | None:
    T, C = case["T"], case.get("chunk_size", DEFAULT_CHUNK)
    return RAGGED.format(T=T, C=C, r=T % C) if T % C else None


def chunk_wrong(name: str, *, xi: bool = True, passing: bool = True, zeta: bool = True, tail_decay: str = "len",
                intra_decay: bool = True, inter: str = "prev", fixed_mask: bool = False, state: str = "right"
                ) -> Callable[..., Any]:
    """retention_chunkwise(q, k, v, chunk_size=16, scale=None, initial_state=None), chunk by chunk (RetNet
    Eq. 7), with at most the mistakes asked for. xi=False: the inter-chunk term is not decayed by
    gamma^(i+1); passing=False: the state handed on is not decayed by gamma^L; zeta=False: the chunk's keys
    enter the state undecayed; tail_decay="C": a ragged last chunk decays the state by gamma^C;
    intra_decay=False: a plain causal mask inside the chunk; inter="incl": the inter-chunk term reads the
    updated state; fixed_mask: masks built from chunk_size (fail on a ragged chunk); state: "right",
    "misses_last" (the last chunk not added)."""

    def wrong(q, k, v, chunk_size=DEFAULT_CHUNK, scale=None, initial_state=None):
        B, T, H, K = q.shape
        C, s = chunk_size, resolve_scale(scale, K)
        g = gammas(H, q.device)  # [H]
        qf, kf, vf = q.float() * s, k.float(), v.float()
        S = torch.zeros(B, H, K, v.shape[-1], device=q.device) if initial_state is None else initial_state.float()
        outs, S_before = [], S
        for start in range(0, T, C):
            qc, kc, vc = qf[:, start:start + C], kf[:, start:start + C], vf[:, start:start + C]
            L = C if fixed_mask else qc.shape[1]
            i = torch.arange(L, device=q.device, dtype=torch.float32)
            d = i[:, None] - i[None, :]
            D = (g[:, None, None] ** d if intra_decay else torch.ones_like(d)) * (d >= 0)  # [H, L, L]
            A = torch.einsum("bthk,bshk->bhts", qc, kc) * D
            Lc = qc.shape[1]
            decay_L = g ** (Lc if tail_decay == "len" else C)  # [H]
            write = (g[None, :] ** (Lc - 1 - i[:Lc, None])) if zeta else torch.ones(Lc, H, device=q.device)
            S_next = (decay_L[:, None, None] * S if passing else S) + torch.einsum("bthk,bthv,th->bhkv", kc, vc, write)
            read = S_next if inter == "incl" else S
            inter_o = torch.einsum("bthk,bhkv->bthv", qc, read)
            if xi:
                inter_o = inter_o * (g[None, :] ** (i[:Lc, None] + 1))[None, :, :, None]
            outs.append(torch.einsum("bhts,bshv->bthv", A, vc) + inter_o)
            S_before, S = S, S_next
        return torch.cat(outs, dim=1).to(q.dtype), {"right": S, "misses_last": S_before}[state]

    wrong.__name__ = name
    return wrong


def _chunk_diagnose(f: Failure) -> str | None:
    """Failures explained by chunk boundaries: a ragged tail, or an error starting at the second chunk."""
    T, C = f.case["T"], f.case.get("chunk_size", DEFAULT_CHUNK)
    if f.kind in ("value", "grad") and (f.info.get("layout") or "").startswith("BT"):
        t_wrong = f.info["wrong"].any(dim=(0, 2, 3)).nonzero().flatten().tolist()
        if t_wrong and T % C and t_wrong[0] >= (T // C) * C:
            return _ragged(f.case)
        if t_wrong and C > 1 and t_wrong[0] == C:
            return (f"chunk 0 (t < {C}) is right and the error starts at the second chunk (t={C}): check what "
                    "crosses chunks — the state read with its decay gamma^(i+1), and the state handed on, "
                    "gamma^L S + K^T (V decayed by gamma^(L-1-i))")
    return None


def _probe_chunks(T: int, device: torch.device) -> tuple[tuple, dict]:
    return _probe(T, device, chunk_size=16)


def chunk_mistakes() -> tuple[Mistake, ...]:
    return formula_mistakes("chunk") + (
        Mistake("inter-chunk term not decayed", chunk_wrong("no_xi", xi=False),
                "the inter-chunk term is not decayed: token i of a chunk reads the state of the previous chunks "
                "decayed by gamma^(i+1) (RetNet Eq. 7, xi)"),
        Mistake("state passed on undecayed", chunk_wrong("no_passing_decay", passing=False),
                "the state handed to the next chunk is not decayed: S <- gamma^L S + K^T (V * zeta), L the "
                "chunk's length"),
        Mistake("chunk's keys enter the state undecayed", chunk_wrong("no_zeta", zeta=False),
                "the chunk's own tokens enter the state undecayed: token i of a chunk of length L is decayed "
                "gamma^(L-1-i) by the chunk's end (RetNet Eq. 7, zeta)"),
        Mistake("intra-chunk mask without decay", chunk_wrong("plain_mask", intra_decay=False),
                "the intra-chunk mask has no decay: inside the chunk it is D[i, j] = gamma^(i-j) for j <= i"),
        Mistake("inter-chunk term reads the updated state", chunk_wrong("inclusive_inter", inter="incl"),
                "the inter-chunk term reads the state *after* adding this chunk (counted twice): use the state "
                "of the previous chunks, then update it"),
        Mistake("ragged last chunk decayed by gamma^C", chunk_wrong("tail_gamma_C", tail_decay="C"), _ragged,
                says=("last, partial chunk",)),
        Mistake("final_state misses the last chunk", chunk_wrong("misses_last_chunk", state="misses_last"),
                "final_state misses the last chunk: update S after every chunk, the last one too"),
        Mistake("mask built from chunk_size", chunk_wrong("fixed_mask", fixed_mask=True),
                says=("RuntimeError", "last, partial chunk")),
        Mistake("ignores chunk_size (the T×T parallel form)", _parallel_as("chunk"), says=("memory check",)),
    )


register(dataclasses.replace(
    RECURRENT,
    id="5.1c",
    fn_name="retention_chunkwise",
    signature="retention_chunkwise(q, k, v, chunk_size=16, scale=None, initial_state=None) -> (o, final_state)",
    cases=lambda device, dtypes: case_list({"K": K_DIM, "V": V_DIM}, [
        {"B": 1, "T": 64, "H": 3},  # whole chunks first: ragged bugs show apart
        {"B": 1, "T": 63, "H": 3},
        {"B": 2, "T": 100, "H": 4, "chunk_size": 7, "initial_state": True},
        {"B": 2, "T": 63, "H": 2, "chunk_size": 1, "initial_state": True},
        {"B": 2, "T": 100, "H": 3, "chunk_size": 64, "scale": 0.3, "initial_state": True, "noncontiguous": True},
        {"B": 1, "T": 63, "H": 3, "chunk_size": 16, "initial_state": True, "grad": True},
    ], 521, dtypes, half={"B": 2, "T": 100, "H": 3, "chunk_size": 16, "initial_state": True}),
    expected=_reference("chunk"),
    diagnose=_chunk_diagnose,
    exception_hint=_ragged,
    extra_checks=(forbid(), no_quadratic_memory(_probe_chunks, small=128, large=512,
                                                what="a T×T matrix: chunk_size is ignored")),
    mistakes=chunk_mistakes() + (
        Mistake("calls the course's reference", as_form("chunk", _via_refs, "via_refs"), says=("how check",)),
    ),
))
