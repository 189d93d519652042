"""Family: gated forms of linear attention — a decay on the state, S_t = decay_t * S_{t-1} + k_t v_t^T.

Lab 04, gated linear attention (GLA, Yang et al. 2024, §4), a per-key-channel gate α_t = exp(g_t):
    4.1  the recurrence                      gla_recurrent(q, k, v, g, scale, initial_state)
    4.2a the parallel form, naive            gla_parallel_naive(q, k, v, g, scale)    (cumulative products)
    4.2b the parallel form, in log space     gla_parallel(q, k, v, g, scale)
    4.3  the chunkwise form                  gla_chunkwise(q, k, v, g, chunk_size, scale, initial_state)
    4.4  the GLA layer                       gla_layer(x, params, num_heads, ...)   (fla's GatedLinearAttention)
Lab 05 adds the fixed-decay and scalar-gate forms (retention, simple GLA) in sections of their own below
the GLA ones; what every gated form shares comes first: seeded inputs with log-space gates, and the checks of
*how* a function computes (no library call doing the work, no T×T intermediate, no loop over time, a
chunk size that is used, sub-chunks in the chunkwise form).

Expected values come from course_utils.refs.gla (fla: `fused_recurrent_gla` / `chunk_gla` on a GPU,
`naive_recurrent_gla` on a CPU) and, for the layer, from fla's `GatedLinearAttention` itself (on a CPU,
where its Triton kernels cannot run, `fla_layer_reference` computes the same forward from the layer's own
modules with fla's naive GLA in place of its kernel). The state is inclusive (o_t reads S_t, which holds
k_t v_t^T), gates are log-space (g <= 0) and [B, T, H, K], states [B, H, K, V] (course_utils.conventions).

Every mistake is an implementation that makes it, with the exercise's signature: `core` runs the
recurrence token by token with the mistakes asked for, `parallel_wrong` the T×T form, `chunk_wrong` the
chunkwise form, `layer_wrong` the layer.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
import torch.nn.functional as F

from course_utils.conventions import QK_LAYOUT, STATE_LAYOUT, VO_LAYOUT, default_scale, resolve_scale
from course_utils.exercises.cases import bthd, case_list, generator, randn
from course_utils.grading import (
    Case,
    Exercise,
    Failure,
    Mistake,
    TensorOut,
    Trial,
    TupleOut,
    fail,
    register,
)
from course_utils.grading.how import TorchCalls, forbid, no_quadratic_memory

K_DIM, V_DIM = 16, 32  # K != V so that a transposed state shows in its shape
LAYOUTS = {"q": QK_LAYOUT, "k": QK_LAYOUT, "v": VO_LAYOUT, "g": QK_LAYOUT, "initial_state": STATE_LAYOUT}
PAPER = "GLA paper §4"


# ================================================================================================
# Shared by every gated form: inputs, gates, checks of how a function computes
# ================================================================================================

# ------------------------------------------------------------------------------------------ gates

GATES = {
    # name: (mean of the gate logits, temperature τ); g = logsigmoid(logits) / τ, so α = σ(logits)^(1/τ)
    "paper": (0.0, 16.0),  # the GLA paper's τ = 16: α ≈ 0.83 .. 0.997, slow forgetting
    "strong": (-6.0, 1.0),  # g ≈ -6 per step: cumulative log-gates pass -87 within 15 steps (fp32 underflow)
}


def log_gate(gen: torch.Generator, case: Case, device: torch.device) -> torch.Tensor:
    """A seeded GLA gate g [B, T, H, K] (log space, g <= 0), the paper's parametrisation:
    g = logsigmoid(z) / τ with z a per-channel bias plus noise. case["gate"]: "paper" (default),
    "strong", or "mixed" (half the channels paper, half strong)."""
    B, T, H = case["B"], case["T"], case["H"]
    kind = case.get("gate", "paper")
    z = randn(gen, B, T, H, K_DIM) + torch.linspace(-3.0, 3.0, K_DIM)  # channels differ, as b_α makes them

    def gate(name: str) -> torch.Tensor:
        mean, tau = GATES[name]
        return F.logsigmoid(z + mean) / tau

    if kind == "mixed":
        g = torch.cat([gate("paper")[..., : K_DIM // 2], gate("strong")[..., K_DIM // 2:]], dim=-1)
    else:
        g = gate(kind)
    g = g.to(device, case.dtype)
    if case.get("noncontiguous"):
        g = g.transpose(1, 2).contiguous().transpose(1, 2)  # a [B, H, T, K] buffer seen as [B, T, H, K]
    return g


def make_qkvg(case: Case, device: torch.device) -> dict[str, Any]:
    """q, k [B, T, H, K], v [B, T, H, V], g [B, T, H, K] and the optional arguments the case passes."""
    gen = generator(case)
    q, k = bthd(gen, case, K_DIM, device), bthd(gen, case, K_DIM, device)
    v = bthd(gen, case, V_DIM, device)
    inputs: dict[str, Any] = {"q": q, "k": k, "v": v, "g": log_gate(gen, case, device)}
    for name in ("chunk_size", "scale"):
        if name in case.params:
            inputs[name] = case[name]
    if case.get("initial_state"):
        inputs["initial_state"] = (0.5 * randn(gen, case["B"], case["H"], K_DIM, V_DIM)).to(device, case.dtype)
    return inputs


def output_node(case: Case) -> TupleOut:
    return TupleOut("(o, final_state)", (TensorOut("o", VO_LAYOUT),
                                         TensorOut("final_state", STATE_LAYOUT, state=True)))


def _probe(T: int, device: torch.device, chunk_size: int | None = None, D: int = 8
           ) -> tuple[tuple[torch.Tensor, ...], dict[str, Any]]:
    """Small inputs of length T for the checks of how (B = H = 1, K = V = D, paper gates)."""
    gen = torch.Generator().manual_seed(4000 + T)
    q, k, v = (torch.randn(1, T, 1, D, generator=gen).to(device) for _ in range(3))
    g = (F.logsigmoid(torch.randn(1, T, 1, D, generator=gen)) / 16).to(device)
    return (q, k, v, g), ({} if chunk_size is None else {"chunk_size": chunk_size})


# ------------------------------------------------------------------------------------------ how
# course_utils.grading.how checks library calls (forbid) and T² memory (no_quadratic_memory); the gated forms
# add three checks of their own: no loop over t (the parallel form), chunk_size used (the chunkwise form), and
# sub-chunks (secondary chunking: the elementwise exp work does not grow with chunk_size).

_EXP_FUNCTIONS = {"exp", "exp_", "exp2", "exp2_", "expm1", "pow", "__pow__", "__rpow__", "float_power"}


class ExpCalls(TorchCalls):
    """TorchCalls that also counts the elements going through exp: the elementwise (non-matmul) work of a
    log-space form."""

    def __init__(self) -> None:
        super().__init__()
        self.exp_elements = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = super().__torch_function__(func, types, args, kwargs)
        if getattr(func, "__name__", "") in _EXP_FUNCTIONS and isinstance(out, torch.Tensor):
            self.exp_elements += out.numel()
        return out


def _measure(trial: Trial, fn: Callable[..., Any], T: int, chunk_size: int | None, check: str) -> ExpCalls:
    args, kwargs = _probe(T, trial.device, chunk_size)
    shown = f"{trial.fn_name}(q, k, v, g" + (f", chunk_size={chunk_size})" if chunk_size else ")")
    with torch.no_grad(), ExpCalls() as calls:
        trial.call(fn, args, kwargs, shown, where=f"({check}, T={T})")
    return calls


NOT_TXT = ("this form keeps only what grows linearly with T: one state [B, H, K, V] carried from step to step "
           "(or chunk to chunk) and the outputs")


def _linear_memory(chunk_size: int | None = None) -> Callable[[Trial, Callable[..., Any]], None]:
    """how.no_quadratic_memory on the gated probes (T = 64 and 256: a T×T tensor dominates already)."""
    return no_quadratic_memory(lambda T, device: _probe(T, device, chunk_size), small=64, large=256,
                               what="a T×T matrix (the parallel form)", hint=NOT_TXT)


def no_time_loop(small: int = 32, large: int = 128) -> Callable[[Trial, Callable[..., Any]], None]:
    """A check that the number of torch calls does not grow with T (a parallel form has no loop over t)."""

    def check(trial: Trial, fn: Callable[..., Any]) -> None:
        a = _measure(trial, fn, small, None, "loop check").calls
        b = _measure(trial, fn, large, None, "loop check").calls
        if b - a >= (large - small) // 2:
            fail(f"loop check: your function makes {a} torch calls at T={small} and {b} at T={large}: it loops "
                 "over time steps, which is the recurrence of Exercise 4.1, not the parallel form",
                 "compute every (t, s) pair at once: [T, T] (or [T, T, K]) tensors, a causal mask and einsum, "
                 "with no Python loop over t")

    return check


def uses_chunk_size(small: int = 64, large: int = 256, chunk: int = 16
                    ) -> Callable[[Trial, Callable[..., Any]], None]:
    """A check that a chunkwise function does not go token by token whatever chunk_size is: its torch calls
    grow by at least one per token at chunk_size=`chunk` and do not change when chunk_size is 4× larger."""

    def check(trial: Trial, fn: Callable[..., Any]) -> None:
        a = _measure(trial, fn, small, chunk, "chunk check").calls
        b = _measure(trial, fn, large, chunk, "chunk check").calls
        c = _measure(trial, fn, large, 4 * chunk, "chunk check").calls
        if b - a >= large - small and abs(c - b) <= 0.1 * b:
            fail(f"chunk check: your function makes {b} torch calls at T={large} with chunk_size={chunk} and "
                 f"{c} with chunk_size={4 * chunk} ({a} at T={small}): it goes token by token and ignores "
                 "chunk_size — that is the recurrence of Exercise 4.1",
                 "work chunk by chunk: the parallel (masked) form inside a chunk of chunk_size tokens, the state "
                 f"passed between chunks ({PAPER}, the chunkwise form)")

    return check


def sub_chunked(T: int = 256, small: int = 16, large: int = 64
                ) -> Callable[[Trial, Callable[..., Any]], None]:
    """A check of secondary chunking: the elements that go through exp (the log-space, full-precision work)
    must not grow with chunk_size — only the sub-blocks on the diagonal (of a fixed sub-chunk size) need
    exp(G_t − G_s) per pair and channel; every other block of a chunk is a matmul."""

    def check(trial: Trial, fn: Callable[..., Any]) -> None:
        a = max(_measure(trial, fn, T, small, "sub-chunk check").exp_elements, 1)
        b = max(_measure(trial, fn, T, large, "sub-chunk check").exp_elements, 1)
        if b / a > 2.5:
            fail(f"sub-chunk check: {a:,} elements go through exp at chunk_size={small} and {b:,} at "
                 f"chunk_size={large} (T={T}, K=8): your intra-chunk part computes exp(G_t − G_s) for every "
                 "pair of a chunk and channel, work that grows like T·C·K",
                 "split each chunk into sub-chunks of a fixed size (16, say, whatever chunk_size is): only the "
                 "sub-blocks on the diagonal need the per-channel exp(G_t − G_s), in full precision; a block "
                 "where sub-chunk i reads an earlier sub-chunk j is a matmul of (q ⊙ exp(G_t − G_ref)) and "
                 f"(k ⊙ exp(G_ref − G_s)), with G_ref the log-gate where sub-chunk i starts ({PAPER}, "
                 "secondary-level chunking)")

    return check


# ------------------------------------------------------------------------------------------ how: diagnosis

GRAD_NAN = ("the forward pass is right but the gradient is not finite: an exp overflowed in entries the mask "
            "then threw away (torch.where(mask, exp(D), 0), exp(D) * mask): backward multiplies their zero "
            "gradient by exp(D) = inf and gets NaN. Mask the exponent before exp — "
            "D.masked_fill(~mask, float('-inf')).exp() — so the discarded entries are exp(-inf) = 0")


def _cumulative_hint(f: Failure) -> str:
    g = f.inputs.get("g")
    lowest = g.float().cumsum(1).min().item() if isinstance(g, torch.Tensor) else float("-inf")
    if lowest > -80:  # exp(±G) cannot leave float32's range with these gates: something else produced it
        return (f"the cumulative log-gate only reaches G = {lowest:.1f} in this case, so exp(G_t) and exp(−G_t) "
                "stay far from float32's limits: is B the cumulative product of the gates α = exp(g) "
                "(exp(g).cumprod(1)), not of g itself? (a product of log-gates, small negative numbers, "
                "underflows within a few dozen steps) Or is a mask applied by multiplying after an overflow "
                "(0 · inf = NaN)?")
    return (f"exp of a cumulative log-gate over- or underflows: G_t = g_1 + ... + g_t only decreases, down to "
            f"{lowest:.0f} in this case, and in float32 exp(G_t) is 0 below about −103 and exp(−G_t) is inf "
            "above about 88, and 0 · inf = NaN. Never exponentiate G_t or −G_s alone: exponentiate the "
            f"difference G_t − G_s, which is <= 0 for every s <= t ({PAPER}, the log-space parallel form)")


def _gated_diagnose(f: Failure) -> str | None:
    """Non-finite values: in a gradient only (a mask applied after exp), or from cumulative products."""
    if f.kind == "nan":
        return GRAD_NAN if f.name.startswith("gradient") else _cumulative_hint(f)
    return None


# ================================================================================================
# GLA, Lab 04
# ================================================================================================

# ------------------------------------------------------------------------------------------ hints

NO_SCALE = "missing scale? o_t = scale * q_t^T S_t with scale = K**-0.5 when scale=None"
IGNORES_SCALE = "ignores the scale argument: use it when given, K**-0.5 only when scale is None"
EXCLUSIVE = ("state updated after reading the output? The state is inclusive: S_t = diag(α_t) S_{t-1} + "
             "k_t v_t^T first, then o_t = scale q_t^T S_t, so a token attends to itself")
GATE_AFTER = ("the gate also decays the new token: S_t = diag(α_t) S_{t-1} + k_t v_t^T decays only the old "
              "state, k_t v_t^T enters undecayed")
GATE_LOG = "g is the log of the gate: the decay is α_t = exp(g_t) (g <= 0, so 0 < α_t <= 1), not g_t itself"
GATE_NEG = "the decay is α_t = exp(g_t) <= 1 (g <= 0); exp(−g_t) > 1 makes the state grow"
GATE_PREV = ("the gate is one step late: S_t = diag(α_t) S_{t-1} + k_t v_t^T uses α_t, the gate of token t "
             "itself, not α_{t−1}")
GATE_SCALAR = ("one decay per head? α_t is per key channel: diag(α_t) multiplies row i of S (key channel i) by "
               "α_t[i], a different rate for every channel")
GATE_NONE = "no decay: multiply the state by diag(α_t) = diag(exp(g_t)) at every step before adding k_t v_t^T"
REVERSED = "reversed time: o_t may only read tokens s <= t; the recurrence runs forward, t = 0 .. T-1"
IGNORES_INIT = "ignores initial_state? start from S = initial_state (zeros only when None)"
INIT_UNDECAYED = ("initial_state is never decayed: it is the state before token 0, so every step multiplies it "
                  "by diag(α_t) like the rest of the state")
STATE_MISSES_LAST = "final_state misses the last token: return S after the update with k_{T-1} v_{T-1}^T"
STATE_IS_INIT = "final_state equals initial_state: the state is never updated, or you return the wrong variable"

# the same mistakes, in the words of the parallel form (B_t = α_1 ⋯ α_t = exp(G_t), G_t = g_1 + ... + g_t)
PAR_NEG = ("the decays are inverted: o_t = Σ_s (b_t / b_s) (q_t · k_s) v_s — multiply Q by B and divide K by B, "
           "i.e. weights exp(G_t − G_s) <= 1, not exp(G_s − G_t)")
PAR_PREV = ("the cumulative gate is exclusive: b_t = α_1 ⋯ α_t includes α_t (cumprod / cumsum are inclusive; "
            "do not shift them)")
PAR_LOG = "B is the cumulative product of the gates α = exp(g), not of g itself: B = exp(g).cumprod(1)"
PAR_NONE = "no decay: the weight of key s for query t is q_t · k_s times b_t / b_s = exp(G_t − G_s)"
PAR_NON_CAUSAL = "non-causal: did you mask the future? o_t may only read keys s <= t"
PAR_STRICT = "the mask hides the diagonal: keep s <= t (tril(..., 0)); a token attends to itself"
PAR_SCALAR = ("one decay per head? the gate is per key channel: the weight is Σ_k q_tk k_sk exp(G_tk − G_sk), "
              "the decay inside the sum over k")


def _scale_as(how: str, scale: float | None, head_dim: int) -> float:
    """The scale a mistake uses: "given" (right), "none" (forgotten), "default" (ignores the argument)."""
    return {"given": resolve_scale(scale, head_dim), "none": 1.0, "default": default_scale(head_dim)}[how]


def _decay_logs(g: torch.Tensor, gate: str) -> torch.Tensor:
    """The per-step log-decay a mistake applies (float32): "right" g, "neg" −g, "prev" the previous token's g,
    "scalar" the mean over channels, "none" 0."""
    if gate == "neg":
        return -g
    if gate == "prev":
        return torch.cat([torch.zeros_like(g[:, :1]), g[:, :-1]], dim=1)
    if gate == "scalar":
        return g.mean(-1, keepdim=True).expand_as(g)
    if gate == "none":
        return torch.zeros_like(g)
    return g


# ------------------------------------------------------------------------------------------ 4.1 recurrence

Core = Callable[..., tuple[torch.Tensor, Any]]


def core(*, gate: str = "right", exclusive: bool = False, reverse: bool = False, scale_as: str = "given",
         ignore_init: bool = False, init: str = "decayed", state: str = "right") -> Core:
    """GLA (q, k, v, g, scale, initial_state) -> (o, final_state) token by token in float32, returned in the
    input dtype, with at most the mistakes asked for.

    gate: "right", "after" (decays k_t v_t^T too), "log" (g used as the decay), "neg", "prev", "scalar",
    "none" (see _decay_logs); exclusive: o_t reads S_{t-1}; reverse: runs t = T-1 .. 0; scale_as: "given",
    "none", "default"; ignore_init; init="undecayed": initial_state added to every read, never decayed;
    state: "right", "misses_last", "is_init", "none", "transposed".
    """

    def run(q, k, v, g, scale=None, initial_state=None):
        s = _scale_as(scale_as, scale, q.shape[-1])
        B, T, H, K = q.shape
        qf, kf, vf, gf = q.float(), k.float(), v.float(), g.float()
        if reverse:
            qf, kf, vf, gf = qf.flip(1), kf.flip(1), vf.flip(1), gf.flip(1)
        alpha = gf if gate == "log" else _decay_logs(gf, gate).exp()
        S0 = None if initial_state is None or ignore_init else initial_state.float()
        S = qf.new_zeros(B, H, K, vf.shape[-1]) if S0 is None or init == "undecayed" else S0
        extra = S0 if S0 is not None and init == "undecayed" else 0.0
        outs, S_before = [], S
        for t in range(T):
            kv = kf[:, t, :, :, None] * vf[:, t, :, None, :]
            S_before = S
            S = alpha[:, t, :, :, None] * (S + kv) if gate == "after" else alpha[:, t, :, :, None] * S + kv
            read = (S_before if exclusive else S) + extra
            outs.append(s * torch.einsum("bhk,bhkv->bhv", qf[:, t], read))
        o = torch.stack(outs, dim=1)
        if reverse:
            o = o.flip(1)
        final = S + extra
        final = {"right": final, "misses_last": S_before + extra, "none": None, "transposed": final.transpose(-1, -2),
                 "is_init": initial_state.float() if initial_state is not None else final}[state]
        return o.to(q.dtype), final

    return run


def _recurrent_form(fn: Core, name: str) -> Callable[..., Any]:
    def wrong(q, k, v, g, scale=None, initial_state=None):
        return fn(q, k, v, g, scale, initial_state)

    wrong.__name__ = name
    return wrong


def _closed_form(q, k, v, g, scale=None, initial_state=None):
    """GLA through the T×T log-space parallel form, and S_T in closed form: right, but quadratic in T."""
    s = resolve_scale(scale, q.shape[-1])
    qf, kf, vf, G = q.float(), k.float(), v.float(), g.float().cumsum(1)
    T = q.shape[1]
    D = G[:, :, None] - G[:, None, :]  # [B, T, T, H, K]
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()[None, :, :, None, None]
    A = torch.einsum("bthk,bshk,btshk->bhts", qf * s, kf, D.masked_fill(~causal, float("-inf")).exp())
    o = torch.einsum("bhts,bshv->bthv", A, vf)
    S = torch.einsum("bshk,bshv->bhkv", kf * (G[:, -1:] - G).exp(), vf)
    if initial_state is not None:
        S0 = initial_state.float()
        o = o + s * torch.einsum("bthk,bhkv->bthv", qf * G.exp(), S0)
        S = S + G[:, -1].exp()[..., None] * S0
    return o.to(q.dtype), S


def _calls_refs(q, k, v, g, scale=None, initial_state=None):
    from course_utils.refs import gla

    return gla(q, k, v, g, scale=scale, initial_state=initial_state, mode="recurrent")


def recurrence_mistakes(form: Callable[[Core, str], Callable[..., Any]]) -> tuple[Mistake, ...]:
    """The recurrence's formula mistakes, with the signature `form` gives them (4.1 and 4.3 share them)."""
    m = lambda name, hint, **kw: Mistake(name, form(core(**kw), name.replace(" ", "_")), hint)  # noqa: E731
    return (
        m("exclusive", EXCLUSIVE, exclusive=True),
        m("gate decays the new token", GATE_AFTER, gate="after"),
        m("g used as the decay", GATE_LOG, gate="log"),
        m("exp(-g)", GATE_NEG, gate="neg"),
        m("gate one step late", GATE_PREV, gate="prev"),
        m("one gate per head", GATE_SCALAR, gate="scalar"),
        m("no gate", GATE_NONE, gate="none"),
        m("reversed", REVERSED, reverse=True),
        m("no scale", NO_SCALE, scale_as="none"),
        m("ignores scale", IGNORES_SCALE, scale_as="default"),
        m("ignores initial_state", IGNORES_INIT, ignore_init=True),
        m("initial_state never decayed", INIT_UNDECAYED, init="undecayed"),
        m("final_state misses the last token", STATE_MISSES_LAST, state="misses_last"),
        m("final_state is initial_state", STATE_IS_INIT, state="is_init"),
        Mistake("final_state None", form(core(state="none"), "no_state"), says=("final_state is None",)),
        Mistake("state transposed [B,H,V,K]", form(core(state="transposed"), "transposed"),
                says=("looks transposed",)),
    )


def _reference_recurrent(inputs: dict[str, Any], case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    from course_utils.refs import gla

    return gla(inputs["q"], inputs["k"], inputs["v"], inputs["g"], scale=inputs.get("scale"),
               initial_state=inputs.get("initial_state"), mode="recurrent")  # fused recurrent on a GPU: exact


GLA_SPEC = Exercise(
    id="4.1",
    fn_name="gla_recurrent",
    signature="gla_recurrent(q, k, v, g, scale=None, initial_state=None) -> (o, final_state)",
    cases=lambda device, dtypes: case_list({"K": K_DIM, "V": V_DIM}, [
        {"B": 1, "T": 63, "H": 2},
        {"B": 2, "T": 100, "H": 3, "initial_state": True},
        {"B": 2, "T": 63, "H": 2, "gate": "mixed", "scale": 0.3, "initial_state": True},
        {"B": 2, "T": 50, "H": 2, "gate": "strong", "initial_state": True, "noncontiguous": True},
        {"B": 1, "T": 63, "H": 2, "gate": "mixed", "initial_state": True, "grad": True},
    ], 401, dtypes, half={"B": 2, "T": 100, "H": 2, "initial_state": True}),
    make_inputs=make_qkvg,
    expected=_reference_recurrent,
    output=output_node,
    positional=("q", "k", "v", "g"),
    input_layouts=LAYOUTS,
    grad_inputs=("q", "k", "v", "g", "initial_state"),
    diagnose=_gated_diagnose,
    nan_hint="overflow? the decay α = exp(g) is <= 1 for g <= 0; the state should never grow without bound",
    extra_checks=(forbid(), _linear_memory()),
    mistakes=recurrence_mistakes(_recurrent_form) + (
        Mistake("the T×T parallel form (right values)", _recurrent_form(_closed_form, "parallel_form"),
                says=("memory check", "grows like T²")),
        Mistake("calls fla's GLA through course_utils.refs", _calls_refs, says=("how check", "course_utils.refs")),
    ),
)
"""The family's spec: 4.1 as registered; the other GLA exercises are `dataclasses.replace`s of it."""

register(GLA_SPEC)


# ------------------------------------------------------------------------------------------ 4.2 parallel


def parallel_wrong(name: str, *, gate: str = "right", mask: str = "tril", exp_mode: str = "logspace",
                   scale_as: str = "given") -> Callable[..., Any]:
    """gla_parallel(q, k, v, g, scale=None) -> o through the T×T form with at most the mistakes asked for.

    exp_mode: "logspace" (right: exponent masked with −inf, then exp), "naive" ((Q ⊙ B)(K / B)^T with
    B = cumprod(α), computed in float32 whatever the input dtype), "where" (exp, then torch.where: right
    values, NaN gradients when an exp overflows), "times" (exp times the mask: NaN where it overflows);
    gate: as _decay_logs, plus "log" (naive: cumprod of g); mask: "tril", "strict", "none".
    """

    def wrong(q, k, v, g, scale=None):
        s = _scale_as(scale_as, scale, q.shape[-1])
        T = q.shape[1]
        qf, kf, vf, gf = q.float(), k.float(), v.float(), g.float()
        if mask == "none":
            keep = torch.ones(T, T, dtype=torch.bool, device=q.device)
        else:
            keep = torch.ones(T, T, dtype=torch.bool, device=q.device).tril(-1 if mask == "strict" else 0)
        if exp_mode == "naive" or gate == "log":
            alpha = gf if gate == "log" else _decay_logs(gf, gate).exp()
            Bc = alpha.cumprod(dim=1)
            A = torch.einsum("bthk,bshk->bhts", qf * Bc * s, kf / Bc).masked_fill(~keep, 0.0)
        else:
            G = _decay_logs(gf, gate).cumsum(dim=1)
            D = G[:, :, None] - G[:, None, :]  # [B, T, T, H, K]
            keep5 = keep[None, :, :, None, None]
            if exp_mode == "logspace":
                W = D.masked_fill(~keep5, float("-inf")).exp()
            elif exp_mode == "where":
                W = torch.where(keep5, D.exp(), torch.zeros_like(D))
            else:  # "times"
                W = D.exp() * keep5
            A = torch.einsum("bthk,bshk,btshk->bhts", qf * s, kf, W)
        return torch.einsum("bhts,bshv->bthv", A, vf).to(q.dtype)

    wrong.__name__ = name
    return wrong


def _loop_as_parallel(q, k, v, g, scale=None):
    """Exercise 4.1's recurrence given the parallel form's signature: right values, a loop over t."""
    return core()(q, k, v, g, scale)[0]


def _refs_parallel(q, k, v, g, scale=None):
    return _calls_refs(q, k, v, g, scale)[0]


def parallel_mistakes() -> tuple[Mistake, ...]:
    """The parallel form's formula mistakes (4.2a and 4.2b)."""
    p = lambda name, hint, **kw: Mistake(name, parallel_wrong(name.replace(" ", "_"), **kw), hint)  # noqa: E731
    return (
        p("decays inverted", PAR_NEG, gate="neg"),
        p("exclusive cumulative gate", PAR_PREV, gate="prev"),
        p("no decay", PAR_NONE, gate="none"),
        p("one gate per head", PAR_SCALAR, gate="scalar"),
        p("no mask", PAR_NON_CAUSAL, mask="none"),
        p("mask hides the diagonal", PAR_STRICT, mask="strict"),
        p("no scale", NO_SCALE, scale_as="none"),
        p("ignores scale", IGNORES_SCALE, scale_as="default"),
        Mistake("loops over t (Exercise 4.1's recurrence)", _loop_as_parallel, says=("loop check",)),
        Mistake("calls fla's GLA through course_utils.refs", _refs_parallel, says=("how check", "course_utils.refs")),
    )


def _reference_parallel(inputs: dict[str, Any], case: Case) -> torch.Tensor:
    return _reference_recurrent(inputs, case)[0]


PARALLEL = dataclasses.replace(
    GLA_SPEC,
    id="4.2a",
    fn_name="gla_parallel_naive",
    signature="gla_parallel_naive(q, k, v, g, scale=None) -> o",
    cases=lambda device, dtypes: case_list({"K": K_DIM, "V": V_DIM}, [
        {"B": 1, "T": 32, "H": 2},
        {"B": 2, "T": 50, "H": 3, "scale": 0.3},
        {"B": 2, "T": 40, "H": 2, "noncontiguous": True},
    ], 421, dtypes, half={"B": 2, "T": 32, "H": 2}),
    expected=_reference_parallel,
    output=TensorOut("o", VO_LAYOUT),
    grad_inputs=(),
    extra_checks=(forbid(), no_time_loop()),
    mistakes=parallel_mistakes() + (
        Mistake("cumulative product of g", parallel_wrong("cumprod_of_g", gate="log"), PAR_LOG,
                says=("exp(g).cumprod(1)",)),
    ),
)
"""4.2a: the naive parallel form, graded on short sequences with the paper's gates, where it still works."""

register(PARALLEL)

register(dataclasses.replace(
    PARALLEL,
    id="4.2b",
    fn_name="gla_parallel",
    signature="gla_parallel(q, k, v, g, scale=None) -> o",
    cases=lambda device, dtypes: case_list({"K": K_DIM, "V": V_DIM}, [
        {"B": 1, "T": 32, "H": 2},
        {"B": 2, "T": 50, "H": 3, "scale": 0.3},
        {"B": 2, "T": 40, "H": 2, "noncontiguous": True},
        {"B": 2, "T": 100, "H": 2, "gate": "strong"},
        {"B": 1, "T": 63, "H": 2, "gate": "strong", "grad": True},
    ], 431, dtypes, half={"B": 2, "T": 64, "H": 2, "gate": "strong"}),
    grad_inputs=("q", "k", "v", "g"),
    mistakes=parallel_mistakes() + (
        Mistake("the naive form: cumulative products", parallel_wrong("naive", exp_mode="naive"),
                says=("NaN", "exponentiate the difference")),
        Mistake("mask applied after exp (× mask)", parallel_wrong("times_mask", exp_mode="times"),
                says=("NaN", "exponentiate the difference")),
        Mistake("mask applied after exp (torch.where)", parallel_wrong("where_mask", exp_mode="where"),
                says=("gradient", "Mask the exponent before exp")),
    ),
))


# ------------------------------------------------------------------------------------------ 4.3 chunkwise

DEFAULT_CHUNK = 64  # fla's chunk size


def _chunk_form(fn: Core, name: str) -> Callable[..., Any]:
    def wrong(q, k, v, g, chunk_size=DEFAULT_CHUNK, scale=None, initial_state=None):
        return fn(q, k, v, g, scale, initial_state)

    wrong.__name__ = name
    return wrong


def chunk_wrong(name: str, *, inter: str = "decayed", update: str = "right", intra: str = "logspace",
                cum: str = "chunk", ragged: str = "ok", state: str = "right") -> Callable[..., Any]:
    """gla_chunkwise(q, k, v, g, chunk_size=64, scale=None, initial_state=None) chunk by chunk in float32, the
    intra-chunk part in log space over the whole chunk (right values, no sub-chunks), with at most the
    mistakes asked for.

    inter: "decayed" (right: (q_t ⊙ exp(G_t)) S), "none", "undecayed" (q_t S); update: "right", "old_undecayed"
    (S + K^T V part), "keys_undecayed" (keys not decayed to the chunk's end); intra: "logspace", "naive"
    ((Q ⊙ exp(G))(K ⊙ exp(−G))^T: overflows); cum: "chunk" (G restarts at every chunk), "global" (G from
    t = 0); ragged: "ok", "drop" (the last partial chunk cut from o), "pad" (o at the padded length);
    state: "right", "misses_last" (the state before the last chunk).
    """

    def wrong(q, k, v, g, chunk_size=DEFAULT_CHUNK, scale=None, initial_state=None):
        s = resolve_scale(scale, q.shape[-1])
        B, T, H, K = q.shape
        C = chunk_size
        N = -(-T // C)
        pad = N * C - T
        qf, kf, vf, gf = (F.pad(x.float(), (0, 0, 0, 0, 0, pad)) for x in (q, k, v, g))
        S = qf.new_zeros(B, H, K, vf.shape[-1]) if initial_state is None else initial_state.float()
        G_all = gf.cumsum(1)
        causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
        outs, S_before = [], S
        for n in range(N):
            sl = slice(n * C, (n + 1) * C)
            qc, kc, vc = qf[:, sl] * s, kf[:, sl], vf[:, sl]
            G = gf[:, sl].cumsum(1) if cum == "chunk" else G_all[:, sl]
            o = {"decayed": torch.einsum("bthk,bhkv->bthv", qc * G.exp(), S), "none": 0.0,
                 "undecayed": torch.einsum("bthk,bhkv->bthv", qc, S)}[inter]
            if intra == "naive":
                A = torch.einsum("bthk,bshk->bhts", qc * G.exp(), kc * (-G).exp()) * causal
            else:
                D = (G[:, :, None] - G[:, None, :]).masked_fill(~causal[None, :, :, None, None], float("-inf"))
                A = torch.einsum("bthk,bshk,btshk->bhts", qc, kc, D.exp())
            outs.append(o + torch.einsum("bhts,bshv->bthv", A, vc))
            G_end = G[:, -1]
            k_end = kc if update == "keys_undecayed" else kc * (G_end[:, None] - G).exp()
            old = S if update == "old_undecayed" else G_end.exp()[..., None] * S
            S_before, S = S, old + torch.einsum("bthk,bthv->bhkv", k_end, vc)
        o = torch.cat(outs, dim=1)
        o = {"ok": o[:, :T], "drop": o[:, : (T // C) * C], "pad": o}[ragged]
        final = S_before if state == "misses_last" else S
        return o.to(q.dtype), final

    wrong.__name__ = name
    return wrong


def _ragged(case: Case) -> str | None:
    T, C = case["T"], case.get("chunk_size", DEFAULT_CHUNK)
    if not T % C:
        return None
    return (f"T={T} is not a multiple of chunk_size={C}: the last chunk has {T % C} tokens. Pad q, k, v and g "
            "with zeros up to a multiple of the chunk size (a zero key adds nothing to the state, a zero "
            "log-gate decays nothing), then cut the output back to T")


def _chunk_diagnose(f: Failure) -> str | None:
    """Failures explained by chunk boundaries: a ragged tail, or an error that starts at the second chunk."""
    case = f.case
    T, C = case["T"], case.get("chunk_size", DEFAULT_CHUNK)
    if f.kind == "nan":
        return _gated_diagnose(f)
    if f.kind == "shape" and f.name == "o" and f.got.dim() == 4 and T % C:
        if f.got.shape[1] == (T // C) * C:
            return _ragged(case) + " (your output drops the last chunk)"
        if f.got.shape[1] == -(-T // C) * C:
            return f"you return the zero-padded length {f.got.shape[1]}: cut the output back to T={T}"
    if f.kind in ("value", "grad") and (f.info.get("layout") or "").startswith("BT"):
        t_wrong = f.info["wrong"].any(dim=(0, 2, 3)).nonzero().flatten().tolist()
        if t_wrong and T % C and t_wrong[0] >= (T // C) * C:
            return _ragged(case)
        if t_wrong and C > 1 and t_wrong[0] == C:
            return (f"chunk 0 (t < {C}) is right and the error starts at the second chunk (t={C}): check the "
                    "state passed between chunks — S_[n+1] = diag(exp(G_C)) S_[n] + (K ⊙ exp(G_C − G))^T V, "
                    "and its decay to each position, (q_t ⊙ exp(G_t)) S_[n]")
    return None


def _reference_chunk(inputs: dict[str, Any], case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    from course_utils.refs import gla

    # On a GPU fla's fused recurrent kernel: exact in fp32 and compiled in seconds, where chunk_gla autotunes
    # for about three minutes on a fresh GPU (two dtypes) while the student's graded cell waits.
    mode = "chunk" if inputs["q"].device.type == "cpu" else "recurrent"
    return gla(inputs["q"], inputs["k"], inputs["v"], inputs["g"], scale=inputs.get("scale"),
               initial_state=inputs.get("initial_state"), mode=mode)


def _refs_chunk(q, k, v, g, chunk_size=DEFAULT_CHUNK, scale=None, initial_state=None):
    return _calls_refs(q, k, v, g, scale, initial_state)


register(dataclasses.replace(
    GLA_SPEC,
    id="4.3",
    fn_name="gla_chunkwise",
    signature="gla_chunkwise(q, k, v, g, chunk_size=64, scale=None, initial_state=None) -> (o, final_state)",
    cases=lambda device, dtypes: case_list({"K": K_DIM, "V": V_DIM}, [
        {"B": 1, "T": 64, "H": 2, "chunk_size": 16},  # whole chunks first: ragged bugs show apart
        {"B": 1, "T": 63, "H": 2},
        {"B": 2, "T": 100, "H": 3, "chunk_size": 32, "initial_state": True},
        {"B": 2, "T": 100, "H": 2, "chunk_size": 16, "gate": "strong", "initial_state": True},
        {"B": 2, "T": 80, "H": 2, "chunk_size": 64, "gate": "mixed", "scale": 0.3, "initial_state": True,
         "noncontiguous": True},
    ], 441, dtypes, half={"B": 2, "T": 128, "H": 2, "chunk_size": 64, "initial_state": True}),
    expected=_reference_chunk,
    grad_inputs=(),
    diagnose=_chunk_diagnose,
    exception_hint=_ragged,
    extra_checks=(forbid(), _linear_memory(chunk_size=16), uses_chunk_size(), sub_chunked()),
    mistakes=recurrence_mistakes(_chunk_form) + (
        Mistake("inter-chunk term missing", chunk_wrong("no_inter", inter="none"),
                "missing the inter-chunk term: each chunk also reads the state of all previous chunks, "
                "scale (q_t ⊙ exp(G_t)) S_[n]"),
        Mistake("inter-chunk term not decayed", chunk_wrong("inter_undecayed", inter="undecayed"),
                "the state from before the chunk is read undecayed: position t of the chunk sees it through "
                "the gates of the chunk's tokens up to t, (q_t ⊙ exp(G_t)) S_[n], with G_t the cumulative "
                "log-gate since the chunk began"),
        Mistake("old state not decayed across the chunk", chunk_wrong("old_undecayed", update="old_undecayed"),
                "the state passed to the next chunk keeps the old state undecayed: "
                "S_[n+1] = diag(exp(G_C)) S_[n] + (K ⊙ exp(G_C − G))^T V, G_C the chunk's total log-gate"),
        Mistake("keys not decayed to the chunk's end", chunk_wrong("keys_undecayed", update="keys_undecayed"),
                "the chunk's keys enter the next state undecayed: key s has been decayed by the gates after "
                "it, so it enters as k_s ⊙ exp(G_C − G_s)"),
        Mistake("cumulative gate not restarted per chunk", chunk_wrong("global_cumsum", cum="global"),
                "G runs from the start of the sequence: inside chunk n take the cumulative log-gate since the "
                "chunk began (the state S_[n] already carries the decay of the chunks before)"),
        Mistake("intra-chunk in cumulative products", chunk_wrong("naive_intra", intra="naive"),
                says=("NaN", "exponentiate the difference")),
        Mistake("final_state misses the last chunk", chunk_wrong("misses_last_chunk", state="misses_last"),
                "final_state misses the last chunk: update S after every chunk, the last one too"),
        Mistake("ragged last chunk dropped from o", chunk_wrong("drops_tail", ragged="drop"),
                says=("drops the last chunk",)),
        Mistake("padded length returned", chunk_wrong("padded", ragged="pad"), says=("zero-padded length",)),
        Mistake("no secondary chunking (log space over whole chunks)", chunk_wrong("whole_chunk"),
                says=("sub-chunk check",)),
        Mistake("token by token (Exercise 4.1's recurrence)", _chunk_form(core(), "token_loop"),
                says=("chunk check", "ignores chunk_size")),
        Mistake("the T×T parallel form (ignores chunk_size)", _chunk_form(_closed_form, "parallel_form"),
                says=("memory check", "grows like T²")),
        Mistake("calls fla's GLA through course_utils.refs", _refs_chunk, says=("how check", "course_utils.refs")),
    ),
))


# ------------------------------------------------------------------------------------------ 4.4 the layer

LAYER_DEFAULTS = {"expand_k": 0.5, "expand_v": 1.0, "gate_low_rank_dim": 16}


class Params(dict):
    """The layer's weights by name, as `fla.layers.GatedLinearAttention.state_dict()` names them (shown as
    `params` in messages)."""

    def __repr__(self) -> str:
        return "params"


def layer_config(case: Case) -> dict[str, Any]:
    """The fla GatedLinearAttention configuration of a layer case."""
    cfg = {"hidden_size": case["D"], "num_heads": case["H"], **LAYER_DEFAULTS}
    if "gate_logit_normalizer" in case.params:
        cfg["gate_logit_normalizer"] = case["gate_logit_normalizer"]
    return cfg


def layer_params(gen: torch.Generator, D: int, H: int, expand_k: float = 0.5, expand_v: float = 1.0,
                 gate_low_rank_dim: int = 16) -> Params:
    """Seeded weights for fla's GatedLinearAttention(hidden_size=D, num_heads=H, ...) under its names: every
    projection ~ N(0, 1/fan_in), the gate's bias around +2 (α near 1, as trained models have it), the norm's
    weight around 1."""
    Dk, Dv, r = int(D * expand_k), int(D * expand_v), gate_low_rank_dim

    def w(out: int, fan_in: int) -> torch.Tensor:
        return randn(gen, out, fan_in) / fan_in ** 0.5

    return Params({
        "q_proj.weight": w(Dk, D), "k_proj.weight": w(Dk, D), "v_proj.weight": w(Dv, D),
        "g_proj.weight": w(Dv, D),
        "gk_proj.0.weight": w(r, D), "gk_proj.1.weight": w(Dk, r), "gk_proj.1.bias": 2.0 + randn(gen, Dk),
        "o_proj.weight": w(D, Dv),
        "g_norm_swish_gate.weight": 1.0 + 0.2 * randn(gen, Dv // H),
    })


def _layer_inputs(case: Case, device: torch.device) -> dict[str, Any]:
    gen = generator(case)
    B, T, D, H = case["B"], case["T"], case["D"], case["H"]
    if case.get("noncontiguous"):
        x = randn(gen, T, B, D).to(device, case.dtype).transpose(0, 1)
    else:
        x = randn(gen, B, T, D).to(device, case.dtype)
    params = Params({n: p.to(device, case.dtype) for n, p in layer_params(gen, D, H).items()})
    inputs: dict[str, Any] = {"x": x, "params": params, "num_heads": H}
    if "gate_logit_normalizer" in case.params:
        inputs["gate_logit_normalizer"] = case["gate_logit_normalizer"]
    return inputs


def fla_layer(params: dict[str, torch.Tensor], hidden_size: int, num_heads: int, **config: Any) -> Any:
    """fla.layers.GatedLinearAttention(hidden_size, num_heads, **config) holding `params` (its state_dict), on
    their device and in their dtype."""
    from course_utils.refs._checks import import_fla

    layer = import_fla("fla.layers").GatedLinearAttention(hidden_size=hidden_size, num_heads=num_heads, **config)
    first = next(iter(params.values()))
    layer = layer.to(first.device, first.dtype)
    layer.load_state_dict(dict(params), strict=True)
    return layer


def gated_rms_norm(o: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """fla's FusedRMSNormGated (swish) as its Triton kernel computes it, in float32, over the last dim:
    o / sqrt(mean(o²) + eps) * weight * gate * sigmoid(gate), returned in o's dtype."""
    of, gf = o.float(), gate.float()
    y = of * torch.rsqrt(of.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
    return (y * gf * torch.sigmoid(gf)).to(o.dtype)


def fla_layer_reference(layer: Any, x: torch.Tensor) -> torch.Tensor:
    """The output of fla's `GatedLinearAttention` layer on x [B, T, hidden] (no cache, no mask).

    On a GPU: the layer itself, `layer(x)[0]` (fla's `fused_recurrent_gla` for T <= 64, else `chunk_gla`, and
    its fused gated RMSNorm kernel). On a CPU fla's Triton kernels cannot run, so this follows the layer's
    forward step by step with the layer's own modules (q_proj, k_proj, v_proj, gk_proj, g_proj, o_proj) and
    the two kernels replaced by what they compute: GLA through course_utils.refs.gla (fla's
    naive_recurrent_gla) and the norm through `gated_rms_norm` (fla's kernel formula). Only the configuration
    the course uses is followed (no short convolution, no feature map, one key/value group, the fused swish
    gate, no clamp); anything else raises.
    """
    from course_utils.refs._checks import record

    if x.is_cuda:
        out = layer(x)[0]
        record("fla.layers.GatedLinearAttention", x.device)
        return out
    unsupported = {"use_short_conv": layer.use_short_conv, "feature_map": layer.feature_map_fn is not None,
                   "num_kv_groups > 1": layer.num_kv_groups > 1, "clamp_min": layer.clamp_min is not None,
                   "no fused swish gate": not getattr(layer, "fuse_norm_and_gate", False)}
    bad = [name for name, on in unsupported.items() if on]
    if bad:
        raise NotImplementedError(f"fla_layer_reference follows the course's GLA layer only; this one has {bad}")
    from course_utils.refs import gla

    B, T, _ = x.shape
    H, dk, dv = layer.num_heads, layer.head_k_dim, layer.head_v_dim
    q = layer.q_proj(x).view(B, T, H, dk)  # fla: rearrange '... (h d) -> ... h d'
    k = layer.k_proj(x).view(B, T, H, dk)
    v = layer.v_proj(x).view(B, T, H, dv)
    gk = F.logsigmoid(layer.gk_proj(x).view(B, T, H, dk)) / layer.gate_logit_normalizer
    o, _ = gla(q, k, v, gk, mode="chunk")  # scale None: head_k_dim ** -0.5, as the layer's kernel call
    g = layer.g_proj(x).view(B, T, H, dv)
    o = gated_rms_norm(o, g, layer.g_norm_swish_gate.weight, layer.g_norm_swish_gate.eps)
    record("fla.layers.GatedLinearAttention", x.device, "its modules; GLA and the gated norm by their CPU formulas")
    return layer.o_proj(o.reshape(B, T, H * dv))


def _reference_layer(inputs: dict[str, Any], case: Case) -> torch.Tensor:
    layer = fla_layer(inputs["params"], **layer_config(case))
    with torch.no_grad():
        return fla_layer_reference(layer, inputs["x"].contiguous())


def layer_wrong(name: str, *, gate_norm: str = "right", out_gate: str = "swish", norm: str = "rms_head",
                heads: str = "hd", scale_as: str = "given", gate_bias: bool = True,
                attention: Core | None = None) -> Callable[..., Any]:
    """gla_layer(x, params, num_heads, gate_logit_normalizer=16, norm_eps=1e-5) with at most the mistakes
    asked for. gate_norm: "right", "none" (logsigmoid not divided), "fixed" (always 16), "sigmoid"
    (log(sigmoid) replaced by sigmoid); out_gate: "swish", "sigmoid", "none"; norm: "rms_head", "rms_all"
    (over the whole value dim), "layer" (LayerNorm), "no_weight", "after_gate", "none"; heads: "hd" (right:
    feature h*d + i belongs to head h), "dh"; scale_as: "given" (head_k_dim**-0.5), "hidden" (hidden**-0.5);
    gate_bias: False drops gk_proj.1.bias; attention: the GLA it uses, (q, k, v, g, scale) -> (o, state)
    (default: `core()`, the recurrence in float32)."""
    attend = core() if attention is None else attention

    def wrong(x, params, num_heads, gate_logit_normalizer=16, norm_eps=1e-5):
        P, H = params, num_heads
        B, T, D = x.shape
        xf = x.float()

        def lin(t, w):
            return t @ P[w].float().T

        def split(t):
            d = t.shape[-1] // H
            return t.view(B, T, H, d) if heads == "hd" else t.view(B, T, d, H).transpose(-1, -2)

        q, k, v = split(lin(xf, "q_proj.weight")), split(lin(xf, "k_proj.weight")), split(lin(xf, "v_proj.weight"))
        z = lin(lin(xf, "gk_proj.0.weight"), "gk_proj.1.weight") + (P["gk_proj.1.bias"].float() if gate_bias else 0)
        z = split(z)
        tau = {"right": gate_logit_normalizer, "none": 1.0, "fixed": 16.0, "sigmoid": gate_logit_normalizer}[gate_norm]
        g = (torch.sigmoid(z) if gate_norm == "sigmoid" else F.logsigmoid(z)) / tau
        scale = None if scale_as == "given" else D ** -0.5
        o, _ = attend(q, k, v, g, scale)
        gate = split(lin(xf, "g_proj.weight"))
        act = {"swish": F.silu(gate), "sigmoid": torch.sigmoid(gate), "none": torch.ones_like(gate)}[out_gate]
        w = P["g_norm_swish_gate.weight"].float()

        def rms(t, weight=True):
            t = t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + norm_eps)
            return t * w if weight else t

        if norm == "rms_head":
            o = rms(o) * act
        elif norm == "no_weight":
            o = rms(o, weight=False) * act
        elif norm == "after_gate":
            o = rms(o * act)
        elif norm == "layer":
            o = F.layer_norm(o, (o.shape[-1],), eps=norm_eps) * w * act
        elif norm == "rms_all":
            flat = o.reshape(B, T, -1)
            o = (flat * torch.rsqrt(flat.pow(2).mean(-1, keepdim=True) + norm_eps)).view_as(o) * w * act
        else:  # "none"
            o = o * act
        return lin(o.reshape(B, T, -1), "o_proj.weight").to(x.dtype)

    wrong.__name__ = name
    return wrong


def _gla_refs(q, k, v, g, scale=None):
    from course_utils.refs import gla

    return gla(q, k, v, g, scale=scale)


register(dataclasses.replace(
    GLA_SPEC,
    id="4.4",
    fn_name="gla_layer",
    signature="gla_layer(x, params, num_heads, gate_logit_normalizer=16, norm_eps=1e-5) -> o",
    cases=lambda device, dtypes: case_list({}, [
        {"B": 1, "T": 32, "H": 2, "D": 64},
        {"B": 2, "T": 100, "H": 4, "D": 64},
        {"B": 2, "T": 70, "H": 2, "D": 64, "gate_logit_normalizer": 8, "noncontiguous": True},
    ], 451, dtypes, half={"B": 2, "T": 100, "H": 2, "D": 64}),
    make_inputs=_layer_inputs,
    expected=_reference_layer,
    reference_name=None,
    output=TensorOut("o", "BTD"),
    positional=("x", "params"),
    input_layouts={},
    grad_inputs=(),
    diagnose=None,
    extra_checks=(forbid(),),
    mistakes=(
        Mistake("gate logits not divided by the normalizer", layer_wrong("no_normalizer", gate_norm="none"),
                "the gate is g = logsigmoid(x W_1 W_2 + b) / gate_logit_normalizer (the paper's temperature "
                "τ = 16): without the division every channel forgets 16× faster"),
        Mistake("normalizer fixed at 16", layer_wrong("fixed_normalizer", gate_norm="fixed"),
                "ignores the gate_logit_normalizer argument: divide by it (16 only by default)"),
        Mistake("sigmoid gate instead of logsigmoid", layer_wrong("sigmoid_gate", gate_norm="sigmoid"),
                "g must be a log-gate (<= 0): g = logsigmoid(...) / τ, i.e. α = σ(...)^(1/τ); sigmoid(...) "
                "is positive and makes the state grow"),
        Mistake("low-rank gate without its bias", layer_wrong("no_gate_bias", gate_bias=False),
                "the gate's low-rank projection has a bias on its second matrix (gk_proj.1.bias): "
                "x W_1 W_2 + b"),
        Mistake("output gate sigmoid, not swish", layer_wrong("sigmoid_out", out_gate="sigmoid"),
                "the output gate is swish (SiLU): r = z * sigmoid(z), z = g_proj(x), not sigmoid(z)"),
        Mistake("no output gate", layer_wrong("no_out_gate", out_gate="none"),
                "missing the output gate: multiply the normalised output by swish(g_proj(x))"),
        Mistake("norm over all heads at once", layer_wrong("norm_all", norm="rms_all"),
                "normalise each head on its own (the paper's group norm; fla: one RMSNorm over head_v_dim), "
                "not the concatenation of all heads"),
        Mistake("LayerNorm instead of RMSNorm", layer_wrong("layer_norm", norm="layer"),
                "fla's layer normalises each head with an RMSNorm (no mean subtracted): "
                "o / sqrt(mean(o²) + eps) * weight"),
        Mistake("norm weight ignored", layer_wrong("no_norm_weight", norm="no_weight"),
                "the per-head norm has a weight (g_norm_swish_gate.weight): multiply by it"),
        Mistake("norm after the output gate", layer_wrong("norm_after_gate", norm="after_gate"),
                "normalise first, then gate: RMSNorm(o) * swish(g_proj(x))"),
        Mistake("no norm", layer_wrong("no_norm", norm="none"),
                "missing the per-head norm: RMSNorm(o) (weight g_norm_swish_gate.weight, eps norm_eps)"),
        Mistake("heads split as (d h)", layer_wrong("heads_dh", heads="dh"),
                "heads split the wrong way: feature h·d + i of a projection belongs to head h "
                "(view(B, T, H, d)), not feature i·H + h"),
        Mistake("scale from the hidden size", layer_wrong("hidden_scale", scale_as="hidden"),
                "the GLA inside the layer uses scale = head_k_dim ** -0.5 (its default), per head"),
        Mistake("calls fla's GLA through course_utils.refs", layer_wrong("calls_refs", attention=_gla_refs),
                says=("how check", "course_utils.refs")),
    ),
))


# ================================================================================================
# Lab 05 (retention, simple GLA): sections below this line
# ================================================================================================
