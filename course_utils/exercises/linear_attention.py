"""Family: causal linear attention in its three forms — parallel (masked T×T), recurrent (the RNN with a
matrix state, one decoding step, its backward), chunkwise (chunk by chunk, all chunks at once, and normalised).

Exercises 2.1-2.4, 3.1, 3.3, 3.4. q and k arrive already feature-mapped. Expected values come from
course_utils.refs.linear_attn (fla's linear attention: its fused recurrent kernel on a GPU, its naive
recurrent and naive chunked forms on a CPU). The state is inclusive (o_t reads S_t, which holds
k_t v_t^T) and final_state is (S, z) when normalize=True.

Every mistake below is an implementation that makes it, with the exercise's signature: `core` builds the
vectorised (prefix-sum) form with one thing wrong, and `as_form` gives it the signature of each exercise.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
import torch.nn.functional as F

from course_utils.conventions import (
    EPS,
    NORMALIZER_LAYOUT,
    QK_LAYOUT,
    STATE_LAYOUT,
    VO_LAYOUT,
    default_scale,
    resolve_scale,
)
from course_utils.exercises.cases import bthd, case_list, generator, randn
from course_utils.feature_maps import phi
from course_utils.grading import (
    Case,
    Exercise,
    Failure,
    Mistake,
    TensorOut,
    Trial,
    TupleOut,
    check_not_mutated,
    fail,
    register,
)
from course_utils.grading.checks import check_form
from course_utils.grading.how import TorchCalls, forbid, no_quadratic_memory

K_DIM, V_DIM = 16, 32  # K != V so that a transposed state shows in its shape
LAYOUTS = {"q": QK_LAYOUT, "k": QK_LAYOUT, "v": VO_LAYOUT, "initial_state": STATE_LAYOUT, "state": STATE_LAYOUT}
NORMALIZER_NAN = "dividing by a zero normalizer? add eps to the denominator"

NO_SCALE = "missing scale? o_t = scale * q_t^T S_t with scale = K**-0.5 when scale=None"
IGNORES_SCALE = "ignores the scale argument: use it when given, K**-0.5 only when scale is None"
EXCLUSIVE = ("state updated after reading the output? The state is inclusive: add k_t v_t^T to S before "
             "o_t = scale q_t^T S_t, so a token attends to itself")
NON_CAUSAL = "non-causal: did you mask future positions? o_t may only read tokens s <= t"
REVERSED = "reversed time: o_t reads the tokens s >= t; the recurrence runs forward, t = 0 .. T-1"
IGNORES_INIT = "ignores initial_state? start the recurrence from S = initial_state (zeros only when None)"
NO_NORMALIZER = "missing normalizer: with normalize=True divide by scale * q_t^T z_t, z_t = z_{t-1} + k_t"
Z0_IGNORED = "the normalizer ignores initial_state's z: z_t = z0 + sum_{s<=t} k_s"
STATE_NO_INIT = "final_state ignores initial_state: S_T = initial_state + sum_t k_t v_t^T"
STATE_MISSES_LAST = "final_state misses the last token: return S after adding k_{T-1} v_{T-1}^T"
STATE_IS_INIT = "final_state equals initial_state: the state is never updated, or you return the wrong variable"
STATE_OVERWRITTEN = "the state is overwritten, not accumulated: S = S + k_t v_t^T"


# ------------------------------------------------------------------------------------------ inputs


def _normalized(case: Case) -> bool:
    return bool(case.get("normalize"))


def output_node(case: Case) -> TupleOut:
    """(o, final_state); final_state is (S, z) when normalize=True."""
    o = TensorOut("o", VO_LAYOUT)
    if _normalized(case):
        state = TupleOut("final_state", (TensorOut("final_state[0] (S)", STATE_LAYOUT, state=True),
                                         TensorOut("final_state[1] (z)", NORMALIZER_LAYOUT, state=True)))
    else:
        state = TensorOut("final_state", STATE_LAYOUT, state=True)
    return TupleOut("(o, final_state)", (o, state))


def make_qkv(case: Case, device: torch.device) -> dict[str, Any]:
    """q, k (positive features when normalize=True), v, and the optional arguments the case passes."""
    gen = generator(case)
    q, k = bthd(gen, case, K_DIM, device), bthd(gen, case, K_DIM, device)
    v = bthd(gen, case, V_DIM, device)
    if _normalized(case):  # a normalised form needs positive features (positive denominators)
        q, k = phi(q), phi(k)
    inputs: dict[str, Any] = {"q": q, "k": k, "v": v}
    for name in ("chunk_size", "scale"):
        if name in case.params:
            inputs[name] = case[name]
    if case.get("initial_state"):
        B, H = case["B"], case["H"]
        S0 = (0.5 * randn(gen, B, H, K_DIM, V_DIM)).to(device, case.dtype)
        if _normalized(case):
            z0 = phi(randn(gen, B, H, K_DIM)).to(device, case.dtype)
            inputs["initial_state"] = (S0, z0)
        else:
            inputs["initial_state"] = S0
    if "normalize" in case.params:
        inputs["normalize"] = case["normalize"]
    return inputs


def reference(inputs: dict[str, Any], case: Case) -> tuple[Any, Any]:
    from course_utils.refs import linear_attn

    return linear_attn.linear_attention(inputs["q"], inputs["k"], inputs["v"], scale=inputs.get("scale"),
                                        initial_state=inputs.get("initial_state"),
                                        normalize=bool(inputs.get("normalize", False)),
                                        mode="recurrent")  # fla's fused recurrent kernel on a GPU: no autotuning


# ------------------------------------------------------------------------------------------ mistakes


def _split(initial_state: Any) -> tuple[Any, Any]:
    if isinstance(initial_state, tuple):
        return initial_state
    return initial_state, None


Core = Callable[..., tuple[torch.Tensor, Any]]


def _scale_as(how: str, scale: float | None, head_dim: int) -> float:
    """The scale a mistake uses: "given" (right), "none" (forgotten), "default" (ignores the argument)."""
    return {"given": resolve_scale(scale, head_dim), "none": 1.0, "default": default_scale(head_dim)}[how]


def core(*, exclusive: bool = False, causal: bool = True, reverse: bool = False, scale_as: str = "given",
         ignore_init: bool = False, ignore_z0: bool = False, normalizer: bool = True, state: str = "right"
         ) -> Core:
    """Causal linear attention (q, k, v, scale, initial_state, normalize) -> (o, final_state), computed with
    prefix sums in float32 and returned in the input dtype, with at most the mistakes asked for:

    exclusive: o_t reads S_{t-1}; causal=False: every query reads the whole sequence; reverse: suffix sums;
    scale_as: "given" (right), "none" (no scale), "default" (ignores the argument); ignore_init /
    ignore_z0: initial_state (or its z) dropped; normalizer=False: no division even when asked;
    state: "right", "misses_last", "overwritten", "no_init", "is_init", "transposed", "time_axis", "none",
    "z_fla" (z as fla's [B, 1, H, K]).
    """

    def run(q, k, v, scale=None, initial_state=None, normalize=False):
        s = _scale_as(scale_as, scale, q.shape[-1])
        S0, z0 = _split(None if ignore_init else initial_state)
        if ignore_z0 and z0 is not None:
            z0 = torch.zeros_like(z0)
        qf, kf, vf = q.float(), k.float(), v.float()
        if reverse:
            qf, kf, vf = qf.flip(1), kf.flip(1), vf.flip(1)
        kv = torch.einsum("bthk,bthv->bthkv", kf, vf)
        S_t = kv.cumsum(1) if causal else kv.sum(1, keepdim=True).expand_as(kv)
        z_t = kf.cumsum(1) if causal else kf.sum(1, keepdim=True).expand_as(kf)
        if exclusive:
            S_t, z_t = S_t - kv, z_t - kf
        S_fin, z_fin = kv.sum(1), kf.sum(1)
        if S0 is not None:
            S_t, S_fin = S_t + S0.float()[:, None], S_fin + S0.float()
        if z0 is not None:
            z_t, z_fin = z_t + z0.float()[:, None], z_fin + z0.float()
        o = s * torch.einsum("bthk,bthkv->bthv", qf, S_t)
        if normalize and normalizer:
            o = o / (s * (qf * z_t).sum(-1, keepdim=True) + EPS)
        if reverse:
            o = o.flip(1)
        last_kv = torch.einsum("bhk,bhv->bhkv", k[:, -1].float(), v[:, -1].float())
        S_fin = {"right": S_fin, "misses_last": S_fin - last_kv, "overwritten": last_kv,
                 "no_init": kv.sum(1), "is_init": S_fin if S0 is None else S0.float(),
                 "transposed": S_fin.transpose(-1, -2), "time_axis": S_t, "none": None, "z_fla": S_fin}[state]
        if normalize and state == "z_fla":
            z_fin = z_fin.unsqueeze(1)
        return o.to(q.dtype), ((S_fin, z_fin) if normalize else S_fin)

    return run


def as_form(form: str, fn: Core, name: str) -> Callable[..., Any]:
    """fn with the signature of a form: "parallel" (2.1: o only), "recurrent" (2.2/2.4), "chunk" (3.1/3.3)."""
    if form == "parallel":
        def wrong(q, k, v, scale=None, normalize=False):
            return fn(q, k, v, scale, None, normalize)[0]
    elif form == "recurrent":
        def wrong(q, k, v, scale=None, initial_state=None, normalize=False):
            return fn(q, k, v, scale, initial_state, normalize)
    elif form == "chunk":
        def wrong(q, k, v, chunk_size=16, scale=None, initial_state=None):
            return fn(q, k, v, scale, initial_state, False)
    else:
        raise ValueError(form)
    wrong.__name__ = name
    return wrong


def formula_mistakes(form: str) -> tuple[Mistake, ...]:
    """The mistakes in the formula itself, shared by every form that returns (o, final_state)."""
    m = lambda name, hint, **kw: Mistake(name, as_form(form, core(**kw), name), hint)  # noqa: E731
    out = (
        m("exclusive", EXCLUSIVE, exclusive=True),
        m("non_causal", NON_CAUSAL, causal=False),
        m("reversed", REVERSED, reverse=True),
        m("no_scale", NO_SCALE, scale_as="none"),
        m("ignores_scale", IGNORES_SCALE, scale_as="default"),
    )
    if form == "parallel":
        return out + (m("no_normalizer", NO_NORMALIZER, normalizer=False),)
    out += (
        m("ignores_init", IGNORES_INIT, ignore_init=True),
        m("state_misses_last", STATE_MISSES_LAST, state="misses_last"),
        m("state_overwritten", STATE_OVERWRITTEN, state="overwritten"),
        m("state_no_init", STATE_NO_INIT, state="no_init"),
        m("state_is_init", STATE_IS_INIT, state="is_init"),
        Mistake("final_state None", as_form(form, core(state="none"), "no_state"), says=("final_state is None",)),
        Mistake("state transposed [B,H,V,K]", as_form(form, core(state="transposed"), "transposed"),
                says=("looks transposed",)),
    )
    if form == "recurrent":
        out += (
            m("no_normalizer", NO_NORMALIZER, normalizer=False),
            m("z0_ignored", Z0_IGNORED, ignore_z0=True),
            Mistake("z as fla's [B,1,H,K]", as_form(form, core(state="z_fla"), "z_fla"), says=("[B, 1, H, K]",)),
            Mistake("state with a time axis", as_form(form, core(state="time_axis"), "all_states"),
                    says=("time axis",)),
            Mistake("exclusive and normalized: 0/0 at t=0", as_form(form, _exclusive_unguarded, "exclusive_nan"),
                    says=("NaN at (b=0, t=0, h=0)", "zero normalizer? add eps")),
        )
    return out


def _exclusive_unguarded(q, k, v, scale=None, initial_state=None, normalize=False):
    """Reads S_{t-1}, z_{t-1} and divides without eps: 0/0 at t=0 when normalized."""
    o, state = core(exclusive=True)(q, k, v, scale, initial_state, False)
    if not normalize:
        return core()(q, k, v, scale, initial_state, normalize)
    s = resolve_scale(scale, q.shape[-1])
    kv = torch.einsum("bthk,bthv->bthkv", k.float(), v.float())
    z = k.float().cumsum(1) - k.float()
    o = o.float() / (s * (q.float() * z).sum(-1, keepdim=True))
    S, z_fin = kv.sum(1), k.float().sum(1)
    return o.to(q.dtype), (S, z_fin)


def _z_diagnose(f: Failure) -> str | None:
    """Shape slips specific to the recurrent state."""
    if f.kind == "shape" and f.name.endswith("(z)") and tuple(f.got.shape) == (f.expected.shape[0], 1,
                                                                                 *f.expected.shape[1:]):
        return "fla keeps z as [B, 1, H, K]; the course's normalizer state is [B, H, K] (z.squeeze(1))"
    if f.kind == "shape" and f.name == "final_state" and f.got.dim() == 5:
        return "final_state has a time axis: return only the state after the last token, S_T"
    return None


def _probe(T: int, device: torch.device, **kwargs: Any) -> tuple[tuple, dict]:
    """Inputs of length T with tiny other dims (B = H = 1, K = V = 4): a T×T tensor dominates any linear one."""
    gen = torch.Generator().manual_seed(0)
    q, k = (phi(randn(gen, 1, T, 1, 4)).to(device) for _ in range(2))
    return (q, k, randn(gen, 1, T, 1, 4).to(device)), kwargs


def _parallel_as_recurrent(q, k, v, scale=None, initial_state=None, normalize=False):
    """Right values through the masked T×T matrix of Exercise 2.1: not the recurrent form."""
    s = resolve_scale(scale, q.shape[-1])
    a = s * torch.einsum("bthk,bshk->bhts", q.float(), k.float()).tril()
    S0, z0 = _split(initial_state)
    o = torch.einsum("bhts,bshv->bthv", a, v.float())
    S = torch.einsum("bthk,bthv->bhkv", k.float(), v.float())
    if S0 is not None:
        o, S = o + s * torch.einsum("bthk,bhkv->bthv", q.float(), S0.float()), S + S0.float()
    if normalize:
        z_t = k.float().cumsum(1) + (0 if z0 is None else z0.float()[:, None])
        o = o / (s * (q.float() * z_t).sum(-1, keepdim=True) + EPS)
        return o.to(q.dtype), (S, z_t[:, -1])
    return o.to(q.dtype), S


def _via_refs(q, k, v, scale=None, initial_state=None, normalize=False):
    from course_utils.refs import linear_attn

    return linear_attn.linear_attention(q, k, v, scale=scale, initial_state=initial_state, normalize=normalize)


def _bf16_state(q, k, v, scale=None, initial_state=None, normalize=False):
    """The RNN form with the state kept in the input dtype (bf16 rounding at every one of T additions);
    right otherwise (the normalised form is computed properly)."""
    if normalize:
        return core()(q, k, v, scale, initial_state, normalize)
    s = resolve_scale(scale, q.shape[-1])
    S = q.new_zeros(q.shape[0], q.shape[2], q.shape[3], v.shape[-1]) if initial_state is None else initial_state
    outs = []
    for t in range(q.shape[1]):
        S = S + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(s * torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    return torch.stack(outs, 1), S


BF16_STATE = ("the state loses precision over a long sequence: keep S (and z) in float32 and cast only the "
              "output back to the input dtype — a bf16 state rounds away small updates once it has grown "
              "(fla's kernels accumulate in float32 too)")


RECURRENT = Exercise(
    id="2.2",
    fn_name="recurrent_linear_attention",
    signature=("recurrent_linear_attention(q, k, v, scale=None, initial_state=None, normalize=False) "
               "-> (o, final_state)"),
    cases=lambda device, dtypes: case_list({"K": K_DIM, "V": V_DIM}, [
        {"B": 1, "T": 63, "H": 2},
        {"B": 2, "T": 100, "H": 3, "initial_state": True},
        {"B": 2, "T": 63, "H": 3, "scale": 0.3},
        {"B": 2, "T": 63, "H": 3, "normalize": True},
        {"B": 2, "T": 100, "H": 2, "normalize": True, "initial_state": True},
        {"B": 2, "T": 63, "H": 3, "initial_state": True, "noncontiguous": True},
    ], 1, dtypes, half=[{"B": 2, "T": 100, "H": 2, "initial_state": True},
                         {"B": 1, "T": 2048, "H": 1}]),  # long: a state accumulated in bf16 drifts
    make_inputs=make_qkv,
    expected=reference,
    output=output_node,
    positional=("q", "k", "v"),
    input_layouts=LAYOUTS,
    mistakes=formula_mistakes("recurrent") + (
        Mistake("the T×T parallel form (Exercise 2.1)", as_form("recurrent", _parallel_as_recurrent, "parallel"),
                says=("memory check",)),
        Mistake("calls the course's reference", as_form("recurrent", _via_refs, "via_refs"),
                says=("how check", "course_utils.refs")),
        Mistake("state accumulated in bf16", as_form("recurrent", _bf16_state, "bf16_state"), BF16_STATE,
                options={"device": "cpu", "dtypes": [torch.float32, torch.bfloat16]}),
    ),
    extra_checks=(forbid(), no_quadratic_memory(_probe, what="a T×T matrix (the parallel form)")),
    diagnose=_z_diagnose,
    nan_hint=NORMALIZER_NAN,
)
"""The recurrent form (2.2): the family's base spec; the other forms are registered as variations of it."""
register(RECURRENT)


# ------------------------------------------------------------------------------------------ 2.1 parallel

register(dataclasses.replace(
    RECURRENT,
    id="2.1",
    fn_name="causal_linear_attention_parallel",
    signature="causal_linear_attention_parallel(q, k, v, scale=None, normalize=False) -> o [B, T, H, V]",
    cases=lambda device, dtypes: case_list({"K": K_DIM, "V": V_DIM}, [
        {"B": 1, "T": 63, "H": 2},
        {"B": 2, "T": 100, "H": 3, "scale": 0.3},
        {"B": 2, "T": 63, "H": 3, "normalize": True},
        {"B": 2, "T": 100, "H": 2, "normalize": True, "noncontiguous": True},
        {"B": 2, "T": 63, "H": 2, "grad": True},
    ], 11, dtypes, half={"B": 2, "T": 100, "H": 2}),
    expected=lambda inputs, case: reference(inputs, case)[0],
    output=TensorOut("o", VO_LAYOUT),
    grad_inputs=("q", "k", "v"),
    diagnose=None,
    extra_checks=(forbid(),),
    mistakes=formula_mistakes("parallel") + (
        Mistake("q detached (no gradient)", as_form("parallel", lambda q, k, v, *a: core()(q.detach(), k, v, *a),
                                                    "detached_q"), says=("dq is None",)),
    ),
))


# ------------------------------------------------------------------------------------------ 2.3 step


def step_wrong(name: str, *, exclusive: bool = False, scale_as: str = "given", ignore_state: bool = False,
               in_place: bool = False, returns: str = "right") -> Callable[..., Any]:
    """linear_attention_step(q_t, k_t, v_t, state, scale=None) -> (o_t, new_state) with one mistake.
    returns: "right", "no_state" (new_state None), "hb" (o_t as [H, B, V])."""

    def wrong(q_t, k_t, v_t, state, scale=None):
        s = _scale_as(scale_as, scale, q_t.shape[-1])
        old = torch.zeros_like(state) if ignore_state else state
        kv = k_t.float()[..., None] * v_t.float()[..., None, :]
        if in_place:
            state += kv.to(state.dtype)
            new = state
        else:
            new = old.float() + kv
        o_t = s * torch.einsum("bhk,bhkv->bhv", q_t.float(), old.float() if exclusive else new.float())
        o_t = o_t.to(q_t.dtype)
        return {"right": (o_t, new), "no_state": (o_t, None), "hb": (o_t.transpose(0, 1), new)}[returns]

    wrong.__name__ = name
    return wrong


def _step_inputs(case: Case, device: torch.device) -> dict[str, Any]:
    """The full sequence; the runner feeds it one token at a time. initial_state: zeros unless the case has one."""
    inputs = make_qkv(case, device)
    if "initial_state" not in inputs:
        inputs["initial_state"] = torch.zeros(case["B"], case["H"], K_DIM, V_DIM, device=device, dtype=case.dtype)
    return inputs


def _run_steps(trial: Trial, fn: Callable[..., Any], inputs: dict[str, Any]
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Call the step function token by token, feeding back its own state; stack the outputs."""
    q, k, v, state = inputs["q"], inputs["k"], inputs["v"], inputs["initial_state"]
    kwargs = {"scale": inputs["scale"]} if "scale" in inputs else {}
    B, T, H = q.shape[:3]
    like = (torch.empty(B, H, V_DIM, device=q.device, dtype=q.dtype),
            torch.empty(B, H, K_DIM, V_DIM, device=q.device, dtype=torch.float32))
    node = TupleOut("(o_t, new_state)", (TensorOut("o_t", "BHV"), TensorOut("new_state", STATE_LAYOUT, state=True)))
    name = getattr(fn, "__name__", "step")
    call = f"{name}(q[:, t], k[:, t], v[:, t], state" + (f", scale={kwargs['scale']})" if kwargs else ")")
    # q[:, t] of a [B, T, H, K] tensor is a strided view when B > 1: explain .view() failures
    trial.noncontiguous = trial.noncontiguous or not q[:, 0].is_contiguous()
    outs = []
    for t in range(T):
        args = {"q_t": q[:, t], "k_t": k[:, t], "v_t": v[:, t], "state": state}
        before = {n: x.detach().clone() for n, x in args.items()}
        res = trial.call(fn, tuple(args.values()), kwargs, call, where=f"at step t={t}")
        check_not_mutated(args, before, where=f"at step t={t}")
        check_form(res, node, like, trial, where=f"at step t={t}")
        o_t, state = res
        outs.append(o_t)
    if not outs:
        fail("the sequence is empty")
    return torch.stack(outs, dim=1), state


register(dataclasses.replace(
    RECURRENT,
    id="2.3",
    fn_name="linear_attention_step",
    signature="linear_attention_step(q_t, k_t, v_t, state, scale=None) -> (o_t [B, H, V], new_state [B, H, K, V])",
    cases=lambda device, dtypes: case_list({"K": K_DIM, "V": V_DIM}, [
        {"B": 1, "T": 63, "H": 2},
        {"B": 2, "T": 100, "H": 3, "initial_state": True},
        {"B": 2, "T": 63, "H": 3, "scale": 0.3, "initial_state": True},
    ], 21, dtypes, half={"B": 2, "T": 63, "H": 2, "initial_state": True}),
    make_inputs=_step_inputs,
    output=lambda case: TupleOut("(o, final_state)", (TensorOut("o (o_t stacked over t)", VO_LAYOUT),
                                                      TensorOut("state after the last step", STATE_LAYOUT,
                                                                state=True))),
    positional=(),
    run=_run_steps,
    diagnose=None,
    extra_checks=(forbid(),),
    nan_hint=RECURRENT.nan_hint,
    mistakes=(
        Mistake("reads the state before updating", step_wrong("exclusive", exclusive=True), EXCLUSIVE),
        Mistake("no scale", step_wrong("no_scale", scale_as="none"), NO_SCALE),
        Mistake("ignores the scale argument", step_wrong("ignores_scale", scale_as="default"), IGNORES_SCALE),
        Mistake("ignores its state", step_wrong("forgets", ignore_state=True),
                "each step ignores the state it is given: new_state = state + k_t v_t^T, then read it"),
        Mistake("new_state None", step_wrong("no_state", returns="no_state"), says=("new_state is None",)),
        Mistake("mutates state in place", step_wrong("in_place", in_place=True),
                says=("modified its argument `state`",)),
        Mistake("o_t as [H,B,V]", step_wrong("hb", returns="hb"), says=("looks like [H,B,V]",)),
    ),
))


# ------------------------------------------------------------------------------------------ 2.4 backward


def _loop(q, k, v, scale=None, initial_state=None, normalize=False, detach_state=False):
    """The RNN form token by token (detach_state: the mistake of cutting S from the graph each step)."""
    s = resolve_scale(scale, q.shape[-1])
    B, T, H, K = q.shape
    S = torch.zeros(B, H, K, v.shape[-1], device=q.device) if initial_state is None else initial_state.float()
    outs = []
    for t in range(T):
        S = (S.detach() if detach_state else S) + k[:, t].float()[..., None] * v[:, t].float()[..., None, :]
        outs.append(s * torch.einsum("bhk,bhkv->bhv", q[:, t].float(), S))
    return torch.stack(outs, dim=1).to(q.dtype), S


class _WrongBackward(torch.autograd.Function):
    """Right forward; the backward 'forgets' that the scale multiplies q (dq off by 1/scale)."""

    @staticmethod
    def forward(ctx, q, k, v, S0, scale):
        ctx.save_for_backward(q, k, v, S0)
        ctx.scale = scale
        return core()(q, k, v, scale, S0)

    @staticmethod
    def backward(ctx, do, dS):
        q, k, v, S0 = ctx.saved_tensors
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(True) for t in (q, k, v, S0)]
            out = core()(*leaves[:3], ctx.scale, leaves[3])
            dq, dk, dv, dS0 = torch.autograd.grad(out, leaves, (do, dS))
        return dq / ctx.scale, dk, dv, dS0, None


def _wrong_backward(q, k, v, scale=None, initial_state=None, normalize=False):
    S0 = q.new_zeros(q.shape[0], q.shape[2], q.shape[3], v.shape[-1]) if initial_state is None else initial_state
    return _WrongBackward.apply(q, k, v, S0, resolve_scale(scale, q.shape[-1]))


class _RaisingBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v):
        return core()(q, k, v)

    @staticmethod
    def backward(ctx, do, dS):
        raise ValueError("backward not written yet")


def _raising_backward(q, k, v, scale=None, initial_state=None, normalize=False):
    return _RaisingBackward.apply(q, k, v)


class _SweepsWithAMistake(torch.autograd.Function):
    """Exercise 2.4's two sweeps, vectorised, with one mistake (flags): dq from S_{t-1} instead of S_t
    ("dq_before"), G_t without the current token's q_t do_t^T ("g_exclusive"), the final state's gradient
    ignored ("no_dS")."""

    @staticmethod
    def forward(ctx, q, k, v, S0, scale, mistake):
        ctx.save_for_backward(q, k, v, S0)
        ctx.scale, ctx.mistake = scale, mistake
        return core()(q, k, v, scale, S0)

    @staticmethod
    def backward(ctx, do, dS):
        q, k, v, S0 = (t.float() for t in ctx.saved_tensors)
        s, mistake, do = ctx.scale, ctx.mistake, do.float()
        kv = torch.einsum("bthk,bthv->bthkv", k, v)
        S_t = kv.cumsum(1) + S0[:, None]
        if mistake == "dq_before":
            S_t = S_t - kv
        dq = s * torch.einsum("bthkv,bthv->bthk", S_t, do)
        qdo = s * torch.einsum("bthk,bthv->bthkv", q, do)
        G_t = qdo.flip(1).cumsum(1).flip(1)  # sum over u >= t
        if mistake == "g_exclusive":
            G_t = G_t - qdo
        if mistake != "no_dS":
            G_t = G_t + dS.float()[:, None]
        dk = torch.einsum("bthkv,bthv->bthk", G_t, v)
        dv = torch.einsum("bthkv,bthk->bthv", G_t, k)
        d_init = G_t[:, 0] + (qdo[:, 0] if mistake == "g_exclusive" else 0)
        dtype = ctx.saved_tensors[0].dtype
        return dq.to(dtype), dk.to(dtype), dv.to(dtype), d_init.to(S0.dtype), None, None


def _sweeps_wrong(mistake: str) -> Callable[..., Any]:
    def wrong(q, k, v, scale=None, initial_state=None, normalize=False):
        S0 = q.new_zeros(q.shape[0], q.shape[2], q.shape[3], v.shape[-1]) if initial_state is None \
            else initial_state
        return _SweepsWithAMistake.apply(q, k, v, S0, resolve_scale(scale, q.shape[-1]), mistake)

    wrong.__name__ = f"sweeps_{mistake}"
    return wrong


def _grad_diagnose(f: Failure) -> str | None:
    """A gradient right only at the last steps means the state was cut from the graph inside the loop."""
    if f.kind == "shape":
        return _z_diagnose(f)
    if f.kind != "grad" or f.info.get("layout") not in (QK_LAYOUT, VO_LAYOUT):
        return None
    t_wrong = f.info["wrong"].any(dim=(0, 2, 3)).nonzero().flatten().tolist()
    if t_wrong and t_wrong[-1] < f.info["wrong"].shape[1] - 1:
        return ("the gradient is right for the last tokens only: is the state detached (S.detach(), S.data, "
                "no_grad) inside the loop, so earlier tokens get no gradient through S?")
    return None


def _recurrent(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    return as_form("recurrent", fn, name)


register(dataclasses.replace(
    RECURRENT,
    id="2.4",
    cases=lambda device, dtypes: case_list({"K": K_DIM, "V": V_DIM}, [
        {"B": 1, "T": 63, "H": 2, "grad": True},
        {"B": 2, "T": 100, "H": 3, "initial_state": True, "grad": True},
        {"B": 2, "T": 63, "H": 2, "scale": 0.3, "initial_state": True, "grad": True},
    ], 31, dtypes, half={"B": 2, "T": 63, "H": 2, "initial_state": True, "grad": True}),
    grad_inputs=("q", "k", "v", "initial_state"),
    diagnose=_grad_diagnose,
    forward_note="the forward pass is already wrong (fix exercise 2.2 first):",
    mistakes=tuple(m for m in formula_mistakes("recurrent") if "normal" not in m.name and "z" not in m.name) + (
        Mistake("state detached inside the loop",
                _recurrent(lambda q, k, v, s, i, n: _loop(q, k, v, s, i, detach_state=True), "detached_state"),
                says=("detach",)),
        Mistake("custom backward, dq without the scale", _recurrent(_wrong_backward, "wrong_backward"),
                says=("gradient dq",)),
        Mistake("k detached", _recurrent(lambda q, k, v, *a: core()(q, k.detach(), v, *a), "detached_k"),
                says=("dk is None",)),
        Mistake("initial_state detached", _recurrent(
            lambda q, k, v, s, i, n: core()(q, k, v, s, None if i is None else i.detach(), n), "detached_init"),
            says=("d(initial_state) is None",)),
        Mistake("final_state detached", _recurrent(
            lambda *a: (lambda o, S: (o, S.detach()))(*core()(*a)), "detached_final"),
            says=("final_state does not require grad",)),
        Mistake("under torch.no_grad", _recurrent(torch.no_grad()(lambda *a: core()(*a)), "no_grad"),
                says=("does not require grad",)),
        Mistake("backward raises", _raising_backward,
                says=("backward pass", "ValueError: backward not written yet", "in backward")),
        Mistake("forward already wrong", _recurrent(core(scale_as="none"), "no_scale"),
                says=("fix exercise 2.2 first",)),
        Mistake("forward sweep reads S_{t-1} for dq_t", _sweeps_wrong("dq_before"),
                "dq_t reads the state *including* token t: in the forward sweep add k_t v_t^T to S first, "
                "then dq_t = scale * S_t do_t (the output o_t read S_t)"),
        Mistake("backward sweep misses the current token", _sweeps_wrong("g_exclusive"),
                "dk_t and dv_t must see G_t, which already includes scale * q_t do_t^T (o_t reads S_t, which "
                "holds k_t v_t^T): add the current token to G before reading dk_t, dv_t"),
        Mistake("ignores d_final_state", _sweeps_wrong("no_dS"),
                "the final state's gradient is ignored: the backward sweep starts from G = d_final_state (the "
                "loss also depends on the returned state), not from zeros"),
    ),
))


# ------------------------------------------------------------------------------------------ 3.1 chunkwise

DEFAULT_CHUNK = 16
RAGGED = ("the last, partial chunk is mishandled: T={T} is not a multiple of chunk_size={C}, so the last "
          "chunk has {r} tokens — size the masks and slices from the chunk itself (its length may be < C)")


def _ragged(case: Case) -> str | None:
    T, C = case["T"], case.get("chunk_size", DEFAULT_CHUNK)
    return RAGGED.format(T=T, C=C, r=T % C) if T % C else None


def chunk_wrong(name: str, *, intra: str = "tril", inter: str = "prev", ragged: str = "ok", scale_as: str = "given",
                ignore_init: bool = False, state: str = "right") -> Callable[..., Any]:
    """chunk_linear_attention(q, k, v, chunk_size=16, scale=None, initial_state=None) chunk by chunk, with at
    most the mistakes asked for. intra: "tril" (right), "none" (no causal mask), "strict" (mask hides the
    diagonal), "fixed" (a C×C mask: breaks on a ragged chunk); inter: "prev" (right), "none" (dropped),
    "incl" (the state after this chunk); ragged: "ok", "skip" (the last partial chunk is skipped), "drop"
    (and cut from o), "pad" (o returned at the zero-padded length); state: "right", "none", "misses_last"."""

    def wrong(q, k, v, chunk_size=DEFAULT_CHUNK, scale=None, initial_state=None):
        s = _scale_as(scale_as, scale, q.shape[-1])
        C, dtype = chunk_size, q.dtype
        T = q.shape[1]
        if ragged == "pad":
            q, k, v = (F.pad(x, (0, 0, 0, 0, 0, (-T) % C)) for x in (q, k, v))
        qf, kf, vf = q.float() * s, k.float(), v.float()
        B, Tp, H, K = q.shape
        S = torch.zeros(B, H, K, v.shape[-1], device=q.device) if initial_state is None or ignore_init \
            else initial_state.float()
        outs, S_before_last = [], S
        stop = (Tp // C) * C if ragged in ("skip", "drop") else Tp
        for start in range(0, stop, C):
            qc, kc, vc = qf[:, start:start + C], kf[:, start:start + C], vf[:, start:start + C]
            n = C if intra == "fixed" else qc.shape[1]
            a = torch.einsum("bthk,bshk->bhts", qc, kc)
            if intra != "none":
                a = a * torch.ones(n, n, device=q.device).tril(-1 if intra == "strict" else 0)
            S_next = S + torch.einsum("bthk,bthv->bhkv", kc, vc)
            oc = torch.einsum("bhts,bshv->bthv", a, vc)
            if inter != "none":
                oc = oc + torch.einsum("bthk,bhkv->bthv", qc, S_next if inter == "incl" else S)
            outs.append(oc)
            S_before_last, S = S, S_next
        o = torch.cat(outs, dim=1) if outs else vf[:, :0]
        if ragged == "skip":
            o = torch.cat([o, vf.new_zeros(B, Tp - o.shape[1], H, v.shape[-1])], dim=1)
        S = {"right": S, "none": None, "misses_last": S_before_last}[state]
        return o.to(dtype), S

    wrong.__name__ = name
    return wrong


def _chunk_diagnose(f: Failure) -> str | None:
    """Failures explained by chunk boundaries: a ragged tail, or an error starting at the second chunk."""
    case = f.case
    T, C = case["T"], case.get("chunk_size", DEFAULT_CHUNK)
    ragged = f.trial.exercise.exception_hint(case) if f.trial.exercise.exception_hint else None
    if f.kind == "shape" and f.name == "o" and f.got.dim() == 4 and ragged:
        if f.got.shape[1] == (T // C) * C:
            return ragged + " (your output drops it)"
        if f.got.shape[1] == -(-T // C) * C:
            return f"you return the zero-padded length {f.got.shape[1]}: slice the output back to T={T}"
    if f.kind in ("value", "grad") and (f.info.get("layout") or "").startswith("BT"):
        t_wrong = f.info["wrong"].any(dim=(0, 2, 3)).nonzero().flatten().tolist()
        if t_wrong and ragged and t_wrong[0] >= (T // C) * C:
            return ragged
        if t_wrong and C > 1 and t_wrong[0] == C:
            return (f"chunk 0 (t < {C}) is right and the error starts at the second chunk (t={C}): check the "
                    "inter-chunk state (S of the previous chunks, updated after each chunk)")
    return None


def _chunk_reference(inputs: dict[str, Any], case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    from course_utils.refs import linear_attn

    # On a CPU fla's naive *chunked* form, an independent check of the chunked algebra. On a GPU its fused
    # recurrent kernel: exact in fp32 and compiled in about a second, where the chunk kernel autotunes for a
    # minute per dtype on first use (a student's graded cell would wait that long with nothing on screen).
    mode = "chunk" if inputs["q"].device.type == "cpu" else "recurrent"
    return linear_attn.linear_attention(inputs["q"], inputs["k"], inputs["v"], scale=inputs.get("scale"),
                                        initial_state=inputs.get("initial_state"), normalize=False, mode=mode)


def chunk_mistakes() -> tuple[Mistake, ...]:
    """The chunkwise formula's mistakes, for 3.1 (loop) and 3.3 (all chunks at once)."""
    return formula_mistakes("chunk") + (
        Mistake("intra-chunk mask missing", chunk_wrong("unmasked", intra="none"),
                "intra-chunk scores not masked: inside a chunk only s <= t may be read (tril of the C×C block)"),
        Mistake("intra-chunk mask hides the diagonal", chunk_wrong("strict", intra="strict"),
                "the intra-chunk mask hides the diagonal: keep s <= t (tril(..., 0)); the state is inclusive"),
        Mistake("inter-chunk term missing", chunk_wrong("no_inter", inter="none"),
                "missing the inter-chunk term: each chunk also reads scale * q_t^T S, the state of all previous "
                "chunks (GLA paper §2.2, the chunkwise form)"),
        Mistake("inter-chunk reads the updated state", chunk_wrong("inclusive_inter", inter="incl"),
                "the inter-chunk term reads the state *after* adding this chunk (counted twice): use S from "
                "the previous chunks, then update it"),
        Mistake("final_state misses the last chunk", chunk_wrong("misses_last_chunk", state="misses_last"),
                "final_state misses the last chunk: update S after every chunk, the last one too"),
        Mistake("ragged last chunk skipped", chunk_wrong("skips_ragged", ragged="skip"), _ragged,
                says=("last, partial chunk",)),
        Mistake("ragged last chunk dropped from o", chunk_wrong("drops_tail", ragged="drop"),
                says=("your output drops it",)),
        Mistake("padded length returned", chunk_wrong("padded", ragged="pad"), says=("zero-padded length",)),
        Mistake("one T×T block, chunk_size ignored", _one_chunk, says=("memory check",)),
    )


def _one_chunk(q, k, v, chunk_size=DEFAULT_CHUNK, scale=None, initial_state=None):
    """Right values, but the whole sequence as one chunk: a T×T product whatever chunk_size says."""
    return chunk_wrong("one_chunk")(q, k, v, q.shape[1], scale, initial_state)


CHUNKWISE = dataclasses.replace(
    RECURRENT,
    id="3.1",
    fn_name="chunk_linear_attention",
    signature=("chunk_linear_attention(q, k, v, chunk_size=16, scale=None, initial_state=None) "
               "-> (o, final_state)"),
    cases=lambda device, dtypes: case_list({"K": K_DIM, "V": V_DIM}, [
        {"B": 1, "T": 64, "H": 2},  # whole chunks first: ragged bugs show apart
        {"B": 1, "T": 63, "H": 2},
        {"B": 2, "T": 100, "H": 3, "chunk_size": 7, "initial_state": True},
        {"B": 2, "T": 63, "H": 2, "chunk_size": 1},
        {"B": 2, "T": 100, "H": 2, "chunk_size": 64, "scale": 0.3, "initial_state": True, "noncontiguous": True},
        {"B": 2, "T": 63, "H": 2, "chunk_size": 16, "initial_state": True, "grad": True},
    ], 301, dtypes, half={"B": 2, "T": 100, "H": 2, "chunk_size": 16, "initial_state": True}),
    expected=_chunk_reference,
    grad_inputs=("q", "k", "v", "initial_state"),
    diagnose=_chunk_diagnose,
    exception_hint=_ragged,
    extra_checks=(forbid(), no_quadratic_memory(lambda T, device: _probe(T, device, chunk_size=16),
                                                what="a T×T matrix although chunk_size=16")),
)
"""3.1 and 3.3 compute the same thing (3.3 without a loop over chunks): one spec."""

register(dataclasses.replace(CHUNKWISE, mistakes=chunk_mistakes() + (
    Mistake("mask built from chunk_size", chunk_wrong("fixed_mask", intra="fixed"),
            says=("RuntimeError", "last, partial chunk")),
)))


# ------------------------------------------------------------------------------------------ 3.3 batched


_FEW, _MANY, _LOOP_C = 4, 32, 8  # chunks in the two probes, and their chunk size


def _torch_calls(trial: Trial, fn: Callable[..., Any], n_chunks: int) -> int:
    gen = torch.Generator().manual_seed(330)
    T = n_chunks * _LOOP_C - 3  # ragged, like the graded cases
    q, k = (randn(gen, 1, T, 2, 8).abs().to(trial.device) for _ in range(2))
    v = randn(gen, 1, T, 2, 8).to(trial.device)
    with TorchCalls() as counter, torch.no_grad():
        trial.call(fn, (q, k, v), {"chunk_size": _LOOP_C}, f"{trial.fn_name}(q, k, v, chunk_size={_LOOP_C})",
                   where=f"(loop check, T={T})")
    return counter.calls


def _check_no_chunk_loop(trial: Trial, fn: Callable[..., Any]) -> None:
    """All chunks at once: the number of torch calls must not grow with the number of chunks."""
    few, many = _torch_calls(trial, fn, _FEW), _torch_calls(trial, fn, _MANY)
    if many >= few + (_MANY - _FEW):  # at least one more call per extra chunk: a loop over chunks
        fail(f"loop check: your function makes {few} torch calls for {_FEW} chunks and {many} for {_MANY} chunks "
             f"(chunk_size={_LOOP_C}): it still works chunk by chunk, so its cost grows with T/C launches — "
             "Exercise 3.1 already does that",
             "work on every chunk at once: view the (padded) sequence as [B, N, C, H, D] and let one batched "
             "operation handle all N chunks where 3.1 loops; the state before each chunk is a sum over the "
             "chunks before it (GLA paper §3, materialized chunk states)")


def _ragged_batched(case: Case) -> str | None:
    T, C = case["T"], case.get("chunk_size", DEFAULT_CHUNK)
    if not T % C:
        return None
    return (f"T={T} is not a multiple of chunk_size={C}: pad the sequence with zeros up to a multiple of C "
            "(zero keys and values add nothing to any state), then slice the output back to T")


register(dataclasses.replace(
    CHUNKWISE,
    id="3.3",
    fn_name="chunk_linear_attention_batched",
    signature=("chunk_linear_attention_batched(q, k, v, chunk_size=16, scale=None, initial_state=None) "
               "-> (o, final_state)"),
    exception_hint=_ragged_batched,
    extra_checks=CHUNKWISE.extra_checks + (_check_no_chunk_loop,),
    mistakes=tuple(m for m in chunk_mistakes() if m.name != "ragged last chunk skipped") + (
        Mistake("loops over chunks (Exercise 3.1's answer)", chunk_wrong("chunk_loop"), says=("loop check",)),
    ),
))


# ------------------------------------------------------------------------------------------ 3.4 normalised chunkwise

NORM_Z_RESET = ("z is not carried across chunks: a token's normaliser sums the keys of every earlier token, "
                "z_t = z0 + sum_{s<=t} k_s, not only those of its own chunk; carry z from chunk to chunk as you "
                "carry S (z_[n+1] = z_[n] + K_[n]^T 1)")
NORM_NO_INTRA = ("the normaliser misses the intra-chunk part: besides scale * Q_[n] z_[n] (the chunks before) it "
                 "needs this chunk's keys up to t, the row sums of the masked block ((scale Q_[n] K_[n]^T) * M) 1")
NORM_CHUNK_END = ("the normaliser reads z after the whole chunk, keys s > t included: inside a chunk only s <= t "
                  "count (the masked block's row sums), so z_t differs from token to token")
NORM_SEPARATE = ("the inter- and intra-chunk terms are normalised separately and added: both numerators share one "
                 "denominator, o_t = (inter_t + intra_t) / (scale q_t^T z_[n] + intra row sum_t + eps)")
NORM_NO_SCALE = ("the scale multiplies the numerator only: the denominator is scale * q_t^T z_t + eps (the scale "
                 "cancels, except against eps)")
NORM_EPS_NAN = ("a token whose keys so far are all zero (left padding) has normaliser 0 and numerator 0: 0/0 "
                "gives NaN unless eps is inside the denominator, o_t = num_t / (scale q_t^T z_t + eps) — num / den "
                "+ eps does not help")
NORM_EPS_BOTH = ("eps in the numerator too: where the normaliser is 0 (left padding) the output becomes eps / eps = "
                 "1 instead of 0; add eps to the denominator only")
NORM_Z_FINAL = "the final z misses the last chunk: update z after every chunk, the last one too (z_T = z0 + sum_t k_t)"
NORM_Z0 = "the normaliser ignores initial_state's z0: z_[0] = z0, so every token's z_t = z0 + sum_{s<=t} k_s"


def _left_padded(case: Case, device: torch.device) -> dict[str, Any]:
    """make_qkv's inputs; with left_pad=P the first P keys are zero (padding tokens), so the normaliser of
    those rows is exactly 0 and eps decides the output (0 / (0 + eps) = 0)."""
    inputs = make_qkv(case, device)
    pad = case.get("left_pad", 0)
    if pad:
        k = inputs["k"].clone()
        k[:, :pad] = 0
        inputs["k"] = k
    return inputs


def _norm_chunk_reference(inputs: dict[str, Any], case: Case) -> tuple[Any, Any]:
    from course_utils.refs import linear_attn

    # fla's naive chunked form on a CPU (T padded, the initial state and z added by the course's adapter);
    # on a GPU its fused recurrent kernel, for the same reason as 3.1 (no minute of autotuning per dtype)
    mode = "chunk" if inputs["q"].device.type == "cpu" else "recurrent"
    return linear_attn.linear_attention(inputs["q"], inputs["k"], inputs["v"], scale=inputs.get("scale"),
                                        initial_state=inputs.get("initial_state"),
                                        normalize=bool(inputs.get("normalize", True)), mode=mode)


def norm_chunk_wrong(name: str, *, z: str = "carried", eps: str = "den", den_scale: bool = True,
                     separate: bool = False, z_final: str = "right", use_z0: bool = True,
                     numerator: Callable[..., Any] | None = None, always: bool = False) -> Callable[..., Any]:
    """normalized_chunk_linear_attention(q, k, v, chunk_size=16, scale=None, initial_state=None, normalize=True)
    chunk by chunk, with at most the mistakes asked for. z: "carried" (right), "reset" (this chunk's keys only),
    "prev" (the chunks before only: no intra-chunk part), "chunk_end" (z after the whole chunk); eps: "den"
    (right), "outside" (num / den + eps), "none", "both" ((num + eps) / (den + eps)); den_scale=False: no scale in
    the denominator; separate: inter and intra terms normalised apart; z_final: "right", "misses_last";
    use_z0=False: initial_state's z dropped; numerator: a 3.1 implementation (right by default); always: divides
    even when normalize=False."""
    numer = numerator or chunk_wrong("numerator")

    def wrong(q, k, v, chunk_size=DEFAULT_CHUNK, scale=None, initial_state=None, normalize=True):
        if not (normalize or always):
            return numer(q, k, v, chunk_size, scale, initial_state)
        S0, z0 = _split(initial_state) if normalize else (initial_state, None)
        s = resolve_scale(scale, q.shape[-1])
        C, T = chunk_size, q.shape[1]
        qf, kf, vf = q.float(), k.float(), v.float()
        B, H, K = q.shape[0], q.shape[2], q.shape[3]
        num, S = numer(qf, kf, vf, C, scale, S0)
        zc = torch.zeros(B, H, K, device=q.device) if z0 is None or not use_z0 else z0.float()
        S_run = torch.zeros(B, H, K, v.shape[-1], device=q.device) if S0 is None else S0.float()
        outs, dens, z_before_last = [], [], zc
        for start in range(0, T, C):
            qc, kc, vc = qf[:, start:start + C], kf[:, start:start + C], vf[:, start:start + C]
            intra_z = kc.cumsum(1)  # [B, c, H, K]
            z_t = {"carried": zc[:, None] + intra_z, "reset": intra_z, "prev": zc[:, None].expand_as(intra_z),
                   "chunk_end": (zc + kc.sum(1))[:, None].expand_as(intra_z)}[z]
            dens.append((s if den_scale else 1.0) * (qc * z_t).sum(-1, keepdim=True))
            if separate:  # inter / (q z_[n]) + intra / (intra row sums): two denominators
                a = s * torch.einsum("bthk,bshk->bhts", qc, kc).tril()
                intra_num = torch.einsum("bhts,bshv->bthv", a, vc)
                inter_num = s * torch.einsum("bthk,bhkv->bthv", qc, S_run)
                inter_den = s * (qc * zc[:, None]).sum(-1, keepdim=True)
                outs.append(inter_num / (inter_den + EPS) + intra_num / (a.sum(-1).transpose(1, 2)[..., None] + EPS))
                S_run = S_run + torch.einsum("bthk,bthv->bhkv", kc, vc)
            z_before_last, zc = zc, zc + kc.sum(1)
        den = torch.cat(dens, dim=1)
        if separate:
            o = torch.cat(outs, dim=1)
        else:
            o = {"den": lambda: num / (den + EPS), "outside": lambda: num / den + EPS, "none": lambda: num / den,
                 "both": lambda: (num + EPS) / (den + EPS)}[eps]()
        z_fin = zc if z_final == "right" else z_before_last
        return o.to(q.dtype), (S, z_fin)

    wrong.__name__ = name
    return wrong


def _quadratic_normalizer(q, k, v, chunk_size=DEFAULT_CHUNK, scale=None, initial_state=None, normalize=True):
    """Right values, but the normaliser as the row sums of the whole T×T masked matrix."""
    if not normalize:
        return chunk_wrong("numerator")(q, k, v, chunk_size, scale, initial_state)
    S0, z0 = _split(initial_state)
    s = resolve_scale(scale, q.shape[-1])
    num, S = chunk_wrong("numerator")(q.float(), k.float(), v.float(), chunk_size, scale, S0)
    rows = (s * torch.einsum("bthk,bshk->bhts", q.float(), k.float())).tril().sum(-1).transpose(1, 2)[..., None]
    if z0 is not None:
        rows = rows + s * (q.float() * z0.float()[:, None]).sum(-1, keepdim=True)
    z = k.float().sum(1) + (0 if z0 is None else z0.float())
    return (num / (rows + EPS)).to(q.dtype), (S, z)


def _norm_chunk_diagnose(f: Failure) -> str | None:
    if f.kind == "nan":
        return NORM_EPS_NAN
    return _z_diagnose(f) or _chunk_diagnose(f)


def norm_chunk_mistakes() -> tuple[Mistake, ...]:
    """The normalised chunkwise form's mistakes (3.4): the normaliser's own, then the numerator's and the state's."""
    m = lambda name, hint, **kw: Mistake(name, norm_chunk_wrong(slug_name(name), **kw), hint)  # noqa: E731
    return (
        m("z not carried across chunks", NORM_Z_RESET, z="reset"),
        m("normaliser without the intra-chunk part", NORM_NO_INTRA, z="prev"),
        m("normaliser reads z after the whole chunk", NORM_CHUNK_END, z="chunk_end"),
        m("inter and intra terms normalised separately", NORM_SEPARATE, separate=True),
        m("no scale in the denominator", NORM_NO_SCALE, den_scale=False),
        Mistake("eps outside the division (num / den + eps)", norm_chunk_wrong("eps_outside", eps="outside"),
                says=("NaN at", NORM_EPS_NAN)),
        Mistake("no eps (0/0 on padded tokens)", norm_chunk_wrong("no_eps", eps="none"), says=("NaN at", NORM_EPS_NAN)),
        m("eps in the numerator too", NORM_EPS_BOTH, eps="both"),
        m("initial z0 ignored", NORM_Z0, use_z0=False),
        m("final z misses the last chunk", NORM_Z_FINAL, z_final="misses_last"),
        m("intra-chunk mask missing (numerator)",
          "intra-chunk scores not masked: inside a chunk only s <= t may be read (tril of the C×C block)",
          numerator=chunk_wrong("unmasked", intra="none")),
        m("inter-chunk term missing (numerator)",
          "missing the inter-chunk term: each chunk also reads scale * q_t^T S, the state of all previous chunks "
          "(GLA paper §2.2, the chunkwise form)", numerator=chunk_wrong("no_inter", inter="none")),
        m("numerator ignores initial S", IGNORES_INIT, numerator=chunk_wrong("no_init", ignore_init=True)),
        Mistake("divides even when normalize=False", norm_chunk_wrong("always_normalizes", always=True),
                says=("expected a single tensor",)),
        Mistake("final_state S only, z not returned",
                lambda *a, **kw: (lambda o, st: (o, st[0] if isinstance(st, tuple) else st))(
                    *norm_chunk_wrong("s_only")(*a, **kw)), says=("expected a tuple (S, z)",)),
        Mistake("z as fla's [B,1,H,K]",
                lambda *a, **kw: (lambda o, st: (o, (st[0], st[1].unsqueeze(1)) if isinstance(st, tuple) else st))(
                    *norm_chunk_wrong("z_fla")(*a, **kw)), says=("[B, 1, H, K]",)),
        Mistake("normaliser from the T×T matrix", _quadratic_normalizer, says=("memory check",)),
    )


def slug_name(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text.lower()).strip("_")


NORMALIZED_CHUNKWISE = dataclasses.replace(
    CHUNKWISE,
    id="3.4",
    fn_name="normalized_chunk_linear_attention",
    signature=("normalized_chunk_linear_attention(q, k, v, chunk_size=16, scale=None, initial_state=None, "
               "normalize=True) -> (o, (S, z)), or (o, S) when normalize=False"),
    cases=lambda device, dtypes: case_list({"K": K_DIM, "V": V_DIM}, [
        {"B": 1, "T": 64, "H": 2, "normalize": True},
        {"B": 2, "T": 100, "H": 3, "chunk_size": 7, "normalize": True, "initial_state": True},
        {"B": 2, "T": 63, "H": 2, "chunk_size": 16, "normalize": True, "left_pad": 5},
        {"B": 2, "T": 63, "H": 2, "chunk_size": 1, "normalize": True},
        {"B": 2, "T": 100, "H": 2, "chunk_size": 64, "scale": 0.3, "normalize": True, "initial_state": True,
         "noncontiguous": True},
        {"B": 2, "T": 63, "H": 2, "chunk_size": 16, "normalize": False, "initial_state": True},
        {"B": 2, "T": 63, "H": 2, "chunk_size": 16, "normalize": True, "initial_state": True, "grad": True},
    ], 341, dtypes, half={"B": 2, "T": 100, "H": 2, "chunk_size": 16, "normalize": True, "initial_state": True}),
    make_inputs=_left_padded,
    expected=_norm_chunk_reference,
    diagnose=_norm_chunk_diagnose,
    nan_hint=NORM_EPS_NAN,
    mistakes=norm_chunk_mistakes(),
)
"""3.4: Exercise 3.1 with the normaliser, z carried from chunk to chunk beside S (Katharopoulos et al. 2020,
Eq. 8; the chunkwise form of GLA paper §2.2 applied to z, the state of the same recurrence with v_t = 1)."""
register(NORMALIZED_CHUNKWISE)
