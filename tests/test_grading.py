"""The graders accept a correct solution and reject known mistakes with the right hint.

For every exercise id of labs 01-03: one correct implementation (kept here, never in course_utils) must
pass, and every entry of its catalogue of wrong implementations must raise AssertionError whose message
contains the expected hint. test_zz_catalogue_summary prints "caught N/N" per exercise.

All graders run on the CPU at the course's small sizes; expected values are cached by the engine, so the
whole module takes well under a minute and a half on a 2-core machine.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F

from course_utils import grade
from course_utils.grading import EXERCISES, _load_specs

CPU = {"device": "cpu", "dtypes": [torch.float32]}
BF16 = {"device": "cpu", "dtypes": [torch.float32, torch.bfloat16]}  # bf16 runs on CPU too, for the tests
IDS = ["1.1", "1.2a", "1.2b", "1.3a", "1.3b", "2.1", "2.2", "2.3", "2.4", "3.1", "3.2", "3.3"]


# ========================================================================================================
# Correct implementations (what a student should write; float32 inside, the input dtype out)
# ========================================================================================================


def _scale(q: torch.Tensor, scale: float | None) -> float:
    return q.shape[-1] ** -0.5 if scale is None else scale


def softmax_attention(q, k, v, causal=False, scale=None):
    s = _scale(q, scale) * torch.einsum("bthk,bshk->bhts", q.float(), k.float())
    if causal:
        T = q.shape[1]
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return torch.einsum("bhts,bshv->bthv", s.softmax(-1), v.float()).to(q.dtype)


def phi(x):
    return F.elu(x) + 1


def linear_attention_quadratic(q, k, v, causal=False, eps=1e-6):
    a = torch.einsum("bthk,bshk->bhts", phi(q.float()), phi(k.float()))
    if causal:
        a = a.tril()
    o = torch.einsum("bhts,bshv->bthv", a, v.float()) / (a.sum(-1).transpose(1, 2)[..., None] + eps)
    return o.to(q.dtype)


def linear_attention_associative(q, k, v, eps=1e-6):
    fq, fk = phi(q.float()), phi(k.float())
    kv = torch.einsum("bthk,bthv->bhkv", fk, v.float())
    den = torch.einsum("bthk,bhk->bth", fq, fk.sum(1))[..., None] + eps
    return (torch.einsum("bthk,bhkv->bthv", fq, kv) / den).to(q.dtype)


def favor_features(x, omega):
    x32 = x.float()
    M = omega.shape[-1]
    return (torch.exp(x32 @ omega.float() - (x32 * x32).sum(-1, keepdim=True) / 2) / math.sqrt(M)).to(x.dtype)


def rfa_features(x, omega):
    xw = x.float() @ omega.float()
    return (torch.cat([xw.sin(), xw.cos()], dim=-1) / math.sqrt(omega.shape[-1])).to(x.dtype)


def causal_linear_attention_parallel(q, k, v, scale=None, normalize=False):
    a = _scale(q, scale) * torch.einsum("bthk,bshk->bhts", q.float(), k.float()).tril()
    o = torch.einsum("bhts,bshv->bthv", a, v.float())
    if normalize:
        o = o / (a.sum(-1).transpose(1, 2)[..., None] + 1e-10)
    return o.to(q.dtype)


def _split_init(initial_state, normalize):
    if initial_state is None:
        return None, None
    return initial_state if normalize else (initial_state, None)


def recurrent_linear_attention(q, k, v, scale=None, initial_state=None, normalize=False):
    """Vectorised (prefix sums): any correct form passes."""
    s = _scale(q, scale)
    S0, z0 = _split_init(initial_state, normalize)
    qf, kf, vf = q.float(), k.float(), v.float()
    S_t = torch.einsum("bthk,bthv->bthkv", kf, vf).cumsum(1)
    if S0 is not None:
        S_t = S_t + S0.float()[:, None]
    o = s * torch.einsum("bthk,bthkv->bthv", qf, S_t)
    if not normalize:
        return o.to(q.dtype), S_t[:, -1]
    z_t = kf.cumsum(1) + (0 if z0 is None else z0.float()[:, None])
    o = o / (s * (qf * z_t).sum(-1, keepdim=True) + 1e-10)
    return o.to(q.dtype), (S_t[:, -1], z_t[:, -1])


def recurrent_linear_attention_loop(q, k, v, scale=None, initial_state=None, normalize=False,
                                    _detach_state=False, _exclusive=False):
    """The RNN form, token by token (the two private flags make two of the wrong versions)."""
    s = _scale(q, scale)
    B, T, H, K = q.shape
    S0, z0 = _split_init(initial_state, normalize)
    S = torch.zeros(B, H, K, v.shape[-1], device=q.device) if S0 is None else S0.float()
    z = torch.zeros(B, H, K, device=q.device) if z0 is None else z0.float()
    outs = []
    for t in range(T):
        q_t, k_t, v_t = q[:, t].float(), k[:, t].float(), v[:, t].float()
        if _exclusive:  # reads the state before adding the current token
            num, den = s * torch.einsum("bhk,bhkv->bhv", q_t, S), s * (q_t * z).sum(-1, keepdim=True)
        S = (S.detach() if _detach_state else S) + k_t[..., None] * v_t[..., None, :]
        z = z + k_t
        if not _exclusive:
            num, den = s * torch.einsum("bhk,bhkv->bhv", q_t, S), s * (q_t * z).sum(-1, keepdim=True)
        outs.append(num / den if normalize else num)
    o = torch.stack(outs, dim=1).to(q.dtype)
    return (o, (S, z)) if normalize else (o, S)


def linear_attention_step(q_t, k_t, v_t, state, scale=None):
    new_state = state.float() + k_t.float()[..., None] * v_t.float()[..., None, :]
    o_t = _scale(q_t, scale) * torch.einsum("bhk,bhkv->bhv", q_t.float(), new_state)
    return o_t.to(q_t.dtype), new_state


def chunk_linear_attention(q, k, v, chunk_size=16, scale=None, initial_state=None,
                           _intra="tril", _inter="prev", _stop=None, _mask_from_chunk_size=False):
    """Chunkwise form (GLA §4); the private flags make the wrong versions."""
    s = _scale(q, scale)
    B, T, H, K = q.shape
    S = torch.zeros(B, H, K, v.shape[-1], device=q.device) if initial_state is None else initial_state.float()
    o = torch.zeros(B, T, H, v.shape[-1], device=q.device)
    stop = T if _stop is None else _stop(T, chunk_size)
    for start in range(0, stop, chunk_size):
        qc = q[:, start:start + chunk_size].float() * s
        kc, vc = k[:, start:start + chunk_size].float(), v[:, start:start + chunk_size].float()
        a = torch.einsum("bthk,bshk->bhts", qc, kc)
        if _mask_from_chunk_size:
            a = a * torch.ones(chunk_size, chunk_size, device=q.device).tril()
        elif _intra != "none":
            a = a.tril(-1 if _intra == "strict" else 0)
        S_next = S + torch.einsum("bthk,bthv->bhkv", kc, vc)
        oc = torch.einsum("bhts,bshv->bthv", a, vc)
        if _inter != "none":
            oc = oc + torch.einsum("bthk,bhkv->bthv", qc, S_next if _inter == "incl" else S)
        o = torch.cat([o[:, :start], oc, o[:, start + oc.shape[1]:]], dim=1)  # out of place: autograd-safe
        S = S_next
    return o.to(q.dtype), S


def chunk_linear_attention_batched(q, k, v, chunk_size=16, scale=None, initial_state=None,
                                   _intra="tril", _inter="prev", _tail="pad", _slice=True):
    """All chunks at once: padded [B, N, C, H, D] view, exclusive cumsum of per-chunk K^T V (flags: mistakes)."""
    s, dtype = _scale(q, scale), q.dtype
    B, T, H, K = q.shape
    C = chunk_size
    N = T // C if _tail == "floor" else -(-T // C)
    pad = max(N * C - T, 0)
    q, k, v = (F.pad(x.float(), (0, 0, 0, 0, 0, pad))[:, :N * C].reshape(B, N, C, H, -1) for x in (q, k, v))
    a = s * torch.einsum("bnchk,bnshk->bnhcs", q, k)
    if _intra != "none":
        a = a * torch.ones(C, C, device=q.device).tril(-1 if _intra == "strict" else 0)
    U = torch.einsum("bnchk,bnchv->bnhkv", k, v)
    S = U.cumsum(1) - (0 if _inter == "incl" else U)
    if initial_state is not None:
        S = S + initial_state.float()[:, None]
    o = torch.einsum("bnhcs,bnshv->bnchv", a, v)
    if _inter != "none":
        o = o + s * torch.einsum("bnchk,bnhkv->bnchv", q, S)
    o = o.reshape(B, N * C, H, -1)
    if _slice:
        o = o[:, :T]
    final = (S[:, -1] if _inter == "incl" else S[:, -1] + U[:, -1])
    return o.to(dtype), final


def chunkwise_flops(T, C, K, V):
    return (T // C) * (2 * C * C * K + 2 * C * C * V + 2 * C * K * V + 2 * C * K * V)


CORRECT: dict[str, Callable[..., Any]] = {
    "1.1": softmax_attention,
    "1.2a": linear_attention_quadratic,
    "1.2b": linear_attention_associative,
    "1.3a": favor_features,
    "1.3b": rfa_features,
    "2.1": causal_linear_attention_parallel,
    "2.2": recurrent_linear_attention,
    "2.3": linear_attention_step,
    "2.4": recurrent_linear_attention_loop,
    "3.1": chunk_linear_attention,
    "3.2": chunkwise_flops,
    "3.3": chunk_linear_attention_batched,
}


# ========================================================================================================
# Mistake factories
# ========================================================================================================


def named(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    fn.__name__ = name
    return fn


def map_o(fn, f, name):
    """The correct function with f applied to its main output (o, or o_t for a step function)."""

    def wrong(*args, **kwargs):
        out = fn(*args, **kwargs)
        return (f(out[0]),) + tuple(out[1:]) if isinstance(out, tuple) else f(out)

    return named(wrong, name)


def map_state(fn, f, name):
    def wrong(*args, **kwargs):
        o, state = fn(*args, **kwargs)
        return o, f(state, *args, **kwargs)

    return named(wrong, name)


def with_kwargs(fn, name, **fixed):
    """The correct function called with some arguments forced (e.g. scale=1.0: "forgot the scale")."""

    def wrong(*args, **kwargs):
        return fn(*args, **{**kwargs, **fixed})

    return named(wrong, name)


def noise(o):
    gen = torch.Generator().manual_seed(0)
    return o + 0.01 * o.float().pow(2).mean().sqrt() * torch.randn(o.shape, generator=gen).to(o.dtype)


def nan_at(o, index=(0, 5, 1)):
    o = o.clone()
    o[index] = float("nan")
    return o


def mutating(fn):
    """Correct output, but it scales its first argument in place on the way out."""

    def mutates_input(first, *args, **kwargs):
        out = fn(first, *args, **kwargs)
        first.mul_(2.0)
        return out

    return mutates_input


def viewing(fn):
    """Uses .view() on its first argument: fails on non-contiguous inputs."""

    def uses_view(first, *args, **kwargs):
        flat = first.view(-1, first.shape[-1])
        return fn(flat.view(first.shape), *args, **kwargs)

    return uses_view


def raising(fn):
    def raises_inside(first, *args, **kwargs):
        boom = first[..., first.shape[-1]]  # one past the end: IndexError
        return fn(boom, *args, **kwargs)

    return raises_inside


RAISE_LINE = "boom = first[..., first.shape[-1]]"


def generic_mistakes(fn, tuple_out: bool, bthd_out: bool = True) -> list[tuple]:
    """Mistakes every tensor exercise must catch: (label, fn, expected hint substrings, grade options)."""
    out = [
        ("zeros", map_o(fn, torch.zeros_like, "zeros"), "all zeros", CPU),
        ("output + 1% noise", map_o(fn, noise, "noisy"), "above tolerance", CPU),
        ("returns None", named(lambda *a, **k: None, "returns_none"), "`return`", CPU),
        ("returns float64", map_o(fn, lambda o: o.double(), "float64"), "dtype float64", CPU),
        ("casts bf16 input to fp32", map_o(fn, lambda o: o.float(), "upcasts"), "dtype float32", BF16),
        ("wrong device", map_o(fn, lambda o: o.to("meta"), "on_meta"), "device 'meta'", CPU),
        ("mutates its input", mutating(fn), "in place", CPU),
        ("raises inside", raising(fn), ("IndexError", RAISE_LINE, "raises_inside"), CPU),
    ]
    if tuple_out:
        out.append(("returns a tensor, tuple expected", named(lambda *a, **k: fn(*a, **k)[0], "tensor_only"),
                    "expected a tuple", CPU))
    else:
        out.append(("returns a tuple, tensor expected", named(lambda *a, **k: (fn(*a, **k), None), "tupled"),
                    "expected a single tensor", CPU))
    if bthd_out:
        out += [
            ("head-first [B,H,T,D]", map_o(fn, lambda o: o.transpose(1, 2), "head_first"), "head-first", CPU),
            ("NaN", map_o(fn, nan_at, "nan"), "NaN at (b=0, t=5, h=1)", CPU),
            ("output reversed in time", map_o(fn, lambda o: o.flip(1), "flipped"), "reversed", CPU),
            ("fails on non-contiguous inputs", viewing(fn), ".reshape()", CPU),
        ]
    return out


# ---------------------------------------------------------------------------------- lab 01


def _softmax_wrong(name, **kw):
    """Softmax attention with a mistake: no_scale, strict (diagonal masked), axis, mask_after, always/never."""

    def wrong(q, k, v, causal=False, scale=None):
        s = (1.0 if kw.get("no_scale") else _scale(q, None if kw.get("ignore_scale") else scale))
        s = s * torch.einsum("bthk,bshk->bhts", q, k)
        c = {"never": False, "always": True}.get(kw.get("causal"), causal)
        T = q.shape[1]
        keep = torch.ones(T, T, dtype=torch.bool, device=q.device).tril(-1 if kw.get("strict") else 0)
        if c and not kw.get("mask_after"):
            s = s.masked_fill(~keep, float("-inf"))
        p = s.softmax(kw.get("axis", -1))
        if c and kw.get("mask_after"):
            p = p * keep
        return torch.einsum("bhts,bshv->bthv", p.nan_to_num(), v)

    return named(wrong, name)


def _linear_wrong(name, causal_flag=True, **kw):
    def core(q, k, v, causal=False, eps=1e-6):
        f = kw.get("phi", phi)
        a = torch.einsum("bthk,bshk->bhts", f(q), f(k))
        c = {"never": False, "always": True}.get(kw.get("causal"), causal)
        if c:
            a = a.tril()
        o = torch.einsum("bhts,bshv->bthv", a, v)
        return o if kw.get("no_norm") else o / (a.sum(-1).transpose(1, 2)[..., None] + eps)

    if causal_flag:
        return named(core, name)
    return named(lambda q, k, v, eps=1e-6: core(q, k, v, False, eps), name)


def _favor_wrong(name, sq=0.5, norm=0.5):
    return named(lambda x, omega: torch.exp(x @ omega - sq * (x * x).sum(-1, keepdim=True))
                 / omega.shape[-1] ** norm, name)


def _rfa_wrong(name, parts="sc", norm=0.5, interleave=False):
    def wrong(x, omega):
        xw = x @ omega
        fs = [{"s": xw.sin(), "c": xw.cos()}[p] for p in parts]
        f = torch.stack(fs, -1).flatten(-2) if interleave else torch.cat(fs, -1)
        return f / omega.shape[-1] ** norm

    return named(wrong, name)


def _catalogue_lab01() -> dict[str, list[tuple]]:
    cat: dict[str, list[tuple]] = {}
    cat["1.1"] = generic_mistakes(softmax_attention, tuple_out=False) + [
        ("no scale", _softmax_wrong("no_scale", no_scale=True), "missing scale", CPU),
        ("ignores the scale argument", _softmax_wrong("ignores_scale", ignore_scale=True),
         "ignores the scale argument", CPU),
        ("non-causal when causal", _softmax_wrong("never_causal", causal="never"), "non-causal", CPU),
        ("causal when non-causal", _softmax_wrong("always_causal", causal="always"),
         "causal mask applied although causal=False", CPU),
        ("mask hides the diagonal", _softmax_wrong("strict", strict=True), "hides the diagonal", CPU),
        ("softmax over queries", _softmax_wrong("axis", axis=-2), "wrong axis", CPU),
        ("masks after the softmax", _softmax_wrong("mask_after", mask_after=True), "after the softmax", CPU),
    ]
    cat["1.2a"] = generic_mistakes(linear_attention_quadratic, tuple_out=False) + [
        ("missing normalizer", _linear_wrong("no_norm", no_norm=True), "missing normalizer", CPU),
        ("non-causal when causal", _linear_wrong("never_causal", causal="never"), "non-causal", CPU),
        ("causal when non-causal", _linear_wrong("always_causal", causal="always"),
         "causal mask applied although causal=False", CPU),
        ("no feature map", _linear_wrong("no_phi", phi=lambda x: x), "feature map is missing", CPU),
        ("elu without +1", _linear_wrong("elu_only", phi=F.elu), "+1 is missing", CPU),
    ]
    cat["1.2b"] = generic_mistakes(linear_attention_associative, tuple_out=False) + [
        ("missing normalizer", _linear_wrong("no_norm", causal_flag=False, no_norm=True), "missing normalizer", CPU),
        ("causal", _linear_wrong("causal", causal_flag=False, causal="always"), "non-causal (bidirectional)", CPU),
        ("quadratic form (T×T matrix)", named(lambda q, k, v, eps=1e-6: linear_attention_quadratic(q, k, v, False, eps),
                                               "quadratic"), "associativity", CPU),
        ("elu without +1", _linear_wrong("elu_only", causal_flag=False, phi=F.elu), "+1 is missing", CPU),
    ]
    cat["1.3a"] = generic_mistakes(favor_features, tuple_out=False) + [
        ("missing -|x|^2/2", _favor_wrong("no_norm_term", sq=0.0), "missing the -|x|^2/2", CPU),
        ("missing 1/sqrt(M)", _favor_wrong("no_sqrt_m", norm=0.0), "missing the 1/sqrt(M)", CPU),
        ("1/M instead of 1/sqrt(M)", _favor_wrong("over_m", norm=1.0), "instead of sqrt(M)", CPU),
        ("-|x|^2 instead of -|x|^2/2", _favor_wrong("full_norm", sq=1.0), "the term is -|x|^2/2, not -|x|^2", CPU),
        ("x @ omega.T", named(lambda x, omega: torch.exp(x @ omega.T), "transposed_omega"),
         ("RuntimeError", "x @ omega.T"), CPU),
    ]
    cat["1.3b"] = generic_mistakes(rfa_features, tuple_out=False) + [
        ("only sin", named(lambda x, omega: (x @ omega).sin() / omega.shape[-1] ** 0.5, "sin_only"),
         "only sin", CPU),
        ("[cos, sin]", _rfa_wrong("cos_first", parts="cs"), "swapped", CPU),
        ("missing 1/sqrt(M)", _rfa_wrong("no_norm", norm=0.0), "missing the 1/sqrt(M)", CPU),
        ("1/sqrt(2M)", named(lambda x, omega: _rfa_wrong("x")(x, omega) / 2**0.5, "sqrt_2m"), "sqrt(2M)", CPU),
        ("interleaved sin/cos", _rfa_wrong("interleaved", interleave=True), "interleaved", CPU),
    ]
    return cat


# ---------------------------------------------------------------------------------- lab 02


def _parallel_wrong(name, **kw):
    def wrong(q, k, v, scale=None, normalize=False):
        s = 1.0 if kw.get("no_scale") else _scale(q, None if kw.get("ignore_scale") else scale)
        a = s * torch.einsum("bthk,bshk->bhts", q, k)
        mask = kw.get("mask", "tril")
        a = {"tril": a.tril(), "strict": a.tril(-1), "triu": a.triu(), "none": a}[mask]
        o = torch.einsum("bhts,bshv->bthv", a, v)
        if normalize and not kw.get("no_norm"):
            o = o / (a.sum(-1).transpose(1, 2)[..., None] + 1e-10)
        return o

    return named(wrong, name)


def _rla_wrong(name, transform):
    """recurrent_linear_attention whose (o, state) pass through transform(o, state, inputs)."""

    def wrong(q, k, v, scale=None, initial_state=None, normalize=False):
        o, state = recurrent_linear_attention(q, k, v, scale, initial_state, normalize)
        return transform(o, state, dict(q=q, k=k, v=v, scale=scale, initial_state=initial_state,
                                        normalize=normalize))

    return named(wrong, name)


class _WrongBackward(torch.autograd.Function):
    """Right forward; the backward 'forgets' that the scale multiplies q (dq off by 1/scale)."""

    @staticmethod
    def forward(ctx, q, k, v, S0, scale):
        ctx.save_for_backward(q, k, v, S0)
        ctx.scale = scale
        return recurrent_linear_attention(q, k, v, scale, S0)

    @staticmethod
    def backward(ctx, do, dS):
        q, k, v, S0 = ctx.saved_tensors
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(True) for t in (q, k, v, S0)]
            out = recurrent_linear_attention(*leaves[:3], ctx.scale, leaves[3])
            dq, dk, dv, dS0 = torch.autograd.grad(out, leaves, (do, dS))
        return dq / ctx.scale, dk, dv, dS0, None


def wrong_backward(q, k, v, scale=None, initial_state=None, normalize=False):
    S0 = torch.zeros(q.shape[0], q.shape[2], q.shape[3], v.shape[-1], device=q.device) \
        if initial_state is None else initial_state
    return _WrongBackward.apply(q, k, v, S0, _scale(q, scale))


class _RaisingBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v):
        return recurrent_linear_attention(q, k, v)

    @staticmethod
    def backward(ctx, do, dS):
        raise ValueError("backward not written yet")


def raising_backward(q, k, v, scale=None, initial_state=None, normalize=False):
    return _RaisingBackward.apply(q, k, v)


def _state_transposed(o, S, i):
    return o, S.transpose(-1, -2)


def _z_fla_layout(o, state, i):
    return (o, (state[0], state[1].unsqueeze(1))) if i["normalize"] else (o, state)


def _step_wrong(name, **kw):
    def wrong(q_t, k_t, v_t, state, scale=None):
        s = 1.0 if kw.get("no_scale") else _scale(q_t, None if kw.get("ignore_scale") else scale)
        if kw.get("in_place"):
            state += k_t[..., None] * v_t[..., None, :]
            new = state
        else:
            new = state + k_t[..., None] * v_t[..., None, :]
        read = state if kw.get("exclusive") else new
        o_t = s * torch.einsum("bhk,bhkv->bhv", q_t, read)
        if kw.get("no_state"):
            return o_t, None
        if kw.get("o_only"):
            return o_t
        if kw.get("hb"):
            return o_t.transpose(0, 1), new
        return o_t, new

    return named(wrong, name)


def _catalogue_lab02() -> dict[str, list[tuple]]:
    cat: dict[str, list[tuple]] = {}
    cat["2.1"] = generic_mistakes(causal_linear_attention_parallel, tuple_out=False) + [
        ("no scale", _parallel_wrong("no_scale", no_scale=True), "missing scale", CPU),
        ("ignores the scale argument", _parallel_wrong("ignores_scale", ignore_scale=True),
         "ignores the scale argument", CPU),
        ("non-causal", _parallel_wrong("unmasked", mask="none"), "non-causal", CPU),
        ("mask hides the diagonal (exclusive)", _parallel_wrong("strict", mask="strict"), "hides the diagonal", CPU),
        ("triu instead of tril", _parallel_wrong("triu", mask="triu"), "keeps the future", CPU),
        ("missing normalizer", _parallel_wrong("no_norm", no_norm=True), "missing normalizer", CPU),
        ("q detached (no gradient)", named(lambda q, k, v, scale=None, normalize=False:
                                           causal_linear_attention_parallel(q.detach(), k, v, scale, normalize),
                                           "detached_q"), "dq is None", CPU),
    ]
    rla = recurrent_linear_attention
    cat["2.2"] = generic_mistakes(rla, tuple_out=True) + [
        ("final_state None", map_state(rla, lambda s, *a, **k: None, "no_state"), "final_state is None", CPU),
        ("final_state misses the last token", _rla_wrong("misses_last", lambda o, S, i: (o, S - torch.einsum(
            "bhk,bhv->bhkv", i["k"][:, -1], i["v"][:, -1])) if not i["normalize"] else (o, S)),
         "misses the last token", CPU),
        ("state overwritten", _rla_wrong("overwritten", lambda o, S, i: (o, torch.einsum(
            "bhk,bhv->bhkv", i["k"][:, -1], i["v"][:, -1])) if not i["normalize"] else (o, S)),
         "overwritten", CPU),
        ("state transposed [B,H,V,K]", _rla_wrong("transposed", _state_transposed), "looks transposed", CPU),
        ("z as fla's [B,1,H,K]", _rla_wrong("z_fla", _z_fla_layout), "[B, 1, H, K]", CPU),
        ("ignores initial_state", with_kwargs(rla, "ignores_init", initial_state=None), "ignores initial_state",
         CPU),
        ("no scale", with_kwargs(rla, "no_scale", scale=1.0), "missing scale", CPU),
        ("state read before update (exclusive)", with_kwargs(recurrent_linear_attention_loop, "exclusive",
                                                             _exclusive=True),
         "state updated after reading the output", CPU),
        ("exclusive and normalized: 0/0 at t=0", named(
            lambda q, k, v, scale=None, initial_state=None, normalize=False: recurrent_linear_attention_loop(
                q, k, v, scale, initial_state, normalize, _exclusive=normalize)
            if normalize else recurrent_linear_attention(q, k, v, scale, initial_state, normalize), "exclusive_nan"),
         ("NaN at (b=0, t=0, h=0)", "zero normalizer? add eps"), CPU),
        ("non-causal", _rla_wrong("non_causal", lambda o, S, i: (
            _scale(i["q"], i["scale"]) * torch.einsum("bthk,bhkv->bthv", i["q"], S), S)
            if not i["normalize"] else (o, S)), "non-causal", CPU),
        ("reversed time (suffix sums)", _rla_wrong("suffix", lambda o, S, i: (recurrent_linear_attention(
            i["q"].flip(1), i["k"].flip(1), i["v"].flip(1), i["scale"], i["initial_state"], i["normalize"])[0]
            .flip(1), S)), "reversed time", CPU),
        ("missing normalizer", _rla_wrong("no_normalizer", lambda o, state, i: (recurrent_linear_attention(
            i["q"], i["k"], i["v"], i["scale"], None if i["initial_state"] is None else i["initial_state"][0])[0],
            state) if i["normalize"] else (o, state)), "missing normalizer", CPU),
        ("state with a time axis", _rla_wrong("all_states", lambda o, S, i: (o, S[:, None].expand(
            -1, i["q"].shape[1], -1, -1, -1)) if not i["normalize"] else (o, S)), "time axis", CPU),
    ]
    step = linear_attention_step
    cat["2.3"] = [m for m in generic_mistakes(step, tuple_out=True, bthd_out=False)] + [
        ("new_state None", _step_wrong("no_state", no_state=True), "new_state is None", CPU),
        ("mutates state in place", _step_wrong("in_place", in_place=True), "modified its argument `state`", CPU),
        ("reads the state before updating", _step_wrong("exclusive", exclusive=True),
         "state updated after reading the output", CPU),
        ("no scale", _step_wrong("no_scale", no_scale=True), "missing scale", CPU),
        ("ignores the scale argument", _step_wrong("ignores_scale", ignore_scale=True),
         "ignores the scale argument", CPU),
        ("o_t as [H,B,V]", _step_wrong("hb", hb=True), "looks like [H,B,V]", CPU),
        ("NaN", map_o(step, lambda o: nan_at(o, (0, 1)), "nan"), "NaN at (b=0, t=0, h=1)", CPU),
        ("fails on non-contiguous inputs", viewing(step), ".reshape()", CPU),
        ("ignores its state", named(lambda q_t, k_t, v_t, state, scale=None: step(
            q_t, k_t, v_t, torch.zeros_like(state), scale), "forgets"), "ignores the state it is given", CPU),
    ]
    loop = recurrent_linear_attention_loop
    # every forward mistake is caught in 2.4 too (the grad cases use contiguous inputs: no view failure)
    cat["2.4"] = [m for m in generic_mistakes(loop, tuple_out=True) if m[0] != "fails on non-contiguous inputs"]
    cat["2.4"] += [
        ("state detached inside the loop", with_kwargs(loop, "detached_state", _detach_state=True), "detach", CPU),
        ("custom backward, dq without the scale", named(wrong_backward, "wrong_backward"), "gradient dq", CPU),
        ("k detached", named(lambda q, k, v, scale=None, initial_state=None, normalize=False:
                             loop(q, k.detach(), v, scale, initial_state), "detached_k"), "dk is None", CPU),
        ("initial_state detached", named(lambda q, k, v, scale=None, initial_state=None, normalize=False: loop(
            q, k, v, scale, None if initial_state is None else initial_state.detach()), "detached_init"),
         "d(initial_state) is None", CPU),
        ("final_state detached", map_state(loop, lambda S, *a, **k: S.detach(), "detached_final"),
         "final_state does not require grad", CPU),
        ("under torch.no_grad", named(torch.no_grad()(loop), "no_grad"), "does not require grad", CPU),
        ("backward raises", named(raising_backward, "raising_backward"),
         ("backward pass", "ValueError: backward not written yet", "in backward"), CPU),
        ("forward already wrong", with_kwargs(loop, "no_scale", scale=1.0), "fix exercise 2.2 first", CPU),
    ]
    return cat


# ---------------------------------------------------------------------------------- lab 03


def chunk_form_mistakes(fn) -> list[tuple]:
    """Mistakes in the chunkwise formula itself, for 3.1 (loop) and 3.3 (all chunks at once): both take the
    private flags _intra ("none", "strict") and _inter ("none", "incl": the state after this chunk)."""
    return [
        ("intra-chunk mask missing", with_kwargs(fn, "unmasked", _intra="none"), "not masked", CPU),
        ("intra-chunk mask hides the diagonal", with_kwargs(fn, "strict", _intra="strict"), "hides the diagonal",
         CPU),
        ("inter-chunk term missing", with_kwargs(fn, "no_inter", _inter="none"), "missing the inter-chunk term",
         CPU),
        ("inter-chunk reads the updated state (inclusive)", with_kwargs(fn, "inclusive_inter", _inter="incl"),
         "reads the state *after* adding this chunk", CPU),
        ("ignores initial_state", with_kwargs(fn, "ignores_init", initial_state=None), "ignores initial_state", CPU),
        ("final_state None", map_state(fn, lambda s, *a, **k: None, "no_state"), "final_state is None", CPU),
        ("no scale", with_kwargs(fn, "no_scale", scale=1.0), "missing scale", CPU),
    ]


def _catalogue_lab03() -> dict[str, list[tuple]]:
    cat: dict[str, list[tuple]] = {}
    ch = chunk_linear_attention

    def padded(q, k, v, chunk_size=16, scale=None, initial_state=None):
        pad = (-q.shape[1]) % chunk_size
        zq = lambda x: torch.cat([x, x.new_zeros(x.shape[0], pad, *x.shape[2:])], 1)
        return ch(zq(q), zq(k), zq(v), chunk_size, scale, initial_state)

    def drops_tail(q, k, v, chunk_size=16, scale=None, initial_state=None):
        o, S = ch(q, k, v, chunk_size, scale, initial_state, _stop=lambda T, C: (T // C) * C)
        return o[:, :(q.shape[1] // chunk_size) * chunk_size], S

    cat["3.1"] = generic_mistakes(ch, tuple_out=True) + [
        ("ragged last chunk skipped", with_kwargs(ch, "skips_ragged", _stop=lambda T, C: (T // C) * C),
         "last, partial chunk", CPU),
        ("ragged last chunk dropped from o", named(drops_tail, "drops_tail"), "your output drops it", CPU),
        ("mask built from chunk_size", with_kwargs(ch, "fixed_mask", _mask_from_chunk_size=True),
         ("RuntimeError", "last, partial chunk"), CPU),
        ("returns the padded length", named(padded, "padded"), "zero-padded length", CPU),
    ] + chunk_form_mistakes(ch)
    bt = chunk_linear_attention_batched
    cat["3.3"] = generic_mistakes(bt, tuple_out=True) + [
        ("loops over chunks (Exercise 3.1's answer)", ch, "loop check", CPU),
        ("ragged last chunk dropped", with_kwargs(bt, "floor_chunks", _tail="floor"), "your output drops it", CPU),
        ("padded length returned", with_kwargs(bt, "unsliced", _slice=False), "zero-padded length", CPU),
    ] + chunk_form_mistakes(bt)
    n = lambda T, C: T // C
    per = lambda C, K, V: 2 * C * C * K + 2 * C * C * V + 4 * C * K * V
    cat["3.2"] = [
        ("one chunk too many", named(lambda T, C, K, V: (n(T, C) + 1) * per(C, K, V), "off_by_one"), "T // C", CPU),
        ("1 FLOP per multiply-add", named(lambda T, C, K, V: n(T, C) * per(C, K, V) // 2, "half"),
         "2 FLOPs per multiply-add", CPU),
        ("triangular intra-chunk count", named(lambda T, C, K, V: n(T, C) * (C * (C + 1) * (K + V) + 4 * C * K * V),
                                              "triangle"), "full C×C block", CPU),
        ("missing the state update", named(lambda T, C, K, V: n(T, C) * (2 * C * C * (K + V) + 2 * C * K * V),
                                           "no_update"), "missing a C K V term", CPU),
        ("missing QK^T", named(lambda T, C, K, V: n(T, C) * (2 * C * C * V + 4 * C * K * V), "no_qk"),
         "missing the Q K^T term", CPU),
        ("per chunk only", named(lambda T, C, K, V: per(C, K, V), "per_chunk"), "number of chunks", CPU),
        ("quadratic form", named(lambda T, C, K, V: 2 * T * T * (K + V), "quadratic"), "quadratic", CPU),
        ("returns a float", named(lambda T, C, K, V: T / C * per(C, K, V), "float_result"), "Python int", CPU),
        ("returns None", named(lambda T, C, K, V: None, "returns_none"), "`return`", CPU),
        ("raises inside", named(lambda T, C, K, V: T // (C - C), "divides_by_zero"),
         ("ZeroDivisionError", "T // (C - C)"), CPU),
        ("unrelated wrong number", named(lambda T, C, K, V: 12345, "constant"), "count each matmul", CPU),
    ]
    return cat


CATALOGUE: dict[str, list[tuple]] = {**_catalogue_lab01(), **_catalogue_lab02(), **_catalogue_lab03()}
RESULTS: dict[str, tuple[int, int]] = {}


# ========================================================================================================
# Tests
# ========================================================================================================


def test_every_contract_exercise_is_registered():
    _load_specs()
    assert set(IDS) <= set(EXERCISES), sorted(set(IDS) - set(EXERCISES))


@pytest.mark.parametrize("ex_id", IDS)
def test_correct_implementation_passes(ex_id, capsys):
    fn = CORRECT[ex_id]
    grade(ex_id, fn, **CPU)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"✅ Exercise {ex_id} passed: {fn.__name__}"
    assert lines[1].startswith("   details: ") and len(lines) == 2


@pytest.mark.parametrize("ex_id", ["1.1", "1.2a", "1.3a", "2.1", "2.2", "2.3", "2.4", "3.1", "3.3"])
def test_correct_implementation_passes_in_bf16(ex_id, capsys):
    grade(ex_id, CORRECT[ex_id], **BF16)
    assert "bfloat16" in capsys.readouterr().out


def test_a_plain_bf16_loop_passes():
    """A student who keeps everything in bf16 (state too) is within the bf16 tolerance."""

    def bf16_everywhere(q, k, v, scale=None, initial_state=None, normalize=False):
        S = torch.zeros(q.shape[0], q.shape[2], q.shape[3], v.shape[-1], dtype=q.dtype, device=q.device) \
            if initial_state is None else initial_state
        outs = []
        for t in range(q.shape[1]):
            S = S + k[:, t, :, :, None] * v[:, t, :, None, :]
            outs.append(_scale(q, scale) * torch.einsum("bhk,bhkv->bhv", q[:, t], S))
        return torch.stack(outs, 1), S

    _load_specs()
    grade("2.4", bf16_everywhere, quiet=True, **BF16)


def test_both_recurrent_forms_pass_both_exercises():
    grade("2.2", recurrent_linear_attention_loop, quiet=True, **CPU)
    grade("2.4", recurrent_linear_attention, quiet=True, **CPU)


def test_stub_raises_not_implemented_unchanged():
    def stub(q, k, v, scale=None, initial_state=None, normalize=False):
        raise NotImplementedError("Exercise 2.2: write the recurrent form")

    with pytest.raises(NotImplementedError, match="Exercise 2.2: write the recurrent form"):
        grade("2.2", stub, **CPU)


def test_failure_message_reads_like_a_review():
    with pytest.raises(AssertionError) as info:
        grade("2.2", with_kwargs(recurrent_linear_attention_loop, "exclusive", _exclusive=True), **CPU)
    msg = str(info.value)
    for part in ("fails case 1/", "B=1 T=63 H=2", "float32", "relative RMS error", "max abs error",
                 "first wrong at (b=0, t=0, h=0, :)", "expected [", "got      [", "hint:"):
        assert part in msg, (part, msg)


def test_head_first_message_names_both_shapes():
    with pytest.raises(AssertionError) as info:
        grade("2.2", map_o(recurrent_linear_attention, lambda o: o.transpose(1, 2), "head_first"), **CPU)
    assert "expected shape [1, 63, 2, 32], got [1, 2, 63, 32] — looks head-first [B,H,T,D]; the course uses " \
           "[B,T,H,D]" in str(info.value)


def test_unknown_exercise_and_options():
    with pytest.raises(ValueError, match="unknown exercise"):
        grade("9.9", softmax_attention)
    with pytest.raises(TypeError, match="unknown options"):
        grade("1.1", softmax_attention, devcie="cpu")
    with pytest.raises(TypeError, match="expects your function"):
        grade("1.1", None)


def test_wrong_signature_is_explained():
    with pytest.raises(AssertionError, match="the function must accept the arguments of the spec"):
        grade("2.2", named(lambda q, k, v: recurrent_linear_attention(q, k, v), "too_few_args"), **CPU)


def test_chunkwise_formula_matches_the_flop_counter():
    from course_utils.exercises.lab03 import count_chunkwise_flops

    for T, C, K, V in [(64, 16, 16, 16), (96, 8, 32, 16), (1024, 32, 128, 64)]:
        assert count_chunkwise_flops(T, C, K, V) == chunkwise_flops(T, C, K, V)


@pytest.mark.parametrize("ex_id", IDS)
def test_mistakes_are_rejected_with_the_right_hint(ex_id):
    caught, missed = 0, []
    for label, fn, expect, options in CATALOGUE[ex_id]:
        expect = (expect,) if isinstance(expect, str) else expect
        try:
            grade(ex_id, fn, quiet=True, **options)
        except AssertionError as exc:
            absent = [e for e in expect if e not in str(exc)]
            if absent:
                missed.append(f"{label}: message lacks {absent}:\n{exc}")
            else:
                caught += 1
        else:
            missed.append(f"{label}: passed the grader")
    RESULTS[ex_id] = (caught, len(CATALOGUE[ex_id]))
    assert not missed, "\n\n".join(missed)


def test_zz_catalogue_summary(capsys):
    """Runs last (pytest keeps file order): one line per exercise, then the total."""
    if len(RESULTS) < len(IDS):
        pytest.skip("run the whole module for the summary")
    with capsys.disabled():
        print()
        for ex_id in IDS:
            c, t = RESULTS[ex_id]
            print(f"  exercise {ex_id:<5} caught {c}/{t}")
        c, t = sum(r[0] for r in RESULTS.values()), sum(r[1] for r in RESULTS.values())
        print(f"  caught {c}/{t}")
    assert c == t
