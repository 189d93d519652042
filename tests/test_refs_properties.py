"""Property tests for course_utils.refs: the cross-checks of test_refs.py over random shapes, including
odd lengths (T = 1, 63, 65, 100) that cross or miss the references' chunk boundaries.

Few examples each (the references are Python loops on a 2-core CPU) and derandomized, so CI sees the same
cases every run.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_refs import assert_close, loop_ref, make, ssd_as_simple_gla, ssd_inputs  # tests/ is on sys.path (conftest)

from course_utils import refs

SETTINGS = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

lengths = st.one_of(st.sampled_from([1, 2, 63, 64, 65, 100]), st.integers(1, 100))
shapes = st.fixed_dictionaries(
    dict(B=st.integers(1, 2), T=lengths, H=st.integers(1, 3), K=st.integers(1, 8), V=st.integers(1, 8),
         seed=st.integers(0, 2**16))
)


@SETTINGS
@given(shapes, st.booleans(), st.booleans())
def test_linear_attention_forms_agree(shape, normalize, with_state):
    d = make(**shape)
    init = ((d["S0"], d["z0"]) if normalize else d["S0"]) if with_state else None
    want = loop_ref(d["q"], d["k"], d["v"], 0.5, S0=d["S0"] if with_state else None,
                    z0=d["z0"] if with_state and normalize else None, normalize=normalize)
    for mode in ("recurrent", "chunk"):
        got = refs.linear_attention(d["q"], d["k"], d["v"], scale=0.5, initial_state=init,
                                    normalize=normalize, mode=mode)
        assert_close(got, want, 1e-4)


@SETTINGS
@given(shapes)
def test_simple_gla_and_retention_forms_agree(shape):
    d = make(**shape)
    want = refs.simple_gla(d["q"], d["k"], d["v"], d["g"], initial_state=d["S0"], mode="recurrent")
    assert_close(refs.simple_gla(d["q"], d["k"], d["v"], d["g"], initial_state=d["S0"], mode="chunk"),
                 want, 1e-4)
    g = refs.retention_gammas(shape["H"]).log().expand_as(d["g"])
    ret = refs.simple_gla(d["q"], d["k"], d["v"], g, initial_state=d["S0"], mode="recurrent")
    for mode in ("auto", "chunk"):
        assert_close(refs.retention(d["q"], d["k"], d["v"], initial_state=d["S0"], mode=mode), ret, 1e-4)


@SETTINGS
@given(shapes)
def test_gla_matches_loop(shape):
    d = make(**shape)
    got = refs.gla(d["q"], d["k"], d["v"], d["gk"], scale=0.3, initial_state=d["S0"])
    assert_close(got, loop_ref(d["q"], d["k"], d["v"], 0.3, S0=d["S0"], log_decay=d["gk"]), 1e-4)


@SETTINGS
@given(shapes, st.booleans())
def test_delta_rule_forms_agree(shape, with_state):
    d = make(**shape)
    S0 = d["S0"] if with_state else None
    want = loop_ref(d["q"], d["kn"], d["v"], d["q"].shape[-1] ** -0.5, S0=S0, beta=d["beta"])
    for mode in ("recurrent", "chunk"):
        assert_close(refs.delta_rule(d["q"], d["kn"], d["v"], d["beta"], initial_state=S0, mode=mode),
                     want, 1e-4)
        zero = torch.zeros_like(d["g"])
        assert_close(refs.gated_delta_rule(d["q"], d["kn"], d["v"], zero, d["beta"], initial_state=S0,
                                           mode=mode), want, 1e-4)


@SETTINGS
@given(shapes)
def test_gated_delta_rule_forms_agree(shape):
    d = make(**shape)
    args = (d["q"], d["kn"], d["v"], d["g"], d["beta"])
    want = refs.gated_delta_rule(*args, initial_state=d["S0"], mode="recurrent")
    assert_close(refs.gated_delta_rule(*args, initial_state=d["S0"], mode="chunk"), want, 1e-4)


@SETTINGS
@given(shapes, st.data())
def test_initial_state_halves(shape, data):
    T = shape["T"]
    assume(T >= 2)  # both halves non-empty: the checks refuse T = 0
    t = data.draw(st.integers(1, T - 1), label="split")
    d = make(**shape)
    for family in ("linear_attention", "simple_gla", "delta_rule"):
        for mode in ("recurrent", "chunk"):
            full = _run(family, d, slice(0, T), d["S0"], mode)
            o1, S1 = _run(family, d, slice(0, t), d["S0"], mode)
            o2, S2 = _run(family, d, slice(t, T), S1, mode)
            assert_close((torch.cat([o1, o2], 1), S2), full, 1e-4)


def _run(family, d, sl, S0, mode):
    q, k, kn, v, g, beta = (d[n][:, sl] for n in ("q", "k", "kn", "v", "g", "beta"))
    if family == "linear_attention":
        return refs.linear_attention(q, k, v, initial_state=S0, mode=mode)
    if family == "simple_gla":
        return refs.simple_gla(q, k, v, g, initial_state=S0, mode=mode)
    return refs.delta_rule(q, kn, v, beta, initial_state=S0, mode=mode)


@SETTINGS
@given(
    st.fixed_dictionaries(dict(Bz=st.integers(1, 2), L=lengths, H=st.sampled_from([1, 2, 4]),
                               P=st.integers(1, 5), N=st.integers(1, 6), seed=st.integers(0, 2**16))),
    st.sampled_from([8, 16, 64]),
    st.booleans(),
)
def test_ssd_is_simple_gla(shape, chunk_size, with_state):
    s = ssd_inputs(G=1, **shape)
    h0 = s["h0"] if with_state else None
    got = refs.ssd(s["x"], s["dt"], s["A"], s["B"], s["C"], chunk_size=chunk_size, initial_states=h0)
    assert_close(got, ssd_as_simple_gla(s, h0), 1e-4)


@SETTINGS
@given(st.integers(1, 2), st.integers(1, 6), st.integers(1, 5), st.integers(1, 20), st.integers(0, 2**16))
def test_state_update_steps_equal_selective_scan(Bz, D, N, L, seed):
    gen = torch.Generator().manual_seed(seed)
    u, dlt, z = (torch.randn(Bz, D, L, generator=gen) for _ in range(3))
    A = -torch.rand(D, N, generator=gen) - 0.1
    B, C = (torch.randn(Bz, N, L, generator=gen) for _ in range(2))
    Dv = torch.randn(D, generator=gen)
    out, last = refs.selective_scan(u, dlt, A, B, C, D=Dv, z=z, delta_softplus=True)
    state, ys = torch.zeros(Bz, D, N), []
    for t in range(L):
        y, state = refs.selective_state_update(state, u[:, :, t], dlt[:, :, t], A, B[:, :, t], C[:, :, t],
                                               D=Dv, z=z[:, :, t], dt_softplus=True)
        ys.append(y)
    assert_close(torch.stack(ys, -1), out, 1e-4)
    assert_close(state, last, 1e-4)


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 40), st.integers(1, 6), st.booleans(), st.integers(0, 2**16))
def test_softmax_attention_rows_are_convex_combinations(B, T, H, causal, seed):
    # Each output is an average of values: with v = 1 everywhere, o = 1; causal row 0 equals v_0.
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, T, H, 4, generator=gen) for _ in range(2))
    v = torch.randn(B, T, H, 3, generator=gen)
    assert_close(refs.softmax_attention(q, k, torch.ones_like(v), causal=causal), torch.ones_like(v), 1e-5)
    if causal:
        assert_close(refs.softmax_attention(q, k, v, causal=True)[:, 0], v[:, 0], 1e-5)


def test_gate_bounds_are_inclusive():
    # g = 0 (no decay) and beta in {0, 1} (sigmoid saturates to 1.0 in fp32) are valid, not errors.
    d = make(T=5)
    refs.simple_gla(d["q"], d["k"], d["v"], torch.zeros_like(d["g"]))
    refs.delta_rule(d["q"], d["kn"], d["v"], torch.ones_like(d["beta"]))
    refs.delta_rule(d["q"], d["kn"], d["v"], torch.zeros_like(d["beta"]))
