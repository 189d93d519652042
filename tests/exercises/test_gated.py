"""The gated family (Lab 04's GLA: 4.1, 4.2a, 4.2b, 4.3, 4.4): solutions pass, every catalogued mistake is
rejected with its hint, correct code written differently passes too, and the CPU reference of fla's layer
follows the layer."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_rejected, slug, solution
from family_tests import (  # noqa: F401  (collected here, parametrized by IDS)
    test_solution_passes,
    test_solution_passes_in_bf16,
)

from course_utils.exercises import EXERCISES, gated, grade
from course_utils.grading.generic import CPU, catalogue

IDS = ["4.1", "4.2a", "4.2b", "4.3", "4.4"]

# 4.4 returns [B, T, D] (no head axis): two generic mistakes read differently there
LAYER_SAYS = {"head-first [B,H,T,D]": ("looks like [B,D,T]",), "NaN": ("NaN at (b=0, t=5)",)}


def _params(ids):
    out = []
    for ex_id in ids:
        for m in catalogue(EXERCISES[ex_id], solution(ex_id)):
            if ex_id == "4.4" and m.name in LAYER_SAYS:
                m = dataclasses.replace(m, says=LAYER_SAYS[m.name])
            out.append(pytest.param(ex_id, m, id=f"{ex_id}-{slug(m.name)}"))
    return out


@pytest.mark.parametrize("ex_id, mistake", _params(IDS))
def test_mistake_is_rejected(ex_id, mistake):
    assert_rejected(ex_id, mistake)


def test_every_exercise_names_its_own_mistakes():
    sizes = {ex_id: len(EXERCISES[ex_id].mistakes) for ex_id in IDS}
    assert all(n >= 10 for n in sizes.values()), sizes


# ------------------------------------------------------------------------------------------ correct alternatives


def gla_recurrent_matmul(q, k, v, g, scale=None, initial_state=None):
    """Head-first matmuls with the state kept transposed [B, H, V, K], decayed along its last axis."""
    B, T, H, K = q.shape
    s = K ** -0.5 if scale is None else scale
    qh, kh, vh, ah = (x.float().transpose(1, 2) for x in (q, k, v, g.exp()))  # [B, H, T, D]
    St = qh.new_zeros(B, H, v.shape[-1], K) if initial_state is None else initial_state.float().transpose(-1, -2)
    outs = []
    for t in range(T):
        St = St * ah[:, :, t, None, :] + vh[:, :, t, :, None] @ kh[:, :, t, None, :]
        outs.append((St @ (s * qh[:, :, t, :, None]))[..., 0])
    return torch.stack(outs, dim=2).transpose(1, 2).to(q.dtype), St.transpose(-1, -2)


def gla_parallel_where_clamped(q, k, v, g, scale=None):
    """Log space with the exponent clamped at 0 (finite everywhere) and the mask applied after: also safe."""
    s = q.shape[-1] ** -0.5 if scale is None else scale
    T = q.shape[1]
    G = g.float().cumsum(1).transpose(1, 2)  # [B, H, T, K]
    D = (G[:, :, :, None] - G[:, :, None, :]).clamp(max=0.0)  # [B, H, T, T, K]
    W = D.exp() * torch.ones(T, T, device=q.device).tril()[:, :, None]
    A = torch.einsum("bthk,bshk,bhtsk->bhts", q.float() * s, k.float(), W)
    return torch.einsum("bhts,bshv->bthv", A, v.float()).to(q.dtype)


def gla_chunkwise_all_at_once(q, k, v, g, chunk_size=64, scale=None, initial_state=None):
    """Every chunk at once (a loop only for the recurrence between chunk states), sub-chunks of 8, the
    off-diagonal sub-blocks against one reference per query sub-chunk, matmuls where they read well."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    s = K ** -0.5 if scale is None else scale
    dtype, C = q.dtype, chunk_size
    c = min(8, C)
    N, n_sub = -(-T // C), C // min(8, C)
    pad = N * C - T
    q, k, v, g = (F.pad(x.float(), (0, 0, 0, 0, 0, pad)).view(B, N, C, H, -1).transpose(2, 3) for x in (q, k, v, g))
    G = g.cumsum(dim=3)  # [B, N, H, C, K]
    sub = torch.arange(C, device=q.device) // c  # the sub-chunk of each position
    # off-diagonal sub-blocks: reference = G where the query's sub-chunk starts (0 for the first one)
    refs = torch.cat([torch.zeros_like(G[..., :1, :]), G[..., c - 1:C - 1:c, :]], dim=-2)  # [B, N, H, n_sub, K]
    qd = q * (G - refs[..., sub, :]).exp()
    kd = k[..., None, :, :] * (refs[..., :, None, :] - G[..., None, :, :]).clamp(max=0.0).exp()  # [.., n_sub, C, K]
    earlier = (sub[:, None] > sub[None, :]).float()  # [C(t), C(s)]
    A_off = torch.einsum("bnhtk,bnhtsk->bnhts", qd, kd[..., sub, :, :]) * earlier
    # diagonal sub-blocks, in log space: [B, N, H, n_sub, c, c]
    qs, ks, vs, Gs = (x.unflatten(-2, (n_sub, c)) for x in (q, k, v, G))
    Dg = (Gs[..., :, None, :] - Gs[..., None, :, :]).masked_fill(
        ~torch.ones(c, c, dtype=torch.bool, device=q.device).tril()[:, :, None], float("-inf"))
    A_diag = torch.einsum("bnhitk,bnhisk,bnhitsk->bnhits", qs, ks, Dg.exp())
    o = A_off @ v + (A_diag @ vs).flatten(-3, -2)
    # chunk states: S_[n+1] = diag(e^G_C) S_[n] + (K * e^(G_C - G))^T V
    G_C = G[..., -1, :]  # [B, N, H, K]
    U = (k * (G_C[..., None, :] - G).exp()).transpose(-1, -2) @ v  # [B, N, H, K, V]
    S = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.float()
    states = []
    for n in range(N):
        states.append(S)
        S = G_C[:, n, ..., None].exp() * S + U[:, n]
    o = o + (q * G.exp()) @ torch.stack(states, dim=1)
    return (s * o).transpose(2, 3).reshape(B, N * C, H, V)[:, :T].to(dtype), S


def gla_layer_functional(x, params, num_heads, gate_logit_normalizer=16, norm_eps=1e-5):
    """F.linear, F.rms_norm and the recurrence (not the chunkwise form) inside."""
    B, T, D = x.shape
    P = {n: w.float() for n, w in params.items()}
    xf = x.float()
    lin = lambda t, name: F.linear(t, P[name])  # noqa: E731
    split = lambda t: t.unflatten(-1, (num_heads, -1))  # noqa: E731
    q, k, v = split(lin(xf, "q_proj.weight")), split(lin(xf, "k_proj.weight")), split(lin(xf, "v_proj.weight"))
    z = F.linear(lin(xf, "gk_proj.0.weight"), P["gk_proj.1.weight"], P["gk_proj.1.bias"])
    o, _ = gla_recurrent_matmul(q, k, v, split(F.logsigmoid(z)) / gate_logit_normalizer)
    w = P["g_norm_swish_gate.weight"]
    o = F.rms_norm(o, (o.shape[-1],), w, eps=norm_eps) * F.silu(split(lin(xf, "g_proj.weight")))
    return lin(o.flatten(-2), "o_proj.weight").to(x.dtype)


@pytest.mark.parametrize("ex_id, fn", [
    ("4.1", gla_recurrent_matmul),
    ("4.2b", gla_parallel_where_clamped),
    ("4.3", gla_chunkwise_all_at_once),
    ("4.4", gla_layer_functional),
], ids=lambda x: x if isinstance(x, str) else x.__name__)
def test_correct_alternatives_pass(ex_id, fn):
    grade(ex_id, fn, quiet=True, **CPU)


def test_the_recurrence_passes_as_a_parallel_form_only_without_its_loop():
    """4.1's function has the right values for 4.2b, and the loop check is what rejects it."""
    wrapped = lambda q, k, v, g, scale=None: gla_recurrent_matmul(q, k, v, g, scale)[0]  # noqa: E731
    with pytest.raises(AssertionError, match="loop check"):
        grade("4.2b", wrapped, quiet=True, **CPU)


# ------------------------------------------------------------------------------------------ the layer's reference


def test_cpu_reference_follows_the_fla_layer_modules():
    """fla_layer_reference on a CPU = the layer's own modules around fla's naive GLA and the norm's formula;
    a change of one weight in the layer changes it."""
    gen = torch.Generator().manual_seed(0)
    params = gated.layer_params(gen, 32, 2)
    layer = gated.fla_layer(params, hidden_size=32, num_heads=2)
    x = torch.randn(1, 20, 32, generator=gen)
    with torch.no_grad():
        y = gated.fla_layer_reference(layer, x)
        assert y.shape == (1, 20, 32)
        assert torch.allclose(y, solution("4.4")(x, params, 2), atol=1e-5)
        layer.o_proj.weight.mul_(2.0)
        assert torch.allclose(gated.fla_layer_reference(layer, x), 2 * y, atol=1e-5)


def test_cpu_reference_refuses_configurations_it_does_not_follow():
    layer = gated.fla_layer(gated.layer_params(torch.Generator().manual_seed(0), 32, 2), hidden_size=32,
                            num_heads=2, use_short_conv=False)
    layer.use_short_conv = True
    with pytest.raises(NotImplementedError, match="use_short_conv"):
        gated.fla_layer_reference(layer, torch.randn(1, 4, 32))


def test_gates_are_log_space_and_follow_the_case():
    case = EXERCISES["4.1"].cases(torch.device("cpu"), [torch.float32])[3]  # the strong-gate case
    g = gated.make_qkvg(case, torch.device("cpu"))["g"]
    assert (g <= 0).all() and g.mean() < -4
    paper = gated.make_qkvg(EXERCISES["4.1"].cases(torch.device("cpu"), [torch.float32])[0], torch.device("cpu"))
    assert -0.5 < paper["g"].min() and paper["g"].max() <= 0
