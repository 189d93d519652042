"""Family: the delta rule — a state that is corrected towards each new value instead of only added to
(DeltaNet: Schlag et al. 2021, §4.2; Yang et al. 2024, arXiv 2406.06484), and its gated form (Gated DeltaNet).
In the course's state layout [K, V] per head, with an inclusive state:

    S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T
    o_t = scale * S_t^T q_t
    gated: S_{t-1} is first decayed, S_{t-1} <- exp(g_t) S_{t-1}

Exercises 5.2 (the recurrence), 5.3 (the chunkwise form with the WY / UT representation), 5.4 (the gated
delta rule, recurrent). Keys arrive L2-normalised, beta in (0, 1), g <= 0 (log space, float32). Expected
values come from course_utils.refs.delta_rule: fla's naive recurrence / chunkwise reference on a CPU, its
fused recurrent and chunk kernels on a GPU (chunk_delta_rule refuses float32: refs runs the fused recurrent
kernel for fp32 and the chunk kernel for bf16/fp16).

Every mistake is an implementation that makes it, with the exercise's signature: `loop` runs the recurrence
token by token with one thing wrong, `chunk_wrong` the chunkwise form. Beside the values, the graders check
*how*: no library doing the work, no T×T intermediate in the recurrent and chunkwise forms, and (5.3) a state
read and written once per chunk, not once per token (`state_touches`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from course_utils.conventions import GATE_LAYOUT, QK_LAYOUT, STATE_LAYOUT, VO_LAYOUT, default_scale, resolve_scale
from course_utils.exercises.cases import bthd, case_list, generator, randn
from course_utils.grading import Case, Exercise, Failure, Mistake, TensorOut, Trial, TupleOut, fail, register
from course_utils.grading.how import forbid, no_quadratic_memory

K_DIM, V_DIM = 16, 32  # K != V so that a transposed state shows in its shape
LAYOUTS = {"q": QK_LAYOUT, "k": QK_LAYOUT, "v": VO_LAYOUT, "beta": GATE_LAYOUT, "g": GATE_LAYOUT,
           "initial_state": STATE_LAYOUT}
DEFAULT_CHUNK = 16
PAPER = "Yang et al. 2024, arXiv 2406.06484"

ADDITIVE = ("nothing is erased: this is linear attention (S += beta k v^T). The delta rule first removes what "
            "the key already retrieves: S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T")
WRITE_NO_BETA = ("the new value is written at full strength: beta_t scales the whole correction, "
                 "beta_t k_t (v_t - S_{t-1}^T k_t)^T, the write k_t v_t^T as well as the erase")
ERASE_NO_BETA = ("the old value is erased at full strength: (I - beta_t k_t k_t^T) S_{t-1} — beta_t scales the "
                 "erase too")
READ_WITH_Q = ("the old value is read with the query: v_old = S_{t-1}^T k_t uses the *key* being written "
               "(q_t only reads the output)")
SIGN = ("the correction points the wrong way: it is v_t - S_{t-1}^T k_t (new minus old), a step *down* the "
        "loss 1/2 ||S^T k_t - v_t||^2")
NO_SCALE = "missing scale? o_t = scale * S_t^T q_t with scale = K**-0.5 when scale=None"
IGNORES_SCALE = "ignores the scale argument: use it when given, K**-0.5 only when scale is None"
EXCLUSIVE = ("state read before the update: the state is inclusive, o_t = scale S_t^T q_t with S_t already "
             "corrected by token t")
IGNORES_INIT = "ignores initial_state? start the recurrence from S_0 = initial_state (zeros only when None)"
STATE_MISSES_LAST = "final_state misses the last token: return S after the update with k_{T-1}, v_{T-1}"
STATE_IS_INIT = "final_state equals initial_state: the state is never updated, or you return the wrong variable"
NO_GATE = ("no decay: the gated delta rule first decays the state, S_{t-1} <- exp(g_t) S_{t-1}, then applies "
           "the delta rule to it")
GATE_AFTER = ("the decay is applied after the update, so it shrinks the new write too: decay S_{t-1} first, "
              "S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T")
GATE_UNDECAYED_READ = ("the old value is read from the undecayed state: v_old = (exp(g_t) S_{t-1})^T k_t — "
                       "what the decayed state retrieves is what gets replaced")
GATE_RAW = "g is a log-decay: the state is multiplied by exp(g_t) (in (0, 1]), not by g_t itself"


# ------------------------------------------------------------------------------------------ inputs


def make_inputs(case: Case, device: torch.device) -> dict[str, Any]:
    """q, k (L2-normalised), v [B, T, H, D], beta = sigmoid(...) [B, T, H] in the case's dtype, and for the
    gated rule g = logsigmoid(... + 3) [B, T, H] in float32 (decays between about 0.7 and 1)."""
    gen = generator(case)
    K, V = case.get("K", K_DIM), case.get("V", V_DIM)
    q, k, v = bthd(gen, case, K, device), bthd(gen, case, K, device), bthd(gen, case, V, device)
    k = F.normalize(k.float(), dim=-1).to(case.dtype)
    B, T, H = case["B"], case["T"], case["H"]
    beta = torch.sigmoid(randn(gen, B, T, H)).to(device, case.dtype)
    inputs: dict[str, Any] = {"q": q, "k": k, "v": v}
    if case.get("gated"):
        inputs["g"] = F.logsigmoid(randn(gen, B, T, H) + 3.0).to(device)
    inputs["beta"] = beta
    for name in ("chunk_size", "scale"):
        if name in case.params:
            inputs[name] = case[name]
    if case.get("initial_state"):
        inputs["initial_state"] = (0.5 * randn(gen, B, H, K, V)).to(device, case.dtype)
    return inputs


def _reference(mode: str) -> Callable[[dict[str, Any], Case], Any]:
    def reference(inputs: dict[str, Any], case: Case) -> tuple[torch.Tensor, torch.Tensor]:
        from course_utils.refs.delta_rule import delta_rule, gated_delta_rule

        q, k, v, beta = inputs["q"], inputs["k"], inputs["v"], inputs["beta"]
        kw = {"scale": inputs.get("scale"), "initial_state": inputs.get("initial_state"), "mode": mode}
        if "g" in inputs:
            return gated_delta_rule(q, k, v, inputs["g"], beta, **kw)
        return delta_rule(q, k, v, beta, **kw)

    return reference


def output_node(case: Case) -> TupleOut:
    return TupleOut("(o, final_state)", (TensorOut("o", VO_LAYOUT), TensorOut("final_state", STATE_LAYOUT, state=True)))


# ------------------------------------------------------------------------------------------ mistakes


def _scale_as(how: str, scale: float | None, head_dim: int) -> float:
    return {"given": resolve_scale(scale, head_dim), "none": 1.0, "default": default_scale(head_dim)}[how]


Loop = Callable[..., tuple[torch.Tensor, Any]]


def loop(*, erase: str = "right", write_beta: bool = True, sign: float = 1.0, exclusive: bool = False,
         scale_as: str = "given", ignore_init: bool = False, gate: str = "right", state: str = "right") -> Loop:
    """The (gated) delta rule (q, k, v, beta, g, scale, initial_state) -> (o, final_state) token by token in
    float32, with at most the mistakes asked for.

    erase: "right" (v_old = S^T k_t), "none" (additive: linear attention), "full" (the erase without beta),
    "query" (v_old = S^T q_t); write_beta=False: k_t v_t^T written without beta; sign=-1: the correction
    reversed; exclusive: o_t reads S_{t-1}; scale_as: "given", "none", "default"; ignore_init;
    gate (g given): "right", "none", "after" (decay after the update), "undecayed_read", "raw" (S * g);
    state: "right", "misses_last", "is_init", "transposed", "none".
    """

    def run(q, k, v, beta, g=None, scale=None, initial_state=None):
        B, T, H, K = q.shape
        s = _scale_as(scale_as, scale, K)
        qf, kf, vf, bf = q.float(), k.float(), v.float(), beta.float()
        S = torch.zeros(B, H, K, v.shape[-1], device=q.device)
        if initial_state is not None and not ignore_init:
            S = initial_state.float()
        S_in, S_before, outs = S, S, []
        for t in range(T):  # broadcast-and-sum rather than einsum: much cheaper per call on a CPU
            k_t, v_t, b_t = kf[:, t], vf[:, t], bf[:, t, :, None]  # [B, H, K], [B, H, V], [B, H, 1]
            S_prev = S
            if g is not None and gate in ("right", "undecayed_read", "raw"):
                a = g[:, t, :, None, None].float()
                S = (a if gate == "raw" else a.exp()) * S
            read = S_prev if gate == "undecayed_read" else S
            if erase == "none":
                v_old = torch.zeros_like(v_t)
            else:
                v_old = (read * (qf[:, t] if erase == "query" else k_t)[..., None]).sum(-2)
            erase_rate = 1.0 if erase == "full" else b_t
            write_rate = b_t if write_beta else 1.0
            S = S + sign * (k_t[..., None] * (write_rate * v_t - erase_rate * v_old)[..., None, :])
            if g is not None and gate == "after":
                S = g[:, t, :, None, None].float().exp() * S
            outs.append(s * (qf[:, t, :, :, None] * (S_prev if exclusive else S)).sum(-2))
            S_before = S_prev
        o = torch.stack(outs, dim=1).to(q.dtype)
        S = {"misses_last": S_before, "is_init": S if initial_state is None else S_in,
             "transposed": S.transpose(-1, -2), "none": None}.get(state, S)
        return o, S

    return run


def as_form(form: str, fn: Loop, name: str) -> Callable[..., Any]:
    """fn with the signature of an exercise: "recurrent" (5.2), "chunk" (5.3), "gated" (5.4)."""
    if form == "recurrent":
        def wrong(q, k, v, beta, scale=None, initial_state=None):
            return fn(q, k, v, beta, None, scale, initial_state)
    elif form == "chunk":
        def wrong(q, k, v, beta, chunk_size=DEFAULT_CHUNK, scale=None, initial_state=None):
            return fn(q, k, v, beta, None, scale, initial_state)
    elif form == "gated":
        def wrong(q, k, v, g, beta, scale=None, initial_state=None):
            return fn(q, k, v, beta, g, scale, initial_state)
    else:
        raise ValueError(form)
    wrong.__name__ = name
    return wrong


def formula_mistakes(form: str) -> tuple[Mistake, ...]:
    """The mistakes in the delta rule itself, shared by its three exercises."""
    m = lambda name, hint, **kw: Mistake(name, as_form(form, loop(**kw), name), hint)  # noqa: E731
    return (
        m("nothing erased (linear attention)", ADDITIVE, erase="none"),
        m("write without beta", WRITE_NO_BETA, write_beta=False),
        m("erase without beta", ERASE_NO_BETA, erase="full"),
        m("old value read with q", READ_WITH_Q, erase="query"),
        m("correction reversed", SIGN, sign=-1.0),
        m("reads the state before the update", EXCLUSIVE, exclusive=True),
        m("no scale", NO_SCALE, scale_as="none"),
        m("ignores the scale argument", IGNORES_SCALE, scale_as="default"),
        m("ignores initial_state", IGNORES_INIT, ignore_init=True),
        m("final_state misses the last token", STATE_MISSES_LAST, state="misses_last"),
        m("final_state is initial_state", STATE_IS_INIT, state="is_init"),
        Mistake("final_state None", as_form(form, loop(state="none"), "no_state"), says=("final_state is None",)),
        Mistake("state in the paper's layout [B,H,V,K]", as_form(form, loop(state="transposed"), "paper_layout"),
                says=("looks transposed",)),
    )


def _probe(T: int, device: torch.device, gated: bool = False, **kwargs: Any) -> tuple[tuple, dict]:
    """Inputs of length T with tiny other dims (B = H = 1, K = V = 4): a T×T tensor dominates any linear one."""
    gen = torch.Generator().manual_seed(0)
    q = randn(gen, 1, T, 1, 4).to(device)
    k = F.normalize(randn(gen, 1, T, 1, 4), dim=-1).to(device)
    v = randn(gen, 1, T, 1, 4).to(device)
    beta = torch.sigmoid(randn(gen, 1, T, 1)).to(device)
    if gated:
        return (q, k, v, F.logsigmoid(randn(gen, 1, T, 1) + 3.0).to(device), beta), kwargs
    return (q, k, v, beta), kwargs


# ------------------------------------------------------------------------------------------ the WY form


def ut_transform(k: torch.Tensor, beta: torch.Tensor, *, strict: bool = True, beta_left: bool = True,
                 beta_right: bool = True) -> torch.Tensor:
    """T = (I + tril(diag(beta) K K^T, -1))^-1 diag(beta) for keys [..., C, K] and beta [..., C] (Yang et al.
    2024, Eq. 10 in the course's layout), by a triangular solve; the flags make its mistakes (strict=False:
    the diagonal kept; beta_left / beta_right=False: a beta dropped)."""
    C = k.shape[-2]
    kk = k @ k.transpose(-1, -2)
    L = torch.tril((beta[..., :, None] if beta_left else 1.0) * kk, diagonal=-1 if strict else 0)
    eye = torch.eye(C, dtype=k.dtype, device=k.device)
    rhs = torch.diag_embed(beta) if beta_right else eye.expand_as(L)
    if strict:
        return torch.linalg.solve_triangular(eye + L, rhs, upper=False, unitriangular=True)
    return torch.linalg.solve_triangular(eye + L, rhs, upper=False)


def chunk_wrong(name: str, *, ut: str = "right", correction: bool = True, intra: str = "incl", inter: str = "prev",
                ragged: str = "ok", one_chunk: bool = False, state: str = "right") -> Callable[..., Any]:
    """chunk_delta_rule(q, k, v, beta, chunk_size=16, scale=None, initial_state=None): the WY / UT chunkwise
    form (pad, U = T V, W = T K per chunk, then chunk by chunk U - W S, O = Q S + (Q K^T * M)(U - W S),
    S += K^T (U - W S)), with at most the mistakes asked for. ut: "right", "diag" (the diagonal kept in
    tril), "no_beta_left", "no_beta_right"; correction=False: U used without - W S; intra: "incl", "strict",
    "none" (no mask); inter: "prev", "none", "incl" (reads the updated state); ragged: "ok", "drop" (the
    tail cut from o), "pad" (o at the padded length); one_chunk: chunk_size ignored (C = T, a T×T form);
    state: "right", "misses_last"."""
    flags = {"diag": {"strict": False}, "no_beta_left": {"beta_left": False},
             "no_beta_right": {"beta_right": False}}.get(ut, {})

    def wrong(q, k, v, beta, chunk_size=DEFAULT_CHUNK, scale=None, initial_state=None):
        B, T, H, K = q.shape
        V = v.shape[-1]
        C = T if one_chunk else chunk_size
        s = resolve_scale(scale, K)
        N = -(-T // C)
        pad = N * C - T
        qc, kc, vc = (F.pad(x.float(), (0, 0, 0, 0, 0, pad)).reshape(B, N, C, H, -1).transpose(2, 3)
                      for x in (q, k, v))  # [B, N, H, C, D]
        bc = F.pad(beta.float(), (0, 0, 0, pad)).reshape(B, N, C, H).transpose(2, 3)  # [B, N, H, C]
        Tm = ut_transform(kc, bc, **flags)
        W, U = Tm @ kc, Tm @ vc
        A = (s * qc) @ kc.transpose(-1, -2)
        if intra != "none":
            A = A * torch.ones(C, C, device=q.device).tril(-1 if intra == "strict" else 0)
        S = q.new_zeros(B, H, K, V, dtype=torch.float32) if initial_state is None else initial_state.float()
        outs, S_before = [], S
        for n in range(N):
            U_n = U[:, n] - W[:, n] @ S if correction else U[:, n]
            S_next = S + kc[:, n].transpose(-1, -2) @ U_n
            o_n = A[:, n] @ U_n
            if inter != "none":
                o_n = o_n + s * qc[:, n] @ (S_next if inter == "incl" else S)
            outs.append(o_n)
            S_before, S = S, S_next
        o = torch.stack(outs, 1).transpose(2, 3).reshape(B, N * C, H, V)
        o = {"ok": o[:, :T], "drop": o[:, :(T // C) * C], "pad": o}[ragged]
        return o.to(q.dtype), {"right": S, "misses_last": S_before}[state]

    wrong.__name__ = name
    return wrong


# ------------------------------------------------------------------------------------------ how: state touches


class _StateTouches(TorchFunctionMode):
    """Counts the torch calls inside the `with` block that take or return a tensor shaped like the state
    (its last two dims K×V, or V×K): each is a read or a write of the state."""

    def __init__(self, K: int, V: int):
        super().__init__()
        self.shapes = {(K, V), (V, K)}
        self.touches = 0

    def _is_state(self, x: Any) -> bool:
        if isinstance(x, torch.Tensor):
            return x.dim() >= 2 and tuple(x.shape[-2:]) in self.shapes
        if isinstance(x, (tuple, list)):
            return any(self._is_state(y) for y in x)
        return False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self._is_state(args) or self._is_state(list((kwargs or {}).values())) or self._is_state(out):
            self.touches += 1
        return out


_FEW, _MANY, _TOUCH_C, _TOUCH_K, _TOUCH_V = 3, 9, 32, 8, 12  # chunks in the two probes; their C, K, V


def state_touches(make_probe: Callable[[int, int, int, int, torch.device], tuple[tuple, dict]], what: str
                  ) -> Callable[[Trial, Callable[..., Any]], None]:
    """A check that a chunkwise form reads and writes its K×V state a number of times that grows with the
    number of chunks, not with the number of tokens: at least C/2 more touches per extra chunk of C tokens
    means a token-by-token recurrence inside the chunks. make_probe(T, C, K, V, device) -> (args, kwargs)."""

    def count(trial: Trial, fn: Callable[..., Any], n_chunks: int) -> int:
        T = n_chunks * _TOUCH_C - 5  # ragged, like the graded cases
        args, kwargs = make_probe(T, _TOUCH_C, _TOUCH_K, _TOUCH_V, trial.device)
        with torch.no_grad(), _StateTouches(_TOUCH_K, _TOUCH_V) as counter:
            trial.call(fn, args, kwargs, f"{trial.fn_name}(... T={T}, chunk_size={_TOUCH_C} ...)",
                       where=f"(loop check, T={T})")
        return counter.touches

    def check(trial: Trial, fn: Callable[..., Any]) -> None:
        few, many = count(trial, fn, _FEW), count(trial, fn, _MANY)
        per_chunk = (many - few) / (_MANY - _FEW)
        if per_chunk >= _TOUCH_C / 2:
            fail(f"loop check: your function reads or writes the K×V state {few} times for {_FEW} chunks and "
                 f"{many} times for {_MANY} chunks (chunk_size={_TOUCH_C}): about {per_chunk:.0f} times per "
                 f"chunk of {_TOUCH_C} tokens, i.e. token by token — {what}",
                 "the point of the WY / UT representation is that the state is touched once per chunk: "
                 "U - W S and Q S read it, S + K^T (U - W S) writes it; everything else inside a chunk is a "
                 "C×C or C×K product that never involves S")

    return check


def _touch_probe(T: int, C: int, K: int, V: int, device: torch.device) -> tuple[tuple, dict]:
    gen = torch.Generator().manual_seed(1)
    q = randn(gen, 1, T, 2, K).to(device)
    k = F.normalize(randn(gen, 1, T, 2, K), dim=-1).to(device)
    v = randn(gen, 1, T, 2, V).to(device)
    return (q, k, v, torch.sigmoid(randn(gen, 1, T, 2)).to(device)), {"chunk_size": C}


# ------------------------------------------------------------------------------------------ 5.2 recurrent


def _via_refs(q, k, v, beta, scale=None, initial_state=None):
    from course_utils.refs.delta_rule import delta_rule

    return delta_rule(q, k, v, beta, scale=scale, initial_state=initial_state)


def _detached_state(q, k, v, beta, scale=None, initial_state=None):
    """The recurrence with S.detach() at every step: right values, gradients only through the last token."""
    s = resolve_scale(scale, q.shape[-1])
    S = torch.zeros(q.shape[0], q.shape[2], q.shape[3], v.shape[-1]) if initial_state is None else initial_state
    outs = []
    for t in range(q.shape[1]):
        k_t, b_t = k[:, t].float(), beta[:, t, :, None].float()
        S = S.detach().float()
        S = S + k_t[..., None] * (b_t * (v[:, t].float() - (S * k_t[..., None]).sum(-2)))[..., None, :]
        outs.append(s * (q[:, t].float()[..., None] * S).sum(-2))
    return torch.stack(outs, 1).to(q.dtype), S


def _grad_diagnose(f: Failure) -> str | None:
    if f.kind != "grad" or f.info.get("layout") not in (QK_LAYOUT, VO_LAYOUT, GATE_LAYOUT):
        return None
    t_wrong = f.info["wrong"].any(dim=tuple(d for d in range(f.info["wrong"].dim()) if d != 1)).nonzero().flatten()
    if len(t_wrong) and t_wrong[-1] < f.info["wrong"].shape[1] - 1:
        return ("the gradient is right for the last tokens only: is the state detached (S.detach(), S.data, "
                "no_grad) inside the loop, so earlier tokens get no gradient through S?")
    return None


RECURRENT = Exercise(
    id="5.2",
    fn_name="delta_rule_recurrent",
    signature="delta_rule_recurrent(q, k, v, beta, scale=None, initial_state=None) -> (o, final_state)",
    cases=lambda device, dtypes: case_list({"K": K_DIM, "V": V_DIM}, [
        {"B": 1, "T": 63, "H": 2},
        {"B": 2, "T": 100, "H": 3, "initial_state": True},
        {"B": 2, "T": 63, "H": 3, "scale": 0.3, "initial_state": True},
        {"B": 2, "T": 100, "H": 2, "initial_state": True, "noncontiguous": True},
        {"B": 1, "T": 63, "H": 2, "initial_state": True, "grad": True},
    ], 601, dtypes, half={"B": 2, "T": 100, "H": 2, "initial_state": True}),
    make_inputs=make_inputs,
    expected=_reference("recurrent"),
    output=output_node,
    positional=("q", "k", "v", "beta"),
    input_layouts=LAYOUTS,
    grad_inputs=("q", "k", "v", "beta", "initial_state"),
    diagnose=_grad_diagnose,
    mistakes=formula_mistakes("recurrent") + (
        Mistake("the T×T fully parallel form", as_form("recurrent", lambda q, k, v, b, g, s, i: chunk_wrong(
            "parallel", one_chunk=True)(q, k, v, b, scale=s, initial_state=i), "parallel"), says=("memory check",)),
        Mistake("calls the course's reference", _via_refs, says=("how check", "course_utils.refs")),
        Mistake("state detached inside the loop", _detached_state, says=("detach",)),
    ),
    extra_checks=(forbid(), no_quadratic_memory(_probe, small=128, large=512,
                                                what="a T×T matrix (a parallel form, not the recurrence)")),
    nan_hint=("the state blew up? with ||k|| = 1 and beta in (0, 1) the delta rule is stable; a reversed "
              "correction or an unnormalised key makes it grow"),
)
"""The recurrence (5.2): the family's base spec; 5.3 and 5.4 are variations of it."""
register(RECURRENT)


# ------------------------------------------------------------------------------------------ 5.3 chunkwise (WY)

RAGGED = ("T={T} is not a multiple of chunk_size={C}: the last chunk has {r} tokens — pad q, k, v and beta with "
          "zeros up to a multiple of C (a zero key writes and erases nothing), then slice the output back to T")


def _ragged(case: Case) -> str | None:
    T, C = case["T"], case.get("chunk_size", DEFAULT_CHUNK)
    return RAGGED.format(T=T, C=C, r=T % C) if T % C else None


def _chunk_diagnose(f: Failure) -> str | None:
    T, C = f.case["T"], f.case.get("chunk_size", DEFAULT_CHUNK)
    if f.kind == "shape" and f.name == "o" and f.got.dim() == 4 and T % C:
        if f.got.shape[1] == (T // C) * C:
            return (_ragged(f.case) or "") + " (your output drops it)"
        if f.got.shape[1] == -(-T // C) * C:
            return f"you return the zero-padded length {f.got.shape[1]}: slice the output back to T={T}"
    if f.kind in ("value", "grad") and (f.info.get("layout") or "").startswith("BT"):
        t_wrong = f.info["wrong"].any(dim=(0, 2, 3)).nonzero().flatten().tolist()
        if t_wrong and C > 1 and t_wrong[0] == C:
            return (f"chunk 0 (t < {C}) is right and the error starts at the second chunk (t={C}): check what the "
                    "state of the previous chunks does — it corrects the pseudo-values (U - W S), it is read by "
                    "Q S, and it is updated by S + K^T (U - W S) after the chunk")
    return _grad_diagnose(f)


def _chunk_reference(inputs: dict[str, Any], case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    return _reference("chunk")(inputs, case)


def _touch_loop(q, k, v, beta, chunk_size=DEFAULT_CHUNK, scale=None, initial_state=None):
    """Chunks walked one token at a time: Exercise 5.2's recurrence inside a chunk loop."""
    outs, S = [], initial_state
    for start in range(0, q.shape[1], chunk_size):
        sl = slice(start, start + chunk_size)
        o, S = loop()(q[:, sl], k[:, sl], v[:, sl], beta[:, sl], None, scale, S)
        outs.append(o)
    return torch.cat(outs, 1), S


def _via_fla(q, k, v, beta, chunk_size=DEFAULT_CHUNK, scale=None, initial_state=None):
    from course_utils.refs._checks import import_fla

    naive = import_fla("fla.ops.delta_rule.naive")
    K = q.shape[-1]
    s = resolve_scale(scale, K)
    qh = (q.float() * (s * K**0.5)).transpose(1, 2)
    o, S = naive.delta_rule_recurrence(qh, k.float().transpose(1, 2), v.float().transpose(1, 2),
                                       beta.float().transpose(1, 2), initial_state=initial_state)
    return o.transpose(1, 2).to(q.dtype), S


register(dataclasses.replace(
    RECURRENT,
    id="5.3",
    fn_name="chunk_delta_rule",
    signature="chunk_delta_rule(q, k, v, beta, chunk_size=16, scale=None, initial_state=None) -> (o, final_state)",
    cases=lambda device, dtypes: case_list({"K": K_DIM, "V": V_DIM}, [
        {"B": 1, "T": 64, "H": 2},  # whole chunks first: ragged bugs show apart
        {"B": 1, "T": 63, "H": 2},
        {"B": 2, "T": 100, "H": 3, "chunk_size": 7, "initial_state": True},
        {"B": 2, "T": 63, "H": 2, "chunk_size": 1, "initial_state": True},
        {"B": 2, "T": 100, "H": 2, "chunk_size": 32, "scale": 0.3, "initial_state": True, "noncontiguous": True},
        {"B": 1, "T": 63, "H": 2, "chunk_size": 16, "initial_state": True, "grad": True},
    ], 631, dtypes,
        # fla's chunk_delta_rule (bf16) raises an illegal memory access on an H200 (fla 0.6.0, triton 3.6) for
        # head dim K = 16 and runs for K = 32 and 64: its half-precision case uses K = V = 64
        half={"B": 2, "T": 100, "H": 2, "K": 64, "V": 64, "chunk_size": 16, "initial_state": True}),
    expected=_chunk_reference,
    diagnose=_chunk_diagnose,
    exception_hint=_ragged,
    extra_checks=(
        forbid(),
        no_quadratic_memory(lambda T, device: _probe(T, device, chunk_size=16), small=128, large=512,
                            what="a T×T matrix: chunk_size is ignored (the fully parallel form)"),
        state_touches(_touch_probe, "Exercise 5.2's recurrence inside the chunks"),
    ),
    mistakes=formula_mistakes("chunk") + (
        Mistake("UT transform keeps the diagonal", chunk_wrong("ut_diag", ut="diag"),
                "the UT transform's matrix is strictly lower triangular: T = (I + tril(diag(beta) K K^T, -1))^-1 "
                "diag(beta) — token r is corrected by the tokens *before* it in the chunk"),
        Mistake("UT transform without beta on the keys", chunk_wrong("ut_no_beta_left", ut="no_beta_left"),
                "row r of the UT transform's matrix is beta_r k_r^T k_i: tril(diag(beta) K K^T, -1), each "
                "token's overlap with the earlier keys scaled by its own beta"),
        Mistake("UT transform without the final diag(beta)", chunk_wrong("ut_no_beta_right", ut="no_beta_right"),
                "T = (I + tril(diag(beta) K K^T, -1))^-1 diag(beta): the pseudo-values U = T V and W = T K carry "
                "beta (u_r = beta_r (v_r - ...)), so multiply by diag(beta) on the right"),
        Mistake("pseudo-values not corrected by the incoming state", chunk_wrong("no_correction", correction=False),
                "the pseudo-values ignore the state entering the chunk: what a chunk writes is U - W S "
                f"({PAPER}, Eq. 8-9), so that it replaces what S already retrieves for its keys"),
        Mistake("intra-chunk mask hides the diagonal", chunk_wrong("strict", intra="strict"),
                "the intra-chunk mask hides the diagonal: keep s <= t (tril(..., 0)); o_t reads S_t, which "
                "already holds token t's correction"),
        Mistake("intra-chunk mask missing", chunk_wrong("unmasked", intra="none"),
                "intra-chunk scores not masked: inside a chunk only s <= t may be read (tril of the C×C block)"),
        Mistake("inter-chunk term missing", chunk_wrong("no_inter", inter="none"),
                "missing the inter-chunk term: each chunk also reads scale * Q S, the state of all previous "
                "chunks"),
        Mistake("inter-chunk term reads the updated state", chunk_wrong("inclusive_inter", inter="incl"),
                "the inter-chunk term reads the state *after* this chunk's update: read S first, update it last"),
        Mistake("final_state misses the last chunk", chunk_wrong("misses_last_chunk", state="misses_last"),
                "final_state misses the last chunk: update S after every chunk, the last one too"),
        Mistake("ragged tail dropped from o", chunk_wrong("drops_tail", ragged="drop"), says=("your output drops it",)),
        Mistake("padded length returned", chunk_wrong("padded", ragged="pad"), says=("zero-padded length",)),
        Mistake("token by token inside the chunks (Exercise 5.2's loop)", _touch_loop, says=("loop check",)),
        Mistake("ignores chunk_size (the T×T fully parallel form)", chunk_wrong("one_chunk", one_chunk=True),
                says=("memory check",)),
        Mistake("calls fla's recurrence", _via_fla, says=("how check", "fla")),
    ),
))


# ------------------------------------------------------------------------------------------ 5.4 gated


def gated_mistakes() -> tuple[Mistake, ...]:
    m = lambda name, hint, **kw: Mistake(name, as_form("gated", loop(**kw), name), hint)  # noqa: E731
    return (
        m("no decay (the plain delta rule)", NO_GATE, gate="none"),
        m("decay after the update", GATE_AFTER, gate="after"),
        m("old value read from the undecayed state", GATE_UNDECAYED_READ, gate="undecayed_read"),
        m("state multiplied by g itself", GATE_RAW, gate="raw"),
    )


def _gated_via_refs(q, k, v, g, beta, scale=None, initial_state=None):
    from course_utils.refs.delta_rule import gated_delta_rule

    return gated_delta_rule(q, k, v, g, beta, scale=scale, initial_state=initial_state)


register(dataclasses.replace(
    RECURRENT,
    id="5.4",
    fn_name="gated_delta_rule_recurrent",
    signature="gated_delta_rule_recurrent(q, k, v, g, beta, scale=None, initial_state=None) -> (o, final_state)",
    cases=lambda device, dtypes: case_list({"K": K_DIM, "V": V_DIM, "gated": True}, [
        {"B": 1, "T": 63, "H": 2},
        {"B": 2, "T": 100, "H": 3, "initial_state": True},
        {"B": 2, "T": 63, "H": 3, "scale": 0.3, "initial_state": True},
        {"B": 2, "T": 100, "H": 2, "initial_state": True, "noncontiguous": True},
        {"B": 1, "T": 63, "H": 2, "initial_state": True, "grad": True},
    ], 641, dtypes, half={"B": 2, "T": 100, "H": 2, "initial_state": True}),
    positional=("q", "k", "v", "g", "beta"),
    grad_inputs=("q", "k", "v", "g", "beta", "initial_state"),
    extra_checks=(forbid(), no_quadratic_memory(lambda T, device: _probe(T, device, gated=True), small=128,
                                                large=512, what="a T×T matrix (a parallel form, not the recurrence)")),
    mistakes=gated_mistakes() + formula_mistakes("gated") + (
        Mistake("calls the course's reference", _gated_via_refs, says=("how check", "course_utils.refs")),
    ),
))
