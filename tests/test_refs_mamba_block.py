"""Tests for course_utils.refs.ssm.mamba_block: mamba-ssm's Mamba layer run on a CPU through its own reference path
(selective_scan_ref in place of the CUDA scan), checked against the layer's modules composed by hand; the swap is
undone after the call; bad inputs get clear errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import course_utils  # noqa: F401  (sets TRITON_INTERPRET before mamba-ssm defines kernels)
from course_utils import refs
from course_utils.conventions import relative_rms_error
from course_utils.refs.ssm import mamba_block


@pytest.fixture(scope="module")
def layer():
    from course_utils.mamba_import import import_mamba

    import_mamba()
    from mamba_ssm import Mamba

    torch.manual_seed(0)
    m = Mamba(16, d_state=8, d_conv=4, expand=2)
    with torch.no_grad():  # larger dt weights than the init, so that Δ varies along the sequence
        m.dt_proj.weight.mul_(4.0)
    return m


def by_hand(m, x):
    """The Mamba block from the layer's modules, with a plain loop for the scan (Gu & Dao 2023, §3.4)."""
    L = x.shape[1]
    xz = m.in_proj(x).transpose(1, 2)  # [B, 2D, L]
    xs, z = xz.chunk(2, dim=1)
    xc = F.silu(m.conv1d(xs)[..., :L])  # nn.Conv1d pads d_conv - 1 on both sides: the first L outputs are causal
    dt, B, C = m.x_proj(xc.transpose(1, 2)).split([m.dt_rank, m.d_state, m.d_state], dim=-1)
    delta = F.softplus(m.dt_proj(dt)).transpose(1, 2)  # [B, D, L], the bias inside dt_proj
    A = -torch.exp(m.A_log.float())
    h = x.new_zeros(x.shape[0], A.shape[0], A.shape[1])
    ys = []
    for t in range(L):
        h = torch.exp(delta[..., t, None] * A) * h + (delta[..., t] * xc[..., t])[..., None] * B[:, None, t]
        ys.append((h * C[:, None, t]).sum(-1) + m.D * xc[..., t])
    y = torch.stack(ys, dim=-1) * F.silu(z)
    return m.out_proj(y.transpose(1, 2))


def test_cpu_forward_matches_the_modules_composed_by_hand(layer):
    x = torch.randn(2, 23, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = mamba_block(layer, x)
        want = by_hand(layer, x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert relative_rms_error(y, want) < 1e-5
    assert refs.last_backend() == "mamba_ssm.Mamba (reference path, selective_scan_ref) (CPU)"


def test_the_scan_swap_is_undone_even_when_the_forward_raises(layer):
    from mamba_ssm.modules import mamba_simple

    before = mamba_simple.selective_scan_fn
    with torch.no_grad():
        mamba_block(layer, torch.randn(1, 5, 16))
    assert mamba_simple.selective_scan_fn is before and layer.use_fast_path is True
    weight = layer.x_proj.weight
    try:
        layer.x_proj.weight = torch.nn.Parameter(weight[:, :-1].clone())  # a broken layer: its forward raises
        with pytest.raises(RuntimeError):
            mamba_block(layer, torch.randn(1, 5, 16))
    finally:
        layer.x_proj.weight = weight
    assert mamba_simple.selective_scan_fn is before and layer.use_fast_path is True


def test_causal_and_returns_the_inputs_dtype(layer):
    x = torch.randn(1, 30, 16, generator=torch.Generator().manual_seed(2))
    poked = x.clone()
    poked[:, 12] += 1.0
    with torch.no_grad():
        diff = (mamba_block(layer, poked) - mamba_block(layer, x)).abs().amax(dim=(0, 2))
        assert diff[:12].max() == 0 and diff[12] > 0
        assert mamba_block(layer, x.to(torch.bfloat16)).dtype == torch.bfloat16


def test_clear_errors(layer):
    with pytest.raises(ValueError, match=r"d_model = 16.*x.transpose\(1, 2\)"):
        mamba_block(layer, torch.randn(1, 16, 5))
    with pytest.raises(TypeError, match="mamba_ssm.Mamba module"):
        mamba_block(torch.nn.Linear(16, 16), torch.randn(1, 5, 16))
    with pytest.raises(ValueError, match=r"x must be 3-D \[B, L, d_model\]"):
        mamba_block(layer, torch.randn(5, 16))


def test_nested_calls_restore_in_turn(layer):
    """A call inside a call (here from a forward pre-hook, while the outer call's swap is active) computes the same
    as on its own, and the module's functions and both layers' fast-path flags are restored afterwards."""
    from mamba_ssm import Mamba
    from mamba_ssm.modules import mamba_simple

    torch.manual_seed(3)
    other = Mamba(16, d_state=8, d_conv=4, expand=2)
    x = torch.randn(1, 9, 16, generator=torch.Generator().manual_seed(4))
    before = (mamba_simple.selective_scan_fn, mamba_simple.causal_conv1d_fn)
    with torch.no_grad():
        alone = mamba_block(other, x)
        inner = []
        handle = layer.register_forward_pre_hook(lambda module, args: inner.append(mamba_block(other, args[0])))
        try:
            mamba_block(layer, x)
        finally:
            handle.remove()
    assert torch.equal(inner[0], alone)
    assert (mamba_simple.selective_scan_fn, mamba_simple.causal_conv1d_fn) == before
    assert layer.use_fast_path is True and other.use_fast_path is True


def test_a_gpu_without_the_extension_takes_the_reference_path(layer, monkeypatch):
    """On a GPU where mamba-ssm's CUDA scan is not built (simulated here: the input counts as CUDA, the extension
    as missing), the layer runs its reference path with selective_scan_ref, keeps causal-conv1d's function (it runs
    on CUDA), and the backend names the fallback."""
    from mamba_ssm.modules import mamba_simple

    from course_utils.refs import ssm

    calls = []

    def fake_causal_conv1d(x, weight, bias=None, activation=None):  # what causal-conv1d computes, on any device
        calls.append(activation)
        K = weight.shape[-1]
        return F.silu(F.conv1d(F.pad(x, (K - 1, 0)), weight[:, None], bias, groups=x.shape[1]))

    x = torch.randn(2, 11, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = mamba_block(layer, x)
        monkeypatch.setattr(ssm, "on_cuda", lambda t: True)
        monkeypatch.setattr(ssm, "_mamba", lambda: False)
        monkeypatch.setattr(mamba_simple, "causal_conv1d_fn", fake_causal_conv1d)
        got = mamba_block(layer, x)
    assert calls == ["silu"] and mamba_simple.causal_conv1d_fn is fake_causal_conv1d
    assert relative_rms_error(got, want) < 1e-6
    assert refs.last_backend() == ("mamba_ssm.Mamba (reference path, selective_scan_ref) "
                                   "(CPU; mamba-ssm CUDA extension not built)")
