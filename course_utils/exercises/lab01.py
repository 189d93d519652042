"""Exercise specs of Lab 01 (the kernel trick): softmax attention, linear attention in its quadratic and
associative forms, and two random-feature maps.

Expected values: course_utils.refs.attention / refs.linear_attn; the feature maps are graded against
their definitions (no library ships them in the course's form).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from course_utils.conventions import default_scale
from course_utils.exercises.common import bthd, feature_map, generator, half_dtype_cases
from course_utils.grading import Alt, Case, Exercise, Failure, Student, TensorOut, fail, randn, register

K_DIM, V_DIM = 16, 32
LAYOUTS = {"q": "BTHK", "k": "BTHK", "v": "BTHV", "x": "BTHD"}

NON_CAUSAL = "non-causal: did you mask future positions (s > t)? causal=True was asked"
CAUSAL_WHEN_NOT = "causal mask applied although causal=False: every query sees every key"


def _qkv(case: Case, device: torch.device) -> dict[str, Any]:
    gen = generator(case)
    q, k = bthd(gen, case, K_DIM, device), bthd(gen, case, K_DIM, device)
    inputs: dict[str, Any] = {"q": q, "k": k, "v": bthd(gen, case, V_DIM, device)}
    for name in ("causal", "scale"):
        if name in case.params:
            inputs[name] = case[name]
    return inputs


def _attention_cases(causal: bool | None, grad: bool = True):
    """causal=None: cases for both values of the flag; False/True: the flag is not an argument."""

    def cases(device: torch.device, dtypes: list[torch.dtype]) -> list[Case]:
        base = {"K": K_DIM, "V": V_DIM, "dtype": torch.float32}
        flag = (lambda c: {"causal": c}) if causal is None else (lambda c: {})
        out = [
            Case({"B": 1, "T": 63, "H": 2, **base, **flag(False)}, seed=101),
            Case({"B": 2, "T": 100, "H": 3, **base, **flag(True)}, seed=102),
            Case({"B": 2, "T": 63, "H": 3, **base, **flag(True), "noncontiguous": True}, seed=103),
            Case({"B": 2, "T": 100, "H": 2, **base, **flag(False), "noncontiguous": True}, seed=104),
        ]
        if grad:
            out.append(Case({"B": 2, "T": 63, "H": 2, **base, **flag(True)}, seed=105, grad=True))
        return out + half_dtype_cases(dtypes, {"B": 2, "T": 100, "H": 2, "K": K_DIM, "V": V_DIM,
                                               **flag(True)}, seed=106)

    return cases


# ------------------------------------------------------------------------------------------------ 1.1


def _softmax_cases(device: torch.device, dtypes: list[torch.dtype]) -> list[Case]:
    cases = _attention_cases(None)(device, dtypes)
    # one case with an explicit scale (the others exercise the default K**-0.5)
    cases.insert(2, Case({**cases[1].params, "scale": 0.3}, seed=107))
    return cases


def _softmax_reference(inputs: dict[str, Any], case: Case) -> torch.Tensor:
    from course_utils.refs import attention

    return attention.softmax_attention(inputs["q"], inputs["k"], inputs["v"], causal=inputs.get("causal", False),
                                       scale=inputs.get("scale"))


def softmax_variant(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool,
                    strict: bool = False, axis: int = -1, mask_after: bool = False) -> torch.Tensor:
    """Softmax attention with a mistake: strict mask (no diagonal), softmax over axis, masking after softmax.

    q, k: [B, T, H, K]   v: [B, T, H, V]   returns [B, T, H, V] in float32
    """
    s = scale * torch.einsum("bthk,bshk->bhts", q.float(), k.float())
    T = q.shape[1]
    keep = torch.ones(T, T, dtype=torch.bool, device=q.device).tril(-1 if strict else 0)
    if causal and not mask_after:
        s = s.masked_fill(~keep, float("-inf"))
    p = torch.softmax(s, dim=axis)
    if causal and mask_after:
        p = p * keep
    return torch.einsum("bhts,bshv->bthv", torch.nan_to_num(p), v.float())


def _softmax_alternatives(inputs: dict[str, Any], case: Case, expected: Any) -> list[Alt]:
    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    causal = bool(inputs.get("causal", False))
    default = default_scale(q.shape[-1])
    scale = inputs.get("scale") or default
    sv = lambda **kw: softmax_variant(q, k, v, **(dict(scale=scale, causal=causal) | kw))
    alts = [
        Alt("missing scale? the scores are scale * q_t . k_s with scale = K**-0.5 when scale=None",
            {"o": sv(scale=1.0)}),
        Alt("the scale is applied twice (or as 1/K): scale = K**-0.5 multiplies q . k once",
            {"o": sv(scale=scale * scale)}),
        Alt("softmax over the wrong axis: normalise over the keys, the last axis of the [T_q, T_k] scores",
            {"o": sv(axis=-2)}),
    ]
    if "scale" in inputs:
        alts.append(Alt("ignores the scale argument: use it when given, K**-0.5 only when scale is None",
                        {"o": sv(scale=default)}))
    if causal:
        alts += [
            Alt(NON_CAUSAL + " — set the scores of s > t to -inf before the softmax", {"o": sv(causal=False)}),
            Alt("the mask also hides the diagonal: a token attends to itself (keep s <= t, tril(..., 0))",
                {"o": sv(strict=True)}),
            Alt("masked after the softmax: the kept weights no longer sum to 1; set scores to -inf *before* "
                "the softmax", {"o": sv(mask_after=True)}),
        ]
    else:
        alts.append(Alt(CAUSAL_WHEN_NOT, {"o": sv(causal=True)}))
    return alts


register(Exercise(
    id="1.1",
    fn_name="softmax_attention",
    signature="softmax_attention(q, k, v, causal=False, scale=None) -> o [B, T, H, V]",
    cases=_softmax_cases,
    make_inputs=_qkv,
    expected=_softmax_reference,
    output=TensorOut("o", "BTHV"),
    positional=("q", "k", "v"),
    input_layouts=LAYOUTS,
    grad_inputs=("q", "k", "v"),
    alternatives=_softmax_alternatives,
    nan_hint="a fully masked row (all -inf) gives NaN; or exp overflow: subtract the row max first",
))


# ------------------------------------------------------------------------------------------------ 1.2


def _linear_reference(inputs: dict[str, Any], case: Case) -> torch.Tensor:
    """Normalised linear attention on phi(q), phi(k) with phi = elu + 1 (refs take mapped q, k)."""
    from course_utils.refs import attention, linear_attn

    fq, fk, v = feature_map(inputs["q"]), feature_map(inputs["k"]), inputs["v"]
    if inputs.get("causal", False):
        # fla's fused recurrent kernel on a GPU: exact in fp32 and compiled in about a second, where the
        # chunk kernel autotunes for a minute per dtype on first use (a long wait on a student's T4).
        return linear_attn.linear_attention(fq, fk, v, normalize=True, mode="recurrent")[0]
    return attention.linear_attention_noncausal(fq, fk, v, normalize=True)


def linear_variant(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, phi: Any = feature_map,
                   normalize: bool = True, strict: bool = False) -> torch.Tensor:
    """Quadratic-form linear attention with a mistake (other feature map, no normaliser, strict mask)."""
    fq, fk = phi(q.float()), phi(k.float())
    a = torch.einsum("bthk,bshk->bhts", fq, fk)
    if causal:
        T = q.shape[1]
        a = a * torch.ones(T, T, device=q.device).tril(-1 if strict else 0)
    o = torch.einsum("bhts,bshv->bthv", a, v.float())
    if normalize:
        o = o / (a.sum(-1).transpose(1, 2).unsqueeze(-1) + 1e-6)
    return o


def _linear_alternatives(inputs: dict[str, Any], case: Case, expected: Any) -> list[Alt]:
    q, k, v = inputs["q"], inputs["k"], inputs["v"]
    causal = bool(inputs.get("causal", False))
    lv = lambda **kw: linear_variant(q, k, v, **(dict(causal=causal) | kw))
    alts = [
        Alt("missing normalizer: divide by phi(q_i)^T sum_j phi(k_j) (+ eps)", {"o": lv(normalize=False)}),
        Alt("the feature map is missing: apply phi(x) = elu(x) + 1 to q and k inside the function",
            {"o": lv(phi=lambda x: x)}),
        Alt("phi(x) = elu(x) + 1: the +1 is missing (features must be positive)",
            {"o": lv(phi=torch.nn.functional.elu)}),
    ]
    if causal:
        alts += [Alt(NON_CAUSAL + " — multiply phi(Q) phi(K)^T by a lower-triangular mask",
                     {"o": lv(causal=False)}),
                 Alt("the mask also hides the diagonal: keep s <= t (tril(..., 0))", {"o": lv(strict=True)})]
    else:
        alts.append(Alt(CAUSAL_WHEN_NOT if "causal" in inputs else
                        "causal: this exercise is the non-causal (bidirectional) form, every query reads all "
                        "keys", {"o": lv(causal=True)}))
    return alts


# 1.2a (quadratic form) and 1.2b (associative form) compute the same thing: same reference and diagnoses
LINEAR_SPEC = dict(
    make_inputs=_qkv,
    expected=_linear_reference,
    output=TensorOut("o", "BTHV"),
    positional=("q", "k", "v"),
    input_layouts=LAYOUTS,
    grad_inputs=("q", "k", "v"),
    alternatives=_linear_alternatives,
    nan_hint="dividing by a zero normalizer? add eps to the denominator (and check phi(x) = elu(x) + 1 > 0)",
)

register(Exercise(
    id="1.2a",
    fn_name="linear_attention_quadratic",
    signature="linear_attention_quadratic(q, k, v, causal=False, eps=1e-6) -> o [B, T, H, V]",
    cases=_attention_cases(None),
    **LINEAR_SPEC,
))


_BIG_T, _SMALL_D = 512, 8


def _check_linear_cost(student: Student, device: torch.device) -> None:
    """The associative form must not build the T×T matrix: count its matmul FLOPs at T=512, d=8."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (randn(gen, 1, _BIG_T, 1, _SMALL_D).to(device) for _ in range(3))
    with FlopCounterMode(display=False) as counter:
        student.call((q, k, v), {}, f"{student.name}(q, k, v)", where=f"(cost check, T={_BIG_T})")
    flops = counter.get_total_flops()
    quadratic = 2 * _BIG_T * _BIG_T * _SMALL_D
    if flops >= quadratic // 4:
        fail(f"cost check: at T={_BIG_T}, d={_SMALL_D} your function does {flops:,} matmul FLOPs; forming "
             f"phi(Q) phi(K)^T alone costs {quadratic:,} (O(T^2 d)) — the associative form needs ~"
             f"{4 * _BIG_T * _SMALL_D * _SMALL_D:,} (O(T d^2))",
             "compute phi(K)^T V first (a [d, d_v] matrix per head), then phi(Q) @ (phi(K)^T V): that is the "
             "point of associativity (Katharopoulos et al. 2020, §3.2)")


register(Exercise(
    id="1.2b",
    fn_name="linear_attention_associative",
    signature="linear_attention_associative(q, k, v, eps=1e-6) -> o [B, T, H, V]",
    cases=_attention_cases(False),
    extra_checks=(_check_linear_cost,),
    **LINEAR_SPEC,
))


# ------------------------------------------------------------------------------------------------ 1.3

_M = 24  # random features; != D so that a contraction over the wrong axis fails loudly


def _feature_cases(device: torch.device, dtypes: list[torch.dtype]) -> list[Case]:
    base = {"D": 16, "M": _M, "dtype": torch.float32}
    return [
        Case({"B": 1, "T": 63, "H": 2, **base}, seed=131),
        Case({"T": 100, **base}, seed=132),  # x may have any leading dims: [..., D]
        Case({"B": 2, "T": 63, "H": 3, **base, "M": 40, "noncontiguous": True}, seed=133),
        Case({"B": 2, "T": 100, "H": 2, **base}, seed=134, grad=True),
        *half_dtype_cases(dtypes, {"B": 2, "T": 63, "H": 2, **base}, seed=135),
    ]


def _feature_inputs(case: Case, device: torch.device) -> dict[str, Any]:
    """x already scaled by D**-0.25 (the caller's job); omega [D, M] standard normal."""
    gen = generator(case)
    D = case["D"]
    if "B" in case.params:
        x = bthd(gen, case, D, device) * D**-0.25
    else:
        x = (randn(gen, case["T"], D) * D**-0.25).to(device, case.dtype)
    omega = randn(gen, D, case["M"]).to(device, case.dtype)
    return {"x": x, "omega": omega}


def _feature_output(case: Case) -> TensorOut:
    return TensorOut("phi", "BTHM" if "B" in case.params else "TM")


def favor_variant(x: torch.Tensor, omega: torch.Tensor, sq: float = 0.5, norm: float = 0.5) -> torch.Tensor:
    """exp(x omega - sq * |x|^2) / M**norm in float32 (the definition is sq = norm = 0.5)."""
    x, omega = x.float(), omega.float()
    M = omega.shape[-1]
    return torch.exp(x @ omega - sq * (x * x).sum(-1, keepdim=True)) / M**norm


def _favor_reference(inputs: dict[str, Any], case: Case) -> torch.Tensor:
    """The definition (Choromanski et al. 2021, Lemma 1): positive random features of the softmax kernel."""
    return favor_variant(inputs["x"], inputs["omega"]).to(inputs["x"].dtype)


def _favor_alternatives(inputs: dict[str, Any], case: Case, expected: Any) -> list[Alt]:
    x, omega = inputs["x"], inputs["omega"]
    return [
        Alt("missing the -|x|^2/2 term: phi(x) = exp(x omega - |x|^2/2) / sqrt(M)", {"phi": favor_variant(
            x, omega, sq=0.0)}),
        Alt("missing the 1/sqrt(M) normalisation: phi(x) = exp(x omega - |x|^2/2) / sqrt(M)",
            {"phi": favor_variant(x, omega, norm=0.0)}),
        Alt("divided by M instead of sqrt(M): phi(x) . phi(y) must average M products",
            {"phi": favor_variant(x, omega, norm=1.0)}),
        Alt("halve the squared norm: the term is -|x|^2/2, not -|x|^2", {"phi": favor_variant(x, omega, sq=1.0)}),
        Alt("missing the -|x|^2/2 term and the 1/sqrt(M)", {"phi": favor_variant(x, omega, sq=0.0, norm=0.0)}),
    ]


# 1.3a and 1.3b are both feature maps phi(x, omega): same cases, inputs and output structure
FEATURE_SPEC = dict(
    cases=_feature_cases,
    make_inputs=_feature_inputs,
    output=_feature_output,
    positional=("x", "omega"),
    input_layouts=LAYOUTS,
    grad_inputs=("x",),
)

register(Exercise(
    id="1.3a",
    fn_name="favor_features",
    signature="favor_features(x, omega) -> phi [..., M]   (x [..., D], omega [D, M])",
    expected=_favor_reference,
    alternatives=_favor_alternatives,
    reference_name="the definition exp(x omega - |x|^2/2) / sqrt(M) (Choromanski et al. 2021, Lemma 1)",
    nan_hint="exp overflowed? subtract |x|^2/2 inside the exp, not after it",
    **FEATURE_SPEC,
))


def rfa_variant(x: torch.Tensor, omega: torch.Tensor, parts: str = "sc", norm: float = 0.5,
                interleave: bool = False) -> torch.Tensor:
    """[sin(x omega), cos(x omega)] / M**norm in float32; parts "cs" swaps the halves."""
    xw = x.float() @ omega.float()
    M = omega.shape[-1]
    fs = {"s": torch.sin(xw), "c": torch.cos(xw)}
    halves = [fs[p] for p in parts]
    phi = torch.stack(halves, -1).flatten(-2) if interleave else torch.cat(halves, -1)
    return phi / M**norm


def _rfa_reference(inputs: dict[str, Any], case: Case) -> torch.Tensor:
    """The definition (Peng et al. 2021, §2): random Fourier features of the Gaussian kernel."""
    return rfa_variant(inputs["x"], inputs["omega"]).to(inputs["x"].dtype)


def _rfa_alternatives(inputs: dict[str, Any], case: Case, expected: Any) -> list[Alt]:
    x, omega = inputs["x"], inputs["omega"]
    return [
        Alt("sin and cos swapped: phi(x) = [sin(x omega), cos(x omega)] / sqrt(M), sin first",
            {"phi": rfa_variant(x, omega, parts="cs")}),
        Alt("missing the 1/sqrt(M) normalisation", {"phi": rfa_variant(x, omega, norm=0.0)}),
        Alt("divided by M instead of sqrt(M)", {"phi": rfa_variant(x, omega, norm=1.0)}),
        Alt("divided by sqrt(2M): the course (and Peng et al. 2021, §2) uses 1/sqrt(M), M = omega's columns",
            {"phi": rfa_variant(x, omega) / math.sqrt(2)}),
        Alt("sin and cos interleaved: concatenate the halves along the last axis (torch.cat), not stack",
            {"phi": rfa_variant(x, omega, interleave=True)}),
    ]


def _rfa_diagnose(f: Failure) -> str | None:
    if f.kind == "shape" and f.got.dim() == f.expected.dim() and f.got.shape[:-1] == f.expected.shape[:-1]:
        if f.got.shape[-1] * 2 == f.expected.shape[-1]:
            return ("only sin (or only cos)? the RFA map concatenates [sin(x omega), cos(x omega)]: 2M "
                    "features")
    return None


register(Exercise(
    id="1.3b",
    fn_name="rfa_features",
    signature="rfa_features(x, omega) -> phi [..., 2M]   (x [..., D], omega [D, M])",
    expected=_rfa_reference,
    alternatives=_rfa_alternatives,
    diagnose=_rfa_diagnose,
    reference_name="the definition [sin(x omega), cos(x omega)] / sqrt(M) (Peng et al. 2021, §2)",
    **FEATURE_SPEC,
))
