"""Tests for course_utils.refs: every adapter against an independent loop, against its other forms, and
against the other families it is a special case of; initial-state handling; input checks.

All on the CPU (the libraries' pure-PyTorch references), small sizes: the file runs in well under a minute.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import course_utils  # noqa: F401  (sets TRITON_INTERPRET before fla / mamba-ssm define kernels)
from course_utils import refs
from course_utils.conventions import relative_rms_error

# ----------------------------------------------------------------------------------------- helpers


def assert_close(got, want, tol=2e-5):
    if isinstance(want, (tuple, list)):
        assert isinstance(got, (tuple, list)) and len(got) == len(want)
        for g_, w_ in zip(got, want):
            assert_close(g_, w_, tol)
        return
    assert got.shape == want.shape, f"shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = relative_rms_error(got, want)
    assert err < tol, f"relative RMS error {err:.3g} >= {tol}"


def make(B=2, T=37, H=3, K=8, V=5, seed=0):
    """Inputs for every fla family: positive feature-mapped q, k; L2-normalised keys for the delta rule."""
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    return dict(
        q=F.elu(r(B, T, H, K)) + 1,
        k=F.elu(r(B, T, H, K)) + 1,
        kn=F.normalize(r(B, T, H, K), dim=-1),
        v=r(B, T, H, V),
        gk=F.logsigmoid(r(B, T, H, K) + 3),  # decays near 0.95
        g=F.logsigmoid(r(B, T, H) + 3),
        beta=torch.rand(B, T, H, generator=gen),
        S0=r(B, H, K, V),
        z0=torch.rand(B, H, K, generator=gen),
    )


def loop_ref(q, k, v, scale, S0=None, log_decay=None, beta=None, normalize=False, z0=None):
    """The recurrence of every fla family here, one token at a time in float64 (written from the
    equations, no library code):  S <- diag(exp(log_decay_t)) S;  S <- S + beta_t k_t (v_t - S^T k_t)^T
    (delta rule) or S <- S + k_t v_t^T;  o_t = scale q_t^T S  (/ scale q_t^T z_t when normalize).
    log_decay: [B, T, H, K] (per channel) or None.   Returns (o, S) or (o, (S, z)).
    """
    q, k, v = q.double(), k.double(), v.double()
    B, T, H, K = q.shape
    S = torch.zeros(B, H, K, v.shape[-1], dtype=torch.float64)
    z = torch.zeros(B, H, K, dtype=torch.float64)
    if S0 is not None:
        S = S + S0.double()
    if z0 is not None:
        z = z + z0.double()
    out = []
    for t in range(T):
        kt, vt = k[:, t], v[:, t]
        if log_decay is not None:
            S = S * log_decay[:, t].double().exp()[..., None]
        if beta is None:
            S = S + kt[..., None] * vt[..., None, :]
        else:
            pred = torch.einsum("bhk,bhkv->bhv", kt, S)
            S = S + beta[:, t].double()[..., None, None] * kt[..., None] * (vt - pred)[..., None, :]
        z = z + kt
        o = scale * torch.einsum("bhk,bhkv->bhv", q[:, t], S)
        if normalize:
            o = o / (scale * (q[:, t] * z).sum(-1, keepdim=True) + 1e-10)
        out.append(o)
    o = torch.stack(out, 1)
    return (o, (S, z)) if normalize else (o, S)


def softmax_loop(q, k, v, causal, scale):
    """softmax attention, one query at a time (float64)."""
    q, k, v = q.double(), k.double(), v.double()
    B, T, H, _ = q.shape
    o = torch.zeros(B, T, H, v.shape[-1], dtype=torch.float64)
    for t in range(T):
        s_end = t + 1 if causal else T
        scores = scale * torch.einsum("bhk,bshk->bhs", q[:, t], k[:, :s_end])
        o[:, t] = torch.einsum("bhs,bshv->bhv", scores.softmax(-1), v[:, :s_end])
    return o


# ------------------------------------------------------------------------ attention baselines


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("scale", [None, 0.7])
def test_softmax_attention_matches_loop(causal, scale):
    d = make(T=19, K=6)
    o = refs.softmax_attention(d["q"], d["k"], d["v"], causal=causal, scale=scale)
    assert o.shape == d["v"].shape and o.dtype == d["q"].dtype
    assert_close(o, softmax_loop(d["q"], d["k"], d["v"], causal, scale or 6**-0.5))
    assert refs.last_backend() == "torch.nn.functional.scaled_dot_product_attention (CPU)"


@pytest.mark.parametrize("normalize", [True, False])
def test_linear_attention_noncausal_matches_loop(normalize):
    d = make(T=23)
    q, k, v = d["q"], d["k"], d["v"]
    o = refs.linear_attention_noncausal(q, k, v, normalize=normalize, scale=0.5)
    # pairwise form: o_i = sum_j (q_i.k_j) v_j / sum_j q_i.k_j
    A = 0.5 * torch.einsum("bihk,bjhk->bhij", q.double(), k.double())
    want = torch.einsum("bhij,bjhv->bihv", A, v.double())
    if normalize:
        want = want / A.sum(-1).transpose(1, 2).unsqueeze(-1)
    assert_close(o, want)
    assert "einsum" in refs.last_backend()


def test_noncausal_equals_last_causal_output():
    # The last causal token sees every key: it equals the non-causal output at that position.
    d = make(T=30)
    o_nc = refs.linear_attention_noncausal(d["q"], d["k"], d["v"], normalize=True)
    o_c, _ = refs.linear_attention(d["q"], d["k"], d["v"], normalize=True)
    assert_close(o_c[:, -1], o_nc[:, -1])


# ---------------------------------------------------------------------- linear attention (causal)


@pytest.mark.parametrize("mode", ["recurrent", "chunk", "auto"])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_linear_attention_matches_loop(mode, normalize, with_state):
    d = make(T=70)  # > 64: the chunk form pads to 128 and crosses a chunk boundary
    init = None
    if with_state:
        init = (d["S0"], d["z0"]) if normalize else d["S0"]
    o, st = refs.linear_attention(d["q"], d["k"], d["v"], scale=0.4, initial_state=init,
                                  normalize=normalize, mode=mode)
    want = loop_ref(d["q"], d["k"], d["v"], 0.4, S0=d["S0"] if with_state else None,
                    z0=d["z0"] if with_state and normalize else None, normalize=normalize)
    assert_close((o, st), want)
    if normalize:
        assert st[0].shape == (2, 3, 8, 5) and st[1].shape == (2, 3, 8)
    name = "naive_chunk_linear_attn" if mode == "chunk" else "naive_recurrent_linear_attn"
    assert refs.last_backend().startswith(f"fla.ops.linear_attn.{name} (CPU")


def test_linear_attention_default_scale_and_no_mutation():
    d = make()
    S0 = d["S0"].clone()
    o, _ = refs.linear_attention(d["q"], d["k"], d["v"], initial_state=S0)
    assert torch.equal(S0, d["S0"]), "the caller's initial_state was modified"
    assert_close(o, loop_ref(d["q"], d["k"], d["v"], 8**-0.5, S0=d["S0"])[0])


def test_linear_attention_gradients_match_loop():
    # Lab 02 grades gradients against autograd through this reference.
    d = make(B=1, T=12, H=2, K=4, V=3)
    leaves = [d[n].clone().requires_grad_() for n in ("q", "k", "v", "S0")]
    leaves64 = [x.detach().double().requires_grad_() for x in leaves]
    o, S = refs.linear_attention(*leaves[:3], initial_state=leaves[3])
    (o.square().sum() + S.sum()).backward()
    o2, S2 = loop_ref(*leaves64[:3], 0.5, S0=leaves64[3])
    (o2.square().sum() + S2.sum()).backward()
    for a, b in zip(leaves, leaves64):
        assert_close(a.grad, b.grad, 1e-4)


def test_low_precision_inputs_keep_dtype():
    d = make(T=9)
    q, k, v = (d[n].bfloat16() for n in ("q", "k", "v"))
    for mode in ("recurrent", "chunk"):
        o, S = refs.linear_attention(q, k, v, mode=mode)
        assert o.dtype == torch.bfloat16 and S.dtype == torch.float32
    o, S = refs.simple_gla(q, k, v, d["g"], mode="chunk")
    assert o.dtype == torch.bfloat16 and S.dtype == torch.float32


# ---------------------------------------------------------------- every gated family vs the loop

FAMILIES = {
    # name: (call(d, mode, S0, scale) -> (o, S), loop kwargs(d))
    "gla": (lambda d, m, S0, s: refs.gla(d["q"], d["k"], d["v"], d["gk"], s, S0, m),
            lambda d: dict(log_decay=d["gk"])),
    "simple_gla": (lambda d, m, S0, s: refs.simple_gla(d["q"], d["k"], d["v"], d["g"], s, S0, m),
                   lambda d: dict(log_decay=d["g"][..., None].expand_as(d["q"]))),
    "retention": (lambda d, m, S0, s: refs.retention(d["q"], d["k"], d["v"], s, S0, m),
                  lambda d: dict(log_decay=refs.retention_gammas(d["q"].shape[2]).log()[:, None]
                                 .expand_as(d["q"]))),
    "delta_rule": (lambda d, m, S0, s: refs.delta_rule(d["q"], d["kn"], d["v"], d["beta"], s, S0, m),
                   lambda d: dict(beta=d["beta"])),
    "gated_delta_rule": (
        lambda d, m, S0, s: refs.gated_delta_rule(d["q"], d["kn"], d["v"], d["g"], d["beta"], s, S0, m),
        lambda d: dict(beta=d["beta"], log_decay=d["g"][..., None].expand_as(d["q"]))),
}
CASES = [(f, m) for f in FAMILIES for m in ("auto", "recurrent", "chunk")]


@pytest.mark.parametrize("family,mode", CASES)
@pytest.mark.parametrize("with_state", [False, True])
def test_family_matches_loop(family, mode, with_state):
    d = make(T=45)
    call, loop_kw = FAMILIES[family]
    S0 = d["S0"] if with_state else None
    o, S = call(d, mode, S0, 0.3)
    kk = d["kn"] if "delta" in family else d["k"]
    assert_close((o, S), loop_ref(d["q"], kk, d["v"], 0.3, S0=S0, **loop_kw(d)))
    assert S.dtype == torch.float32 and o.dtype == d["q"].dtype


@pytest.mark.parametrize("family,mode", CASES)
def test_family_initial_state_halves(family, mode):
    # Running [0, t) and then [t, T) from the state passed across == one run over [0, T).
    d = make(T=40)
    call, _ = FAMILIES[family]
    o, S = call(d, mode, d["S0"], None)
    first = {n: (x[:, :17] if x.ndim >= 3 and x.shape[1] == 40 else x) for n, x in d.items()}
    second = {n: (x[:, 17:] if x.ndim >= 3 and x.shape[1] == 40 else x) for n, x in d.items()}
    o1, S1 = call(first, mode, d["S0"], None)
    o2, S2 = call(second, mode, S1, None)
    assert_close(torch.cat([o1, o2], 1), o)
    assert_close(S2, S)


@pytest.mark.parametrize("family,mode", CASES)
def test_family_leaves_initial_state_alone(family, mode):
    d = make(T=10)
    S0 = d["S0"].clone()
    FAMILIES[family][0](d, mode, S0, None)
    assert torch.equal(S0, d["S0"])


def test_backend_names():
    d = make(T=5)
    expected = {
        ("gla", "auto"): "fla.ops.gla.naive_recurrent_gla (CPU)",
        ("simple_gla", "chunk"): "fla.ops.simple_gla.naive_chunk_simple_gla (CPU)",
        ("retention", "auto"): "fla.ops.retention.naive_retention (CPU",
        ("retention", "recurrent"): "fla.ops.simple_gla.naive_recurrent_simple_gla (CPU)",
        ("delta_rule", "auto"): "fla.ops.delta_rule.delta_rule_recurrence (CPU)",
        ("delta_rule", "chunk"): "fla.ops.delta_rule.delta_rule_chunkwise (CPU",
        ("gated_delta_rule", "recurrent"): "fla.ops.gated_delta_rule.naive_recurrent_gated_delta_rule (CPU)",
        ("gated_delta_rule", "chunk"): "fla.ops.gated_delta_rule.naive_chunk_gated_delta_rule (CPU)",
    }
    for (family, mode), name in expected.items():
        FAMILIES[family][0](d, mode, None, None)
        assert refs.last_backend().startswith(name), refs.last_backend()
    FAMILIES["gla"][0](d, "chunk", None, None)
    assert "no CPU chunk form" in refs.last_backend()


# ------------------------------------------------------------------------- families as special cases


def test_retention_is_simple_gla_with_fixed_gate():
    d = make(T=50, H=4)
    gamma = refs.retention_gammas(4)
    assert torch.allclose(gamma, torch.tensor([1 - 2**-5, 1 - 2**-6, 1 - 2**-7, 1 - 2**-8]))
    g = gamma.log().expand(2, 50, 4)
    want = refs.simple_gla(d["q"], d["k"], d["v"], g, initial_state=d["S0"], mode="recurrent")
    got = refs.retention(d["q"], d["k"], d["v"], initial_state=d["S0"])  # naive_retention on CPU
    assert refs.last_backend().startswith("fla.ops.retention.naive_retention")
    assert_close(got, want)


def test_gated_delta_rule_with_zero_gate_is_delta_rule():
    d = make(T=33)
    zero = torch.zeros_like(d["g"])
    for mode in ("recurrent", "chunk"):
        got = refs.gated_delta_rule(
            d["q"], d["kn"], d["v"], zero, d["beta"], initial_state=d["S0"], mode=mode
        )
        want = refs.delta_rule(d["q"], d["kn"], d["v"], d["beta"], initial_state=d["S0"], mode=mode)
        assert_close(got, want)


def test_gla_with_channel_constant_gate_is_simple_gla():
    d = make(T=20)
    got = refs.gla(d["q"], d["k"], d["v"], d["g"][..., None].expand_as(d["q"]), initial_state=d["S0"])
    want = refs.simple_gla(d["q"], d["k"], d["v"], d["g"], initial_state=d["S0"])
    assert_close(got, want)


def test_linear_attention_is_simple_gla_with_zero_gate():
    d = make(T=20)
    got = refs.linear_attention(d["q"], d["k"], d["v"], initial_state=d["S0"])
    want = refs.simple_gla(d["q"], d["k"], d["v"], torch.zeros_like(d["g"]), initial_state=d["S0"])
    assert_close(got, want)


# ------------------------------------------------------------------------------------------- SSMs


def ssd_inputs(Bz=2, L=45, H=4, P=3, G=2, N=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    return dict(x=r(Bz, L, H, P), dt=F.softplus(r(Bz, L, H) - 1), A=-torch.rand(H, generator=gen) - 0.1,
                B=r(Bz, L, G, N), C=r(Bz, L, G, N), h0=r(Bz, H, P, N), D=r(H))


def ssd_as_simple_gla(s, h0=None):
    """SSD in fla's terms: C <-> q, B <-> k, dt * x <-> v, dt * A <-> g, scale 1. mamba's state is
    [H, P, N] (value dim first), fla's [K, V] = [N, P]: transpose on the way in and out."""
    H, G = s["x"].shape[2], s["B"].shape[2]
    q = s["C"].repeat_interleave(H // G, dim=2)
    k = s["B"].repeat_interleave(H // G, dim=2)
    v = s["x"] * s["dt"].unsqueeze(-1)
    init = None if h0 is None else h0.transpose(-1, -2)
    o, S = refs.simple_gla(q, k, v, s["dt"] * s["A"], scale=1.0, initial_state=init, mode="recurrent")
    return o, S.transpose(-1, -2)


@pytest.mark.parametrize("chunk_size", [16, 64])
@pytest.mark.parametrize("with_state", [False, True])
def test_ssd_is_simple_gla(chunk_size, with_state):
    s = ssd_inputs()
    h0 = s["h0"] if with_state else None
    y, final = refs.ssd(s["x"], s["dt"], s["A"], s["B"], s["C"], chunk_size=chunk_size, initial_states=h0)
    assert y.shape == s["x"].shape and final.shape == (2, 4, 3, 5)
    assert refs.last_backend().startswith("mamba_ssm.modules.ssd_minimal_discrete (CPU")
    assert_close((y, final), ssd_as_simple_gla(s, h0), 1e-4)


def test_ssd_skip_connection_and_halves():
    s = ssd_inputs(L=30)
    args = lambda sl: (s["x"][:, sl], s["dt"][:, sl], s["A"], s["B"][:, sl], s["C"][:, sl])  # noqa: E731
    y, final = refs.ssd(*args(slice(None)), chunk_size=8, D=s["D"], initial_states=s["h0"])
    y0, _ = refs.ssd(*args(slice(None)), chunk_size=8, initial_states=s["h0"])
    assert_close(y, y0 + s["x"] * s["D"][:, None])
    y1, f1 = refs.ssd(*args(slice(0, 11)), chunk_size=8, D=s["D"], initial_states=s["h0"])
    y2, f2 = refs.ssd(*args(slice(11, None)), chunk_size=8, D=s["D"], initial_states=f1)
    assert_close(torch.cat([y1, y2], 1), y, 1e-4)
    assert_close(f2, final, 1e-4)


def test_ssd_is_selective_scan_with_tied_channels():
    # Mamba-2's SSD is Mamba-1's selective scan with A, dt shared by the P channels of a head.
    s = ssd_inputs(L=21)
    Bz, L, H, P = s["x"].shape
    N = s["B"].shape[-1]
    y, final = refs.ssd(s["x"], s["dt"], s["A"], s["B"], s["C"], chunk_size=8)
    u = s["x"].reshape(Bz, L, H * P).transpose(1, 2)
    delta = s["dt"].repeat_interleave(P, dim=2).transpose(1, 2)
    A = s["A"].repeat_interleave(P)[:, None].expand(H * P, N)
    out, last = refs.selective_scan(u, delta, A, s["B"].permute(0, 2, 3, 1), s["C"].permute(0, 2, 3, 1))
    assert_close(out, y.reshape(Bz, L, H * P).transpose(1, 2), 1e-4)
    assert_close(last, final.reshape(Bz, H * P, N), 1e-4)


def scan_inputs(Bz=2, D=6, N=4, L=17, seed=0):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    return dict(u=r(Bz, D, L), delta=r(Bz, D, L), A=-torch.rand(D, N, generator=gen) - 0.5, B=r(Bz, N, L),
                C=r(Bz, N, L), D=r(D), z=r(Bz, D, L), delta_bias=r(D))


def test_selective_scan_matches_loop():
    s = scan_inputs()
    out, last = refs.selective_scan(s["u"], s["delta"], s["A"], s["B"], s["C"], D=s["D"], z=s["z"],
                                    delta_bias=s["delta_bias"], delta_softplus=True)
    assert refs.last_backend() == "mamba_ssm.selective_scan_ref (CPU)"
    dlt = F.softplus(s["delta"].double() + s["delta_bias"].double()[:, None])
    x = torch.zeros(2, 6, 4, dtype=torch.float64)
    ys = []
    for t in range(17):
        x = torch.exp(dlt[:, :, t, None] * s["A"].double()) * x + (
            dlt[:, :, t, None] * s["B"].double()[:, None, :, t] * s["u"].double()[:, :, t, None])
        ys.append((x * s["C"].double()[:, None, :, t]).sum(-1))
    y = (torch.stack(ys, -1) + s["D"].double()[:, None] * s["u"].double()) * F.silu(s["z"].double())
    assert_close((out, last), (y, x))


def test_selective_state_update_steps_equal_selective_scan():
    s = scan_inputs()
    out, last = refs.selective_scan(s["u"], s["delta"], s["A"], s["B"], s["C"], D=s["D"], z=s["z"],
                                    delta_bias=s["delta_bias"], delta_softplus=True)
    state = torch.zeros(2, 6, 4)
    ys = []
    for t in range(17):
        before = state.clone()
        y, new = refs.selective_state_update(
            state, s["u"][:, :, t], s["delta"][:, :, t], s["A"], s["B"][:, :, t], s["C"][:, :, t],
            D=s["D"], z=s["z"][:, :, t], dt_bias=s["delta_bias"], dt_softplus=True)
        assert torch.equal(state, before), "selective_state_update modified the caller's state"
        ys.append(y)
        state = new
    assert refs.last_backend() == "mamba_ssm.ops.triton.selective_state_update_ref (CPU)"
    assert_close(torch.stack(ys, -1), out)
    assert_close(state, last)


def test_multihead_state_update_steps_equal_ssd():
    # Mamba-2 decoding: the multi-head state update, stepped, reproduces SSD with D.
    s = ssd_inputs(L=12)
    Bz, L, H, P = s["x"].shape
    N = s["B"].shape[-1]
    y, final = refs.ssd(
        s["x"], s["dt"], s["A"], s["B"], s["C"], chunk_size=4, D=s["D"], initial_states=s["h0"]
    )
    state, ys = s["h0"].clone(), []
    A = s["A"][:, None, None].expand(H, P, N)
    for t in range(L):
        o, state = refs.selective_state_update(
            state, s["x"][:, t], s["dt"][:, t, :, None].expand(Bz, H, P), A, s["B"][:, t], s["C"][:, t],
            D=s["D"][:, None].expand(H, P))
        ys.append(o)
    assert_close(torch.stack(ys, 1), y, 1e-4)
    assert_close(state, final, 1e-4)


# --------------------------------------------------------------------------------- discretisation


def test_discretize_scalar_cases():
    a, b, dt = -2.0, 3.0, 0.1
    Ab, Bb = refs.discretize_zoh(np.array([[a]]), np.array([[b]]), dt)
    assert isinstance(Ab, np.ndarray)
    assert np.isclose(Ab[0, 0], np.exp(a * dt)) and np.isclose(Bb[0, 0], (np.exp(a * dt) - 1) / a * b)
    Ab, Bb = refs.discretize_bilinear(np.array([[a]]), np.array([[b]]), dt)
    assert np.isclose(Ab[0, 0], (1 + dt * a / 2) / (1 - dt * a / 2))
    assert np.isclose(Bb[0, 0], dt * b / (1 - dt * a / 2))
    assert refs.last_backend() == "scipy.signal.cont2discrete(method='bilinear') (CPU)"


def test_discretize_matrix_cases():
    gen = torch.Generator().manual_seed(1)
    N = 4
    A = torch.randn(N, N, generator=gen, dtype=torch.float64) - 3 * torch.eye(N, dtype=torch.float64)
    B = torch.randn(N, 1, generator=gen, dtype=torch.float64)
    dt = 0.05
    Ab, Bb = refs.discretize_zoh(A, B, dt)
    assert isinstance(Ab, torch.Tensor) and Ab.dtype == torch.float64
    I = torch.eye(N, dtype=torch.float64)
    assert torch.allclose(Ab, torch.linalg.matrix_exp(dt * A), atol=1e-10)
    assert torch.allclose(Bb, torch.linalg.solve(A, (Ab - I) @ B), atol=1e-10)
    Ab, Bb = refs.discretize_bilinear(A, B, dt)
    inv = torch.linalg.inv(I - dt / 2 * A)
    assert torch.allclose(Ab, inv @ (I + dt / 2 * A), atol=1e-10)
    assert torch.allclose(Bb, inv @ (dt * B), atol=1e-10)
    Ab32, _ = refs.discretize_zoh(A.float(), B.float(), dt)
    assert Ab32.dtype == torch.float32


def test_discretize_bad_inputs():
    with pytest.raises(ValueError, match="square"):
        refs.discretize_zoh(np.zeros((2, 3)), np.zeros((2, 1)), 0.1)
    with pytest.raises(ValueError, match="N = 2 rows"):
        refs.discretize_zoh(np.eye(2), np.zeros((3, 1)), 0.1)
    with pytest.raises(ValueError, match="dt must be a positive"):
        refs.discretize_bilinear(np.eye(2), np.zeros((2, 1)), 0.0)
    with pytest.raises(TypeError, match="must both be torch tensors or both numpy"):
        refs.discretize_zoh(torch.eye(2), np.zeros((2, 1)), 0.1)


# ------------------------------------------------------------------------------------ input checks


def _qkv(**over):
    d = make(T=6)
    args = dict(q=d["q"], k=d["k"], v=d["v"])
    args.update(over)
    return args


BAD_CALLS = [
    # (description, call, exception, message regex)
    ("q 3-D", lambda d: refs.linear_attention(d["q"][0], d["k"], d["v"]), ValueError,
     r"q must be 4-D \[B, T, H, K\]; got 3-D shape \(6, 3, 8\)"),
    ("k other K", lambda d: refs.linear_attention(d["q"], d["k"][..., :4], d["v"]), ValueError,
     r"k must have shape .* = \(2, 6, 3, 8\); got \(2, 6, 3, 4\)"),
    ("k head-first", lambda d: refs.softmax_attention(d["q"], d["k"].transpose(1, 2), d["v"]), ValueError,
     r"looks head-first \[B, H, T, \.\.\.\]"),
    ("v head-first", lambda d: refs.gla(d["q"], d["k"], d["v"].transpose(1, 2), d["gk"]), ValueError,
     r"v must have shape .*looks head-first"),
    ("g head-first", lambda d: refs.simple_gla(d["q"], d["k"], d["v"], d["g"].transpose(1, 2)), ValueError,
     r"g must have shape \[B, T, H\].*looks head-first"),
    ("state says head-first", lambda d: refs.linear_attention(
        d["q"].transpose(1, 2), d["k"].transpose(1, 2), d["v"].transpose(1, 2), initial_state=d["S0"]),
     ValueError, r"q, k, v look head-first"),
    ("state transposed", lambda d: refs.gla(d["q"], d["k"], d["v"], d["gk"],
                                            initial_state=d["S0"].transpose(-1, -2)),
     ValueError, r"looks transposed"),
    ("integer q", lambda d: refs.linear_attention(d["q"].long(), d["k"], d["v"]), TypeError,
     r"q must be a floating tensor .* got torch.int64"),
    ("not a tensor", lambda d: refs.retention(d["q"].numpy(), d["k"], d["v"]), TypeError,
     r"q must be a torch.Tensor .* got ndarray"),
    ("mixed dtypes", lambda d: refs.simple_gla(d["q"], d["k"], d["v"].double(), d["g"]), TypeError,
     r"q is torch.float32 but v is torch.float64"),
    ("devices", lambda d: refs.linear_attention(d["q"], d["k"], d["v"].to("meta")), ValueError,
     r"one device; q is on cpu but v is on meta"),
    ("NaN", lambda d: refs.linear_attention(
        d["q"], d["k"], d["v"].index_fill(1, torch.tensor([2]), float("nan"))),
     ValueError, r"v contains NaN or Inf \(first at index \(0, 2, 0, 0\)\)"),
    ("Inf state", lambda d: refs.delta_rule(d["q"], d["kn"], d["v"], d["beta"], initial_state=d["S0"] / 0),
     ValueError, r"initial_state contains NaN or Inf"),
    ("positive gla gate", lambda d: refs.gla(d["q"], d["k"], d["v"], d["gk"].exp()), ValueError,
     r"gates are in log space: g <= 0"),
    ("positive scalar gate", lambda d: refs.gated_delta_rule(d["q"], d["kn"], d["v"], -d["g"], d["beta"]),
     ValueError, r"gates are in log space: g <= 0"),
    ("beta > 1", lambda d: refs.delta_rule(d["q"], d["kn"], d["v"], d["beta"] + 1), ValueError,
     r"beta must lie in \(0, 1\)"),
    ("beta < 0", lambda d: refs.gated_delta_rule(d["q"], d["kn"], d["v"], d["g"], -d["beta"]), ValueError,
     r"beta must lie in \(0, 1\)"),
    ("per-channel gate to simple_gla", lambda d: refs.simple_gla(d["q"], d["k"], d["v"], d["gk"]), ValueError,
     r"g must be 3-D \[B, T, H\]"),
    ("bad mode", lambda d: refs.simple_gla(d["q"], d["k"], d["v"], d["g"], mode="parallel"), ValueError,
     r"mode must be one of \('auto', 'recurrent', 'chunk'\)"),
    ("bad scale", lambda d: refs.linear_attention(d["q"], d["k"], d["v"], scale=-1.0), ValueError,
     r"scale must be a positive finite number"),
    ("scale string", lambda d: refs.softmax_attention(d["q"], d["k"], d["v"], scale="0.5"), TypeError,
     r"scale must be a positive number or None"),
    ("normalize without pair", lambda d: refs.linear_attention(d["q"], d["k"], d["v"], initial_state=d["S0"],
                                                               normalize=True),
     TypeError, r"with normalize=True the state is a pair \(S \[B, H, K, V\], z \[B, H, K\]\)"),
    ("pair without normalize", lambda d: refs.linear_attention(d["q"], d["k"], d["v"],
                                                               initial_state=(d["S0"], d["z0"])),
     TypeError, r"with normalize=False the state is one tensor"),
    ("z wrong", lambda d: refs.linear_attention(d["q"], d["k"], d["v"], initial_state=(d["S0"], d["z0"][0]),
                                                normalize=True),
     ValueError, r"initial_state\[1\] \(z\) must be 3-D \[B, H, K\]"),
    ("empty", lambda d: refs.linear_attention(d["q"][:, :0], d["k"][:, :0], d["v"][:, :0]), ValueError,
     r"the sequence is empty"),
]


@pytest.mark.parametrize("desc,call,exc,match", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_inputs_give_clear_messages(desc, call, exc, match):
    with pytest.raises(exc, match=match):
        call(make(T=6))


def test_ssm_bad_inputs():
    s, c = ssd_inputs(L=8), scan_inputs(L=8)
    with pytest.raises(ValueError, match=r"ssd: dt is a step size and must be >= 0"):
        refs.ssd(s["x"], -s["dt"], s["A"], s["B"], s["C"])
    with pytest.raises(ValueError, match=r"ssd: A must be <= 0"):
        refs.ssd(s["x"], s["dt"], -s["A"], s["B"], s["C"])
    with pytest.raises(ValueError, match=r"A must have shape \[H\] .* = \(4\); got \(2\)"):
        refs.ssd(s["x"], s["dt"], s["A"][:2], s["B"], s["C"])
    with pytest.raises(ValueError, match=r"ssd: A must be 1-D \[H\]; got 2-D"):
        refs.ssd(s["x"], s["dt"], s["A"][:, None], s["B"], s["C"])
    with pytest.raises(ValueError, match=r"G = 3 groups, which must divide H = 4"):
        refs.ssd(s["x"], s["dt"], s["A"], s["B"][:, :, :1].expand(-1, -1, 3, -1), s["C"])
    with pytest.raises(ValueError, match=r"dt must have shape \[B, L, H\].*looks head-first"):
        refs.ssd(s["x"], s["dt"].transpose(1, 2), s["A"], s["B"], s["C"])
    with pytest.raises(ValueError, match=r"chunk_size must be a positive int"):
        refs.ssd(s["x"], s["dt"], s["A"], s["B"], s["C"], chunk_size=0)
    with pytest.raises(ValueError, match=r"selective_scan: A must have shape \[D, N\]"):
        refs.selective_scan(c["u"], c["delta"], c["A"].T, c["B"], c["C"])
    with pytest.raises(ValueError, match=r"selective_scan: B must have shape \[B, N, L\]"):
        refs.selective_scan(c["u"], c["delta"], c["A"], c["B"][..., :-1], c["C"])
    with pytest.raises(ValueError, match=r"selective_state_update: x must be 2-D \[B, D\]"):
        refs.selective_state_update(torch.zeros(2, 6, 4), c["u"], c["delta"][..., 0], c["A"],
                                    c["B"][..., 0], c["C"][..., 0])


def test_import_is_lazy():
    # `import course_utils.refs` must stay fast: fla, mamba_ssm and scipy load on first use.
    code = (
        "import sys, course_utils.refs; "
        "print(sorted(m for m in ('fla', 'mamba_ssm', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_gated_delta_rule_gradients_on_a_gpu_avoid_the_kernel_without_backward(monkeypatch):
    """fla 0.6.0's fused_recurrent_gated_delta_rule raises NotImplementedError in backward (seen on an H200 in
    5.4's gradient case): on a GPU, mode="recurrent" with gradients needed must run the naive recurrence."""
    module = importlib.import_module("course_utils.refs.delta_rule")  # the module (refs.delta_rule is the function)

    class NoKernels:  # the fla ops module: any kernel call is a test failure
        def __getattr__(self, name):
            raise AssertionError(f"called fla kernel {name} where gradients are needed")

    real_import = module.import_fla
    monkeypatch.setattr(module, "on_cuda", lambda x: True)
    monkeypatch.setattr(module, "import_fla",
                        lambda name: NoKernels() if name == "fla.ops.gated_delta_rule" else real_import(name))
    gen = torch.Generator().manual_seed(5)
    B, T, H, K, V = 1, 9, 2, 8, 4
    q, k = (torch.randn(B, T, H, K, generator=gen) for _ in range(2))
    k = F.normalize(k, dim=-1).requires_grad_()
    v = torch.randn(B, T, H, V, generator=gen)
    g = F.logsigmoid(torch.randn(B, T, H, generator=gen))
    beta = torch.rand(B, T, H, generator=gen)
    with refs.backends_used() as used:
        o, _ = refs.gated_delta_rule(q, k, v, g, beta, mode="recurrent")
    o.sum().backward()
    assert k.grad is not None and torch.isfinite(k.grad).all()
    assert any("naive_recurrent_gated_delta_rule" in u and "no backward" in u for u in used), used
    with torch.no_grad(), pytest.raises(AssertionError, match="called fla kernel fused_recurrent"):
        refs.gated_delta_rule(q, k, v, g, beta, mode="recurrent")  # no gradients: the kernel is used


@pytest.mark.parametrize("with_state", [False, True], ids=["no-state", "with-state"])
def test_normalized_recurrent_on_a_gpu_takes_the_normaliser_from_a_column_of_ones(monkeypatch, with_state):
    """On a GPU, linear_attention(normalize=True, mode="recurrent") calls fla's fused recurrent kernel once on
    [v, 1] (fla's own normalize autotunes a cumsum kernel for ~14 s per shape). The kernel is stood in for by
    its naive CPU twin, so this checks the adapter's algebra — outputs, (S, z), gradients — against the loop."""
    module = importlib.import_module("course_utils.refs.linear_attn")
    naive = importlib.import_module("fla.ops.linear_attn.naive")
    calls = []

    class FusedOnCpu:  # fla.ops.linear_attn with the fused kernel replaced by the naive recurrence
        def fused_recurrent_linear_attn(self, q, k, v, normalize, **kw):
            calls.append((v.shape[-1], normalize))
            return naive.naive_recurrent_linear_attn(q, k, v, normalize=normalize, **kw)

        def __getattr__(self, name):
            raise AssertionError(f"called fla.ops.linear_attn.{name}")

    monkeypatch.setattr(module, "on_cuda", lambda x: True)
    monkeypatch.setattr(module, "import_fla", lambda name: FusedOnCpu())
    d = make(T=70)
    q = d["q"].clone().requires_grad_()
    init = (d["S0"], d["z0"]) if with_state else None
    o, (S, z) = refs.linear_attention(q, d["k"], d["v"], scale=0.4, initial_state=init, normalize=True,
                                      mode="recurrent")
    want = loop_ref(d["q"], d["k"], d["v"], 0.4, S0=d["S0"] if with_state else None,
                    z0=d["z0"] if with_state else None, normalize=True)
    assert_close((o, (S, z)), want)
    assert calls == [(d["v"].shape[-1] + 1, False)], calls
    assert "column of ones" in refs.last_backend()
    o.square().sum().backward()
    q64 = d["q"].double().requires_grad_()
    want64 = loop_ref(q64, d["k"].double(), d["v"].double(), 0.4, S0=d["S0"].double() if with_state else None,
                      z0=d["z0"].double() if with_state else None, normalize=True)
    want64[0].square().sum().backward()
    assert_close(q.grad, q64.grad.float(), 1e-4)
