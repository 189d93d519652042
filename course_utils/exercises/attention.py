"""Family: softmax attention and its kernel approximations — softmax from scratch, linear attention with
a feature map in its quadratic and associative forms, random-feature maps (FAVOR+, RFA).

Exercises 1.1, 1.2a, 1.2b, 1.3a, 1.3b. Expected values: course_utils.refs.attention / refs.linear_attn;
the random-feature maps against their definitions (no library ships them in the course's form).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from course_utils.conventions import EPS, QK_LAYOUT, VO_LAYOUT, resolve_scale
from course_utils.exercises.cases import bthd, case_list, generator, randn
from course_utils.feature_maps import phi
from course_utils.grading import Case, Exercise, Failure, Mistake, TensorOut, register
from course_utils.grading.how import forbid, no_quadratic_memory
from course_utils.refs._checks import record

K_DIM, V_DIM = 16, 32  # K != V so that a transposed result shows in its shape
LAYOUTS = {"q": QK_LAYOUT, "k": QK_LAYOUT, "v": VO_LAYOUT, "x": "BTHD"}

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


def _attention_cases(causal_flag: bool, grad: bool = True) -> Callable[..., list[Case]]:
    """causal_flag: cases pass causal=False/True; otherwise the function has no such argument."""

    def cases(device: torch.device, dtypes: list[torch.dtype]) -> list[Case]:
        flag = (lambda c: {"causal": c}) if causal_flag else (lambda c: {})
        rows = [
            {"B": 1, "T": 63, "H": 2, **flag(False)},
            {"B": 2, "T": 100, "H": 3, **flag(True)},
            {"B": 2, "T": 63, "H": 3, **flag(True), "noncontiguous": True},
            {"B": 2, "T": 100, "H": 2, **flag(False), "noncontiguous": True},
        ] + ([{"B": 2, "T": 63, "H": 2, **flag(True), "grad": True}] if grad else [])
        return case_list({"K": K_DIM, "V": V_DIM}, rows, 101, dtypes, half={"B": 2, "T": 100, "H": 2, **flag(True)})

    return cases


def _named(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    fn.__name__ = name
    return fn


# ------------------------------------------------------------------------------------- 1.1 softmax


def softmax_attention_wrong(name: str, *, scale_power: float = 1.0, ignore_scale: bool = False,
                            causal_as: bool | None = None, strict: bool = False, axis: int = -1,
                            mask_after: bool = False) -> Callable[..., torch.Tensor]:
    """softmax_attention(q, k, v, causal=False, scale=None) with one mistake.

    scale_power: 0 (no scale), 2 (scale applied twice); causal_as: the mask applied regardless of `causal`;
    strict: the mask hides the diagonal; axis: the softmax's axis; mask_after: masking after the softmax.
    """

    def wrong(q, k, v, causal=False, scale=None):
        s = resolve_scale(None if ignore_scale else scale, q.shape[-1]) ** scale_power
        scores = s * torch.einsum("bthk,bshk->bhts", q.float(), k.float())
        T = q.shape[1]
        keep = torch.ones(T, T, dtype=torch.bool, device=q.device).tril(-1 if strict else 0)
        masked = causal if causal_as is None else causal_as
        if masked and not mask_after:
            scores = scores.masked_fill(~keep, float("-inf"))
        p = torch.softmax(scores, dim=axis)
        if masked and mask_after:
            p = p * keep
        return torch.einsum("bhts,bshv->bthv", torch.nan_to_num(p), v.float()).to(q.dtype)

    return _named(wrong, name)


def _softmax_reference(inputs: dict[str, Any], case: Case) -> torch.Tensor:
    from course_utils.refs import attention

    return attention.softmax_attention(inputs["q"], inputs["k"], inputs["v"], causal=inputs.get("causal", False),
                                       scale=inputs.get("scale"))


def _softmax_cases(device: torch.device, dtypes: list[torch.dtype]) -> list[Case]:
    cases = _attention_cases(True)(device, dtypes)
    cases.insert(2, Case({**cases[1].params, "scale": 0.3}, seed=107))  # the others use the default K**-0.5
    return cases


SOFTMAX_MISTAKES = (
    Mistake("no scale", softmax_attention_wrong("no_scale", scale_power=0.0),
            "missing scale? the scores are scale * q_t . k_s with scale = K**-0.5 when scale=None"),
    Mistake("scale applied twice", softmax_attention_wrong("scale_twice", scale_power=2.0),
            "the scale is applied twice (or as 1/K): scale = K**-0.5 multiplies q . k once"),
    Mistake("ignores the scale argument", softmax_attention_wrong("ignores_scale", ignore_scale=True),
            "ignores the scale argument: use it when given, K**-0.5 only when scale is None"),
    Mistake("softmax over the queries", softmax_attention_wrong("axis", axis=-2),
            "softmax over the wrong axis: normalise over the keys, the last axis of the [T_q, T_k] scores"),
    Mistake("no mask when causal", softmax_attention_wrong("never_causal", causal_as=False),
            NON_CAUSAL + " — set the scores of s > t to -inf before the softmax"),
    Mistake("mask when not causal", softmax_attention_wrong("always_causal", causal_as=True), CAUSAL_WHEN_NOT),
    Mistake("the mask hides the diagonal", softmax_attention_wrong("strict", strict=True),
            "the mask also hides the diagonal: a token attends to itself (keep s <= t, tril(..., 0))"),
    Mistake("masks after the softmax", softmax_attention_wrong("mask_after", mask_after=True),
            "masked after the softmax: the kept weights no longer sum to 1; set scores to -inf *before* the "
            "softmax"),
    Mistake("calls torch's scaled_dot_product_attention", _named(
        lambda q, k, v, causal=False, scale=None: F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal, scale=scale).transpose(1, 2),
        "sdpa"), says=("how check", "scaled_dot_product_attention")),
    Mistake("calls the course's reference", _named(
        lambda q, k, v, causal=False, scale=None: _softmax_reference(
            {"q": q, "k": k, "v": v, "causal": causal, "scale": scale}, None), "refs_softmax"),
        says=("how check", "course_utils.refs")),
)

SOFTMAX = register(Exercise(
    id="1.1",
    fn_name="softmax_attention",
    signature="softmax_attention(q, k, v, causal=False, scale=None) -> o [B, T, H, V]",
    cases=_softmax_cases,
    make_inputs=_qkv,
    expected=_softmax_reference,
    output=TensorOut("o", VO_LAYOUT),
    positional=("q", "k", "v"),
    input_layouts=LAYOUTS,
    grad_inputs=("q", "k", "v"),
    mistakes=SOFTMAX_MISTAKES,
    extra_checks=(forbid("scaled_dot_product_attention", "multi_head_attention_forward"),),
    nan_hint="a fully masked row (all -inf) gives NaN; or exp overflow: subtract the row max first",
))


# ------------------------------------------------------------------------------------- 1.2 linear


def linear_attention_wrong(name: str, *, feature: Callable[[torch.Tensor], torch.Tensor] = phi,
                           normalize: bool = True, causal_as: bool | None = None, strict: bool = False,
                           normalize_before_mask: bool = False) -> Callable[..., torch.Tensor]:
    """linear_attention(q, k, v, causal=False, eps=1e-6) with one mistake: another feature map, no
    normaliser, the mask applied regardless of `causal`, a mask hiding the diagonal, the normaliser summed
    over all keys before the mask."""

    def wrong(q, k, v, causal=False, eps=1e-6):
        a = torch.einsum("bthk,bshk->bhts", feature(q.float()), feature(k.float()))
        unmasked_sums = a.sum(-1)
        if causal if causal_as is None else causal_as:
            T = q.shape[1]
            a = a * torch.ones(T, T, device=q.device).tril(-1 if strict else 0)
        o = torch.einsum("bhts,bshv->bthv", a, v.float())
        if normalize:
            sums = unmasked_sums if normalize_before_mask else a.sum(-1)
            o = o / (sums.transpose(1, 2).unsqueeze(-1) + eps)
        return o.to(q.dtype)

    return _named(wrong, name)


def noncausal_float64_loop(fq: torch.Tensor, fk: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Normalised non-causal linear attention as a float64 loop over the keys (no library has this form: an
    independent reference, not the course's own einsum in refs.attention). fq, fk already mapped."""
    B, T, H, K = fq.shape
    kv = fq.new_zeros(B, H, K, v.shape[-1], dtype=torch.float64)
    z = fq.new_zeros(B, H, K, dtype=torch.float64)
    for s in range(T):
        k_s = fk[:, s].double()
        kv = kv + k_s[..., None] * v[:, s].double()[..., None, :]
        z = z + k_s
    num = (fq.double()[..., None] * kv[:, None]).sum(-2)  # [B, T, H, V]
    den = (fq.double() * z[:, None]).sum(-1, keepdim=True)
    record("a float64 loop over the keys (no library has non-causal linear attention)", fq.device)
    return (num / (den + EPS)).to(v.dtype)


def _linear_reference(inputs: dict[str, Any], case: Case) -> torch.Tensor:
    """Normalised linear attention on phi(q), phi(k) (the references take mapped q, k)."""
    from course_utils.refs import linear_attn

    fq, fk, v = phi(inputs["q"]), phi(inputs["k"]), inputs["v"]
    if inputs.get("causal", False):
        # fla's fused recurrent kernel on a GPU: exact in fp32 and compiled in about a second, where the
        # chunk kernel autotunes for a minute per dtype on first use (a long wait on a student's T4).
        return linear_attn.linear_attention(fq, fk, v, normalize=True, mode="recurrent")[0]
    return noncausal_float64_loop(fq, fk, v)


LINEAR_MISTAKES = (
    Mistake("missing normalizer", linear_attention_wrong("no_norm", normalize=False),
            "missing normalizer: divide by phi(q_i)^T sum_j phi(k_j) (+ eps)"),
    Mistake("no feature map", linear_attention_wrong("no_phi", feature=lambda x: x),
            "the feature map is missing: apply phi(x) = elu(x) + 1 to q and k inside the function"),
    Mistake("elu without +1", linear_attention_wrong("elu_only", feature=F.elu),
            "phi(x) = elu(x) + 1: the +1 is missing (features must be positive)"),
)

LINEAR = Exercise(
    id="1.2",
    fn_name="linear_attention",
    signature="",
    cases=_attention_cases(True),
    make_inputs=_qkv,
    expected=_linear_reference,
    output=TensorOut("o", VO_LAYOUT),
    positional=("q", "k", "v"),
    input_layouts=LAYOUTS,
    grad_inputs=("q", "k", "v"),
    nan_hint="dividing by a zero normalizer? add eps to the denominator (and check phi(x) = elu(x) + 1 > 0)",
)
"""1.2a (quadratic form) and 1.2b (associative form) compute the same thing: one spec, two registrations."""

register(dataclasses.replace(
    LINEAR,
    id="1.2a",
    fn_name="linear_attention_quadratic",
    signature="linear_attention_quadratic(q, k, v, causal=False, eps=1e-6) -> o [B, T, H, V]",
    mistakes=LINEAR_MISTAKES + (
        Mistake("no mask when causal", linear_attention_wrong("never_causal", causal_as=False),
                NON_CAUSAL + " — multiply phi(Q) phi(K)^T by a lower-triangular mask"),
        Mistake("mask when not causal", linear_attention_wrong("always_causal", causal_as=True), CAUSAL_WHEN_NOT),
        Mistake("the mask hides the diagonal", linear_attention_wrong("strict", strict=True),
                "the mask also hides the diagonal: keep s <= t (tril(..., 0))"),
        Mistake("normaliser summed before the mask", linear_attention_wrong("norm_before_mask",
                                                                            normalize_before_mask=True),
                "the normaliser sums over every key, the future ones too: with causal=True it sums "
                "phi(q_t) . phi(k_s) over s <= t only (mask first, then take the row sums)"),
    ),
    extra_checks=(forbid(),),
))

def _linear_probe(T: int, device: torch.device) -> tuple[tuple, dict]:
    gen = torch.Generator().manual_seed(0)
    return tuple(randn(gen, 1, T, 1, 4).to(device) for _ in range(3)), {}


ASSOCIATIVITY = ("compute phi(K)^T V first (a [d, d_v] matrix per head) and the sum of phi(K), then multiply by "
                 "phi(Q): that is the point of associativity (Katharopoulos et al. 2020, §3.2)")


def _quadratic_noncausal(q, k, v, eps=1e-6):
    """Right values, wrong cost: the T×T matrix of the quadratic form."""
    return linear_attention_wrong("quadratic")(q, k, v, False, eps)


def _broadcast_noncausal(q, k, v, eps=1e-6):
    """Right values, T×T memory without a single matmul (invisible to a FLOP counter)."""
    fq, fk = phi(q.float()), phi(k.float())
    a = (fq[:, :, None] * fk[:, None, :]).sum(-1)  # [B, T, S, H]
    o = (a[..., None] * v.float()[:, None]).sum(2)  # [B, T, H, V]
    return (o / (a.sum(2)[..., None] + eps)).to(q.dtype)


register(dataclasses.replace(
    LINEAR,
    id="1.2b",
    fn_name="linear_attention_associative",
    signature="linear_attention_associative(q, k, v, eps=1e-6) -> o [B, T, H, V]",
    cases=_attention_cases(False),
    extra_checks=(forbid(), no_quadratic_memory(_linear_probe, what="the T×T matrix phi(Q) phi(K)^T",
                                                hint=ASSOCIATIVITY)),
    mistakes=LINEAR_MISTAKES + (
        Mistake("causal", linear_attention_wrong("causal", causal_as=True),
                "causal: this exercise is the non-causal (bidirectional) form, every query reads all keys"),
        Mistake("the quadratic form (a T×T matrix)", _named(_quadratic_noncausal, "quadratic"),
                says=("memory check", "associativity")),
        Mistake("T×T by broadcast multiply-and-sum (no matmul)", _named(_broadcast_noncausal, "broadcast"),
                says=("memory check", "associativity")),
    ),
))


# ------------------------------------------------------------------------------------- 1.3 features

_M = 24  # random features; != D so that a contraction over the wrong axis fails loudly


def _feature_cases(device: torch.device, dtypes: list[torch.dtype]) -> list[Case]:
    rows = [
        {"B": 1, "T": 63, "H": 2},
        {"T": 100},  # x may have any leading dims: [..., D]
        {"B": 2, "T": 63, "H": 3, "M": 40, "noncontiguous": True},
        {"B": 2, "T": 100, "H": 2, "grad": True},
    ]
    return case_list({"D": 16, "M": _M}, rows, 131, dtypes, half={"B": 2, "T": 63, "H": 2})


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


FEATURES = Exercise(
    id="1.3",
    fn_name="features",
    signature="",
    cases=_feature_cases,
    make_inputs=_feature_inputs,
    expected=lambda inputs, case: None,
    output=_feature_output,
    positional=("x", "omega"),
    input_layouts=LAYOUTS,
    grad_inputs=("x",),
)
"""1.3a and 1.3b are both feature maps phi(x, omega): same cases, inputs and output structure."""


def favor_wrong(name: str, sq: float = 0.5, norm: float = 0.5) -> Callable[..., torch.Tensor]:
    """exp(x omega - sq |x|^2) / M**norm (the definition has sq = norm = 0.5), in the input dtype."""

    def wrong(x, omega):
        xf, wf = x.float(), omega.float()
        return (torch.exp(xf @ wf - sq * (xf * xf).sum(-1, keepdim=True)) / omega.shape[-1] ** norm).to(x.dtype)

    return _named(wrong, name)


def _favor_transposed(x, omega):
    return torch.exp(x @ omega.T)


register(dataclasses.replace(
    FEATURES,
    id="1.3a",
    fn_name="favor_features",
    signature="favor_features(x, omega) -> phi [..., M]   (x [..., D], omega [D, M])",
    expected=lambda inputs, case: favor_wrong("definition")(inputs["x"], inputs["omega"]),
    reference_name="the definition exp(x omega - |x|^2/2) / sqrt(M) (Choromanski et al. 2021, Lemma 1)",
    nan_hint="exp overflowed? subtract |x|^2/2 inside the exp, not after it",
    mistakes=(
        Mistake("missing -|x|^2/2", favor_wrong("no_norm_term", sq=0.0),
                "missing the -|x|^2/2 term: phi(x) = exp(x omega - |x|^2/2) / sqrt(M)"),
        Mistake("missing 1/sqrt(M)", favor_wrong("no_sqrt_m", norm=0.0),
                "missing the 1/sqrt(M) normalisation: phi(x) = exp(x omega - |x|^2/2) / sqrt(M)"),
        Mistake("1/M instead of 1/sqrt(M)", favor_wrong("over_m", norm=1.0),
                "divided by M instead of sqrt(M): phi(x) . phi(y) must average M products"),
        Mistake("-|x|^2 instead of -|x|^2/2", favor_wrong("full_norm", sq=1.0),
                "halve the squared norm: the term is -|x|^2/2, not -|x|^2"),
        Mistake("missing both", favor_wrong("bare_exp", sq=0.0, norm=0.0),
                "missing the -|x|^2/2 term and the 1/sqrt(M)"),
        Mistake("x @ omega.T", _named(_favor_transposed, "transposed_omega"), says=("RuntimeError", "x @ omega.T")),
    ),
))


def rfa_wrong(name: str, parts: str = "sc", norm: float = 0.5, interleave: bool = False,
              extra: float = 1.0) -> Callable[..., torch.Tensor]:
    """[sin(x omega), cos(x omega)] / M**norm * extra (parts "cs" swaps the halves, "s" keeps sin only)."""

    def wrong(x, omega):
        xw = x.float() @ omega.float()
        halves = [{"s": torch.sin(xw), "c": torch.cos(xw)}[p] for p in parts]
        f = torch.stack(halves, -1).flatten(-2) if interleave else torch.cat(halves, -1)
        return (f / omega.shape[-1] ** norm * extra).to(x.dtype)

    return _named(wrong, name)


def _rfa_diagnose(f: Failure) -> str | None:
    if f.kind == "shape" and f.got.dim() == f.expected.dim() and f.got.shape[:-1] == f.expected.shape[:-1]:
        if f.got.shape[-1] * 2 == f.expected.shape[-1]:
            return "only sin (or only cos)? the RFA map concatenates [sin(x omega), cos(x omega)]: 2M features"
    return None


register(dataclasses.replace(
    FEATURES,
    id="1.3b",
    fn_name="rfa_features",
    signature="rfa_features(x, omega) -> phi [..., 2M]   (x [..., D], omega [D, M])",
    expected=lambda inputs, case: rfa_wrong("definition")(inputs["x"], inputs["omega"]),
    reference_name="the definition [sin(x omega), cos(x omega)] / sqrt(M) (Peng et al. 2021, §2)",
    diagnose=_rfa_diagnose,
    mistakes=(
        Mistake("[cos, sin]", rfa_wrong("cos_first", parts="cs"),
                "sin and cos swapped: phi(x) = [sin(x omega), cos(x omega)] / sqrt(M), sin first"),
        Mistake("missing 1/sqrt(M)", rfa_wrong("no_norm", norm=0.0), "missing the 1/sqrt(M) normalisation"),
        Mistake("1/M", rfa_wrong("over_m", norm=1.0), "divided by M instead of sqrt(M)"),
        Mistake("1/sqrt(2M)", rfa_wrong("sqrt_2m", extra=1 / math.sqrt(2)),
                "divided by sqrt(2M): the course (and Peng et al. 2021, §2) uses 1/sqrt(M), M = omega's columns"),
        Mistake("interleaved sin/cos", rfa_wrong("interleaved", interleave=True),
                "sin and cos interleaved: concatenate the halves along the last axis (torch.cat), not stack"),
        Mistake("only sin", rfa_wrong("sin_only", parts="s"), says=("only sin",)),
    ),
))
