"""Exercise specs of Lab 02 (causal linear attention: the parallel form and the RNN form).

q and k arrive already feature-mapped; the expected values come from course_utils.refs.linear_attn
(fla's linear attention: naive recurrent form on CPU, chunk kernel on GPU).
"""

from __future__ import annotations

from typing import Any

import torch

from course_utils.conventions import default_scale
from course_utils.exercises.common import bthd, feature_map, generator, half_dtype_cases, linear_attention_cumsum
from course_utils.grading import (
    Alt,
    Case,
    Exercise,
    Failure,
    Student,
    TensorOut,
    TupleOut,
    check_not_mutated,
    fail,
    randn,
    register,
)

K_DIM, V_DIM = 16, 32  # K != V so that a transposed state shows in its shape
LAYOUTS = {"q": "BTHK", "k": "BTHK", "v": "BTHV", "initial_state": "BHKV", "state": "BHKV"}
NORMALIZER_NAN = "dividing by a zero normalizer? add eps to the denominator"

# Hints shared by 2.1-2.4 and lab 03.
NO_SCALE = "missing scale? o_t = scale * q_t^T S_t with scale = K**-0.5 when scale=None"
IGNORES_SCALE = "ignores the scale argument: use it when given, K**-0.5 only when scale is None"
EXCLUSIVE = ("state updated after reading the output? The state is inclusive: add k_t v_t^T to S before "
             "o_t = scale q_t^T S_t, so a token attends to itself")
NON_CAUSAL = "non-causal: did you mask future positions? o_t may only read tokens s <= t"
REVERSED = "reversed time: o_t reads the tokens s >= t; the recurrence runs forward, t = 0 .. T-1"
IGNORES_INIT = "ignores initial_state? start the recurrence from S = initial_state (zeros only when None)"
NO_NORMALIZER = "missing normalizer: with normalize=True divide by scale * q_t^T z_t, z_t = z_{t-1} + k_t"
STATE_NO_INIT = "final_state ignores initial_state: S_T = initial_state + sum_t k_t v_t^T"
STATE_MISSES_LAST = "final_state misses the last token: return S after adding k_{T-1} v_{T-1}^T"
STATE_IS_INIT = "final_state equals initial_state: the state is never updated, or you return the wrong variable"
STATE_OVERWRITTEN = "the state is overwritten, not accumulated: S = S + k_t v_t^T"


def _is_normalized(case: Case) -> bool:
    return bool(case.get("normalize"))


def output_node(case: Case) -> TupleOut:
    """(o, final_state); final_state is (S, z) when normalize=True."""
    o = TensorOut("o", "BTHV")
    if _is_normalized(case):
        state = TupleOut("final_state", (TensorOut("final_state[0] (S)", "BHKV", state=True),
                                         TensorOut("final_state[1] (z)", "BHK", state=True)))
    else:
        state = TensorOut("final_state", "BHKV", state=True)
    return TupleOut("(o, final_state)", (o, state))


def make_qkv(case: Case, device: torch.device) -> dict[str, Any]:
    """q, k (positive features when normalize=True), v, and the optional arguments the case passes."""
    gen = generator(case)
    q, k = bthd(gen, case, K_DIM, device), bthd(gen, case, K_DIM, device)
    v = bthd(gen, case, V_DIM, device)
    if _is_normalized(case):  # a normalised form needs positive features (positive denominators)
        q, k = feature_map(q), feature_map(k)
    inputs: dict[str, Any] = {"q": q, "k": k, "v": v}
    if "scale" in case.params:
        inputs["scale"] = case["scale"]
    if case.get("initial_state"):
        B, H = case["B"], case["H"]
        S0 = (0.5 * randn(gen, B, H, K_DIM, V_DIM)).to(device, case.dtype)
        if _is_normalized(case):
            z0 = feature_map(randn(gen, B, H, K_DIM)).to(device, case.dtype)
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


def _scale(inputs: dict[str, Any]) -> float:
    s = inputs.get("scale")
    return default_scale(inputs["q"].shape[-1]) if s is None else s


def _S0z0(inputs: dict[str, Any]) -> tuple[Any, Any]:
    init = inputs.get("initial_state")
    if isinstance(init, tuple):
        return init
    return init, None


def recurrent_alternatives(inputs: dict[str, Any], case: Case, expected: Any) -> list[Alt]:
    """Outputs of the usual mistakes in causal linear attention (o and final_state)."""
    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    scale, normalize = _scale(inputs), bool(inputs.get("normalize", False))
    S0, z0 = _S0z0(inputs)
    o_name = "o"
    S_name = "final_state[0] (S)" if normalize else "final_state"

    def la(**kw: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        args = dict(S0=S0, z0=z0, normalize=normalize) | kw
        return linear_attention_cumsum(q, k, v, scale, **args)

    o, S, _ = la()
    alts = [
        Alt(EXCLUSIVE, {o_name: la(exclusive=True)[0]}),
        Alt(NON_CAUSAL, {o_name: la(causal=False)[0]}),
        Alt(REVERSED, {o_name: la(reverse=True)[0]}),
        Alt(STATE_MISSES_LAST, {S_name: S - torch.einsum("bhk,bhv->bhkv", k[:, -1].float(), v[:, -1].float())}),
        Alt(STATE_OVERWRITTEN, {S_name: torch.einsum("bhk,bhv->bhkv", k[:, -1].float(), v[:, -1].float())}),
    ]
    if not normalize:
        alts.append(Alt(NO_SCALE, {o_name: o / scale}))
        if "scale" in inputs:
            alts.append(Alt(IGNORES_SCALE, {o_name: o / scale * default_scale(q.shape[-1])}))
    else:
        alts.append(Alt(NO_NORMALIZER, {o_name: la(normalize=False)[0]}))
        alts.append(Alt(NO_NORMALIZER + " (and the scale)", {o_name: la(normalize=False)[0] / scale}))
    if S0 is not None:
        o_ni, S_ni, _ = la(S0=None, z0=None)
        alts.append(Alt(IGNORES_INIT, {o_name: o_ni}))
        alts.append(Alt(STATE_NO_INIT, {S_name: S_ni}))
        alts.append(Alt(STATE_IS_INIT, {S_name: S0.float()}))
        if normalize:
            alts.append(Alt("the normalizer ignores initial_state's z: z_t = z0 + sum_{s<=t} k_s",
                            {o_name: la(z0=torch.zeros_like(z0))[0]}))
    return alts


def diagnose(f: Failure) -> str | None:
    """Shape slips specific to the recurrent state."""
    if f.kind == "shape" and f.name.endswith("(z)") and tuple(f.got.shape) == (f.expected.shape[0], 1,
                                                                                 *f.expected.shape[1:]):
        return "fla keeps z as [B, 1, H, K]; the course's normalizer state is [B, H, K] (z.squeeze(1))"
    if f.kind == "shape" and f.name == "final_state" and f.got.dim() == 5:
        return "final_state has a time axis: return only the state after the last token, S_T"
    return None


def _cases(device: torch.device, dtypes: list[torch.dtype], normalized: bool = True) -> list[Case]:
    base = {"K": K_DIM, "V": V_DIM, "dtype": torch.float32}
    cases = [
        Case({"B": 1, "T": 63, "H": 2, **base}, seed=1),
        Case({"B": 2, "T": 100, "H": 3, **base, "initial_state": True}, seed=2),
        Case({"B": 2, "T": 63, "H": 3, **base, "scale": 0.3}, seed=3),
    ]
    if normalized:
        cases += [
            Case({"B": 2, "T": 63, "H": 3, **base, "normalize": True}, seed=4),
            Case({"B": 2, "T": 100, "H": 2, **base, "normalize": True, "initial_state": True}, seed=5),
        ]
    cases.append(Case({"B": 2, "T": 63, "H": 3, **base, "initial_state": True, "noncontiguous": True}, seed=6))
    cases += half_dtype_cases(dtypes, {"B": 2, "T": 100, "H": 2, "K": K_DIM, "V": V_DIM,
                                       "initial_state": True}, seed=7)
    return cases


# ------------------------------------------------------------------------------------------------ 2.1


def _parallel_cases(device: torch.device, dtypes: list[torch.dtype]) -> list[Case]:
    base = {"K": K_DIM, "V": V_DIM, "dtype": torch.float32}
    return [
        Case({"B": 1, "T": 63, "H": 2, **base}, seed=11),
        Case({"B": 2, "T": 100, "H": 3, **base, "scale": 0.3}, seed=12),
        Case({"B": 2, "T": 63, "H": 3, **base, "normalize": True}, seed=13),
        Case({"B": 2, "T": 100, "H": 2, **base, "normalize": True, "noncontiguous": True}, seed=14),
        Case({"B": 2, "T": 63, "H": 2, **base}, seed=15, grad=True),
        *half_dtype_cases(dtypes, {"B": 2, "T": 100, "H": 2, "K": K_DIM, "V": V_DIM}, seed=16),
    ]


def _o_only(inputs: dict[str, Any], case: Case) -> torch.Tensor:
    return reference(inputs, case)[0]


def _parallel_alternatives(inputs: dict[str, Any], case: Case, expected: Any) -> list[Alt]:
    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    scale, normalize = _scale(inputs), bool(inputs.get("normalize", False))
    la = lambda **kw: linear_attention_cumsum(q, k, v, scale, **(dict(normalize=normalize) | kw))[0]
    alts = [
        Alt("the mask hides the diagonal (tril(..., diagonal=-1)): a token attends to itself, s <= t",
            {"o": la(exclusive=True)}),
        Alt(NON_CAUSAL.replace("did you", "did you apply the causal mask to the T×T matrix and"),
            {"o": la(causal=False)}),
        Alt("the mask keeps the future, not the past: use torch.tril (s <= t), not triu",
            {"o": la(reverse=True)}),
    ]
    if normalize:
        alts.append(Alt(NO_NORMALIZER.replace("z_t = z_{t-1} + k_t", "i.e. by the masked row sums of "
                                              "scale * Q K^T"), {"o": la(normalize=False)}))
        alts.append(Alt(NO_NORMALIZER + " (and the scale)", {"o": la(normalize=False) / scale}))
    else:
        alts.append(Alt(NO_SCALE.replace("o_t = scale * q_t^T S_t", "A = scale * Q K^T"),
                        {"o": la() / scale}))
        if "scale" in inputs:
            alts.append(Alt(IGNORES_SCALE, {"o": la() / scale * default_scale(q.shape[-1])}))
    return alts


register(Exercise(
    id="2.1",
    fn_name="causal_linear_attention_parallel",
    signature="causal_linear_attention_parallel(q, k, v, scale=None, normalize=False) -> o [B, T, H, V]",
    cases=_parallel_cases,
    make_inputs=make_qkv,
    expected=_o_only,
    output=TensorOut("o", "BTHV"),
    positional=("q", "k", "v"),
    input_layouts=LAYOUTS,
    grad_inputs=("q", "k", "v"),
    alternatives=_parallel_alternatives,
    nan_hint=NORMALIZER_NAN,
))


# ------------------------------------------------------------------------------------------------ 2.2

register(Exercise(
    id="2.2",
    fn_name="recurrent_linear_attention",
    signature=("recurrent_linear_attention(q, k, v, scale=None, initial_state=None, normalize=False) "
               "-> (o, final_state)"),
    cases=_cases,
    make_inputs=make_qkv,
    expected=reference,
    output=output_node,
    positional=("q", "k", "v"),
    input_layouts=LAYOUTS,
    alternatives=recurrent_alternatives,
    diagnose=diagnose,
    nan_hint=NORMALIZER_NAN,
))


# ------------------------------------------------------------------------------------------------ 2.3


def _step_inputs(case: Case, device: torch.device) -> dict[str, Any]:
    """The full sequence; the runner feeds it one token at a time. initial_state: zeros unless the case has one."""
    inputs = make_qkv(case, device)
    if "initial_state" not in inputs:
        B, H = case["B"], case["H"]
        inputs["initial_state"] = torch.zeros(B, H, K_DIM, V_DIM, device=device, dtype=case.dtype)
    return inputs


def _run_steps(student: Student, inputs: dict[str, Any], case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    """Call linear_attention_step token by token, feeding back its own state; stack the outputs."""
    q, k, v, state = inputs["q"], inputs["k"], inputs["v"], inputs["initial_state"]
    kwargs = {"scale": inputs["scale"]} if "scale" in inputs else {}
    B, T, H = q.shape[:3]
    like = (torch.empty(B, H, V_DIM, device=q.device, dtype=q.dtype),
            torch.empty(B, H, K_DIM, V_DIM, device=q.device, dtype=torch.float32))
    node = TupleOut("(o_t, new_state)", (TensorOut("o_t", "BHV"), TensorOut("new_state", "BHKV", state=True)))
    call = f"{student.name}(q[:, t], k[:, t], v[:, t], state" + (f", scale={kwargs['scale']})" if kwargs else ")")
    # q[:, t] of a [B, T, H, K] tensor is a strided view when B > 1: explain .view() failures
    student.noncontiguous = student.noncontiguous or not q[:, 0].is_contiguous()
    outs = []
    for t in range(T):
        args = {"q_t": q[:, t], "k_t": k[:, t], "v_t": v[:, t], "state": state}
        before = {n: x.detach().clone() for n, x in args.items()}
        res = student.call(tuple(args.values()), kwargs, call, where=f"at step t={t}")
        check_not_mutated(args, before, where=f"at step t={t}")
        student.check_form(res, node, like, where=f"at step t={t}")
        o_t, state = res
        outs.append(o_t)
    if not outs:
        fail("the sequence is empty")
    return torch.stack(outs, dim=1), state


def _step_cases(device: torch.device, dtypes: list[torch.dtype]) -> list[Case]:
    base = {"K": K_DIM, "V": V_DIM, "dtype": torch.float32}
    return [
        Case({"B": 1, "T": 63, "H": 2, **base}, seed=21),
        Case({"B": 2, "T": 100, "H": 3, **base, "initial_state": True}, seed=22),
        Case({"B": 2, "T": 63, "H": 3, **base, "scale": 0.3, "initial_state": True}, seed=23),
        *half_dtype_cases(dtypes, {"B": 2, "T": 63, "H": 2, "K": K_DIM, "V": V_DIM, "initial_state": True},
                          seed=24),
    ]


def _step_output(case: Case) -> TupleOut:
    return TupleOut("(o, final_state)", (TensorOut("o (o_t stacked over t)", "BTHV"),
                                         TensorOut("state after the last step", "BHKV", state=True)))


def _step_alternatives(inputs: dict[str, Any], case: Case, expected: Any) -> list[Alt]:
    alts = recurrent_alternatives(inputs, case, expected)
    q, k, v = inputs["q"].float(), inputs["k"].float(), inputs["v"].float()
    own = _scale(inputs) * torch.einsum("bthk,bthk->bth", q, k)[..., None] * v  # o_t from k_t v_t^T alone
    alts.append(Alt("each step ignores the state it is given: new_state = state + k_t v_t^T, then read it",
                    {"o": own}))
    rename = {"o": "o (o_t stacked over t)", "final_state": "state after the last step"}
    return [Alt(a.hint, {rename.get(n, n): x for n, x in a.values.items()}) for a in alts]


register(Exercise(
    id="2.3",
    fn_name="linear_attention_step",
    signature="linear_attention_step(q_t, k_t, v_t, state, scale=None) -> (o_t [B, H, V], new_state [B, H, K, V])",
    cases=_step_cases,
    make_inputs=_step_inputs,
    expected=reference,
    output=_step_output,
    input_layouts=LAYOUTS,
    run=_run_steps,
    alternatives=_step_alternatives,
))


# ------------------------------------------------------------------------------------------------ 2.4


def _grad_cases(device: torch.device, dtypes: list[torch.dtype]) -> list[Case]:
    base = {"K": K_DIM, "V": V_DIM, "dtype": torch.float32}
    return [
        Case({"B": 1, "T": 63, "H": 2, **base}, seed=31, grad=True),
        Case({"B": 2, "T": 100, "H": 3, **base, "initial_state": True}, seed=32, grad=True),
        Case({"B": 2, "T": 63, "H": 2, **base, "scale": 0.3, "initial_state": True}, seed=33, grad=True),
        *[Case({**c.params, "initial_state": True}, seed=c.seed, grad=True)
          for c in half_dtype_cases(dtypes, {"B": 2, "T": 63, "H": 2, "K": K_DIM, "V": V_DIM}, seed=34)],
    ]


def _grad_diagnose(f: Failure) -> str | None:
    """A gradient right only at the last steps means the state was cut from the graph inside the loop."""
    if f.kind != "grad" or f.info.get("layout") not in ("BTHK", "BTHV"):
        return None
    wrong = f.info["wrong"]
    t_wrong = wrong.any(dim=(0, 2, 3)).nonzero().flatten().tolist()
    T = wrong.shape[1]
    if t_wrong and t_wrong[-1] < T - 1:
        return ("the gradient is right for the last tokens only: is the state detached (S.detach(), S.data, "
                "no_grad) inside the loop, so earlier tokens get no gradient through S?")
    return None


register(Exercise(
    id="2.4",
    fn_name="recurrent_linear_attention",
    signature=("recurrent_linear_attention(q, k, v, scale=None, initial_state=None, normalize=False) "
               "-> (o, final_state)"),
    cases=_grad_cases,
    make_inputs=make_qkv,
    expected=reference,
    output=output_node,
    positional=("q", "k", "v"),
    input_layouts=LAYOUTS,
    grad_inputs=("q", "k", "v", "initial_state"),
    alternatives=recurrent_alternatives,
    diagnose=_grad_diagnose,
    forward_note="the forward pass is already wrong (fix exercise 2.2 first):",
))
