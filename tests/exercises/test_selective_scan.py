"""The selective-scan family (Lab 08: 8.1a-8.5b): the solutions pass, every catalogued mistake is rejected with its
hint, correct code written differently passes too (another loop order, Blelloch's scan, a kernel without
tl.associative_scan, nn.Conv1d's padding), and the checks of how (log depth, a kernel launched) measure what they
claim. The Triton exercise runs in Triton's interpreter on a CPU."""

from __future__ import annotations

import dataclasses
import math
import os

import pytest
import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from conftest import assert_rejected, slug, solution
from family_tests import (  # noqa: F401  (collected here, parametrized by IDS)
    test_solution_passes,
    test_solution_passes_in_bf16,
)
from gpu_compile import compile_kernels
from triton.language import associative_scan as tl_scan

from course_utils.exercises import EXERCISES, grade
from course_utils.exercises import selective_scan as family
from course_utils.grading.generic import CPU, catalogue

EX_IDS = ["8.1a", "8.1b", "8.2", "8.3a", "8.3b", "8.3c", "8.4", "8.5a", "8.5b"]

# The family's tests grade on the CPU: 8.4's kernels then need Triton's interpreter, which course_utils switches on
# only where there is no GPU.
TRITON_ON_CPU = not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"
needs_interpreter = pytest.mark.skipif(not TRITON_ON_CPU,
                                       reason="kernels graded on the CPU need TRITON_INTERPRET=1 on a GPU machine")
IDS = [pytest.param(i, marks=needs_interpreter) if i == "8.4" else i for i in EX_IDS]  # family_tests' parameters

# The generic mistakes were written for [B, T, H, D] outputs (time second): in this family time is last ([B, D, L])
# or the output has no head axis, so three of them read differently.
SAYS = {
    "head-first [B,H,T,D]": {"8.5a": ("looks like [B,D,L]",), "8.5b": ("IndexError",), None: ("looks like [B,L,D",)},
    "NaN": {"8.5a": ("NaN at (b=0, l=5)",), "8.5b": ("IndexError",), "8.1b": ("NaN at (b=0, d=5, l=1)",),
            None: ("NaN at (b=0, d=5)",)},
    "output reversed in time": {None: ("relative RMS error",)},
}


def _params(ids):
    out = []
    for ex_id in ids:
        for m in catalogue(EXERCISES[ex_id], solution(ex_id)):
            if m.name in SAYS:
                says = SAYS[m.name]
                m = dataclasses.replace(m, says=says.get(ex_id, says[None]))
            marks = [needs_interpreter] if ex_id == "8.4" else []
            out.append(pytest.param(ex_id, m, id=f"{ex_id}-{slug(m.name)}", marks=marks))
    return out


@pytest.mark.parametrize("ex_id, mistake", _params(EX_IDS))
def test_mistake_is_rejected(ex_id, mistake):
    assert_rejected(ex_id, mistake)


def test_every_exercise_names_its_own_mistakes():
    sizes = {ex_id: len(EXERCISES[ex_id].mistakes) for ex_id in EX_IDS}
    assert all(n >= 4 for n in sizes.values()), sizes


def test_every_wrong_kernel_is_a_triton_kernel():
    """8.4's catalogue launches real kernels (one @triton.jit kernel, its MISTAKE constexpr switching one line;
    a step-by-step kernel without a scan), except the PyTorch stand-in that the kernel check must reject."""
    assert isinstance(family._scan_kernel, triton.runtime.jit.KernelInterface)
    assert isinstance(family._stepwise_kernel, triton.runtime.jit.KernelInterface)
    for m in EXERCISES["8.4"].mistakes:
        if m.says == ("kernel check",) or m.wrong_fn is family.stepwise_kernel_scan:
            continue
        assert m.wrong_fn.__qualname__ == "triton_wrong.<locals>.wrong", m.name


# ------------------------------------------------------------------------------------------ correct alternatives


def selective_scan_state_last(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The state kept as [B, N, D], Ā computed inside the loop, the readout by broadcasting instead of einsum."""
    dt = delta.float() + (0 if delta_bias is None else delta_bias.float()[:, None])
    dt = F.softplus(dt) if delta_softplus else dt
    uf = u.float()
    h = uf.new_zeros(u.shape[0], A.shape[1], u.shape[1])  # [B, N, D]
    ys = []
    for t in range(u.shape[-1]):
        h = torch.exp(A.float().T[None] * dt[:, None, :, t]) * h + B[:, :, t, None].float() * (dt * uf)[:, None, :, t]
        ys.append((h * C[:, :, t, None].float()).sum(1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D.float()[:, None] * uf
    if z is not None:
        y = y * z.float() * torch.sigmoid(z.float())
    return y.to(u.dtype), h.transpose(1, 2)


def blelloch_scan(a, b):
    """Blelloch's work-efficient scan (up-sweep, down-sweep), padded to a power of two, along the last dim."""
    dtype, L = b.dtype, b.shape[-1]
    n = 1 << max(math.ceil(math.log2(max(L, 1))), 0)
    A = F.pad(a.float(), (0, n - L), value=1.0)
    Bv = F.pad(b.float(), (0, n - L))
    levels = []
    while A.shape[-1] > 1:  # up-sweep: combine pairs, keep each level
        levels.append((A, Bv))
        al, ar, bl, br = A[..., 0::2], A[..., 1::2], Bv[..., 0::2], Bv[..., 1::2]
        A, Bv = al * ar, ar * bl + br
    excl_a, excl_b = torch.ones_like(A), torch.zeros_like(Bv)  # the exclusive prefix of the root: identity
    for A_l, B_l in reversed(levels):  # down-sweep: left child gets the parent's prefix, right child adds the left
        left_a, left_b = A_l[..., 0::2], B_l[..., 0::2]
        ea = torch.stack([excl_a, excl_a * left_a], dim=-1).flatten(-2)
        eb = torch.stack([excl_b, left_a * excl_b + left_b], dim=-1).flatten(-2)
        excl_a, excl_b = ea, eb
    h = excl_b * levels[0][0] + levels[0][1] if levels else Bv  # inclusive: exclusive prefix then step t itself
    return h[..., :L].to(dtype)


def selective_scan_blelloch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    dt = delta.float() + (0 if delta_bias is None else delta_bias.float()[:, None])
    dt = F.softplus(dt) if delta_softplus else dt
    a = torch.exp(dt[:, :, None, :] * A.float()[None, :, :, None])  # [B, D, N, L]
    b = (dt * u.float())[:, :, None, :] * B.float()[:, None]
    h = blelloch_scan(a, b)
    y = (h * C.float()[:, None]).sum(2)
    if D is not None:
        y = y + D.float()[:, None] * u.float()
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(u.dtype), h[..., -1]


@triton.jit
def _first_order(a_left, b_left, a_right, b_right):
    return a_left * a_right, a_right * b_left + b_right


@triton.jit
def _time_first_kernel(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, last_ptr, Dm, L,
                       N: tl.constexpr, BL: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
                       HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """Another block layout: one channel per program, [BL, N] blocks (time first), scanned along axis 0."""
    d, b = tl.program_id(0), tl.program_id(1)
    n = tl.arange(0, N)
    A = tl.load(A_ptr + d * N + n)
    h = tl.zeros([N], dtype=tl.float32)
    bias = tl.load(bias_ptr + d) if HAS_BIAS else 0.0
    row = (b * Dm + d).to(tl.int64) * L
    for l0 in range(0, L, BL):
        t = l0 + tl.arange(0, BL)
        m = t < L
        u = tl.load(u_ptr + row + t, mask=m, other=0.0).to(tl.float32)
        dt = tl.load(dt_ptr + row + t, mask=m, other=0.0).to(tl.float32) + bias
        if SOFTPLUS:
            dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)
        dt = tl.where(m, dt, 0.0)
        Bt = tl.load(B_ptr + (b * N + n)[None, :] * L + t[:, None], mask=m[:, None], other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + (b * N + n)[None, :] * L + t[:, None], mask=m[:, None], other=0.0).to(tl.float32)
        a, bb = tl.associative_scan((tl.exp(dt[:, None] * A[None, :]), (dt * u)[:, None] * Bt), 0, _first_order)
        hs = a * h[None, :] + bb
        y = tl.sum(hs * Ct, axis=1)
        h = tl.sum(tl.where((tl.arange(0, BL) == BL - 1)[:, None], hs, 0.0), axis=0)
        if HAS_D:
            y += tl.load(D_ptr + d) * u
        if HAS_Z:
            zz = tl.load(z_ptr + row + t, mask=m, other=0.0).to(tl.float32)
            y = y * zz * tl.sigmoid(zz)
        tl.store(out_ptr + row + t, y.to(out_ptr.dtype.element_ty), mask=m)
    tl.store(last_ptr + (b * Dm + d) * N + n, h)


def selective_scan_time_first_kernel(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    u, delta, B, C = u.contiguous(), delta.contiguous(), B.contiguous(), C.contiguous()
    Bsz, Dm, L = u.shape
    out = torch.empty_like(u)
    last = torch.empty(Bsz, Dm, A.shape[1], device=u.device, dtype=torch.float32)
    _time_first_kernel[(Dm, Bsz)](
        u, delta, A.contiguous(), B, C, last if D is None else D.contiguous(), u if z is None else z.contiguous(),
        last if delta_bias is None else delta_bias.contiguous(), out, last, Dm, L, N=A.shape[1], BL=16,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus))
    return out, last


def selection_linear(x, x_proj_weight, dt_proj_weight, dt_proj_bias):
    """F.linear over [B, L, D] tokens, dt_proj's bias inside the Linear."""
    R = dt_proj_weight.shape[1]
    N = (x_proj_weight.shape[0] - R) // 2
    dt, B, C = F.linear(x.transpose(1, 2).float(), x_proj_weight.float()).split([R, N, N], dim=-1)
    delta = F.softplus(F.linear(dt, dt_proj_weight.float(), dt_proj_bias.float()))
    return tuple(t.transpose(1, 2).to(x.dtype) for t in (delta, B, C))


def discretize_broadcast(u, delta, A, B):
    """unsqueeze and broadcasting instead of einsum, in the inputs' dtype."""
    deltaA = torch.exp(delta.unsqueeze(-1) * A.unsqueeze(1))
    return deltaA.to(u.dtype), (delta.unsqueeze(-1) * u.unsqueeze(-1) * B.transpose(1, 2).unsqueeze(1)).to(u.dtype)


def selective_scan_channel_outer(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The loops the other way round: channels outside, time inside, one channel's [B, N] state at a time."""
    dt = delta.float() + (0 if delta_bias is None else delta_bias.float()[:, None])
    dt = F.softplus(dt) if delta_softplus else dt
    Bsz, Dm, L = u.shape
    out, last = torch.empty(Bsz, Dm, L), torch.empty(Bsz, Dm, A.shape[1])
    for c in range(Dm):
        h = torch.zeros(Bsz, A.shape[1])
        for t in range(L):
            h = torch.exp(dt[:, c, t, None] * A[c].float()) * h + (dt[:, c, t] * u[:, c, t].float())[:, None] * \
                B[:, :, t].float()
            out[:, c, t] = (h * C[:, :, t].float()).sum(-1)
        last[:, c] = h
    if D is not None:
        out = out + u.float() * D.float()[:, None]
    if z is not None:
        out = out * F.silu(z.float())
    return out.to(u.dtype), last


def hillis_steele_cat(a, b):
    """Hillis-Steele with torch.cat and a fresh identity block per round."""
    dtype, L, k = b.dtype, b.shape[-1], 1
    a, b = a.float(), b.float()
    while k < L:
        a_prev = torch.cat([torch.ones_like(a[..., :k]), a[..., :-k]], -1)
        b_prev = torch.cat([torch.zeros_like(b[..., :k]), b[..., :-k]], -1)
        a, b = a_prev * a, a * b_prev + b
        k *= 2
    return b.to(dtype)


def hillis_steele_log_space(a, b):
    """The decays carried as log a (composed by adding), exponentiated at each combine."""
    dtype, L, k = b.dtype, b.shape[-1], 1
    log_a, b = a.float().log(), b.float()
    while k < L:
        b = log_a.exp() * F.pad(b[..., :-k], (k, 0)) + b
        log_a = log_a + F.pad(log_a[..., :-k], (k, 0))
        k *= 2
    return b.to(dtype)


def odd_even_scan(a, b):
    """Recursive odd-even (Ladner-Fischer style): combine pairs, scan the half, fill in the even positions."""
    def rec(a, b):
        L = b.shape[-1]
        if L == 1:
            return a, b
        if L % 2:
            a, b = F.pad(a, (0, 1), value=1.0), F.pad(b, (0, 1))
        a0, a1, b0, b1 = a[..., 0::2], a[..., 1::2], b[..., 0::2], b[..., 1::2]
        pa, pb = rec(a0 * a1, a1 * b0 + b1)  # prefixes ending at the odd positions
        ea = torch.cat([a0[..., :1], pa[..., :-1] * a0[..., 1:]], -1)
        eb = torch.cat([b0[..., :1], a0[..., 1:] * pb[..., :-1] + b0[..., 1:]], -1)
        return torch.stack([ea, pa], -1).flatten(-2)[..., :L], torch.stack([eb, pb], -1).flatten(-2)[..., :L]

    return rec(a.float(), b.float())[1].to(b.dtype)


def mamba_block_conv_module(x, params):
    """nn.Conv1d's own padding (d_conv - 1 both sides, first L outputs kept), 8.3c's parallel scan inside."""
    P = {n: p.float() for n, p in params.items()}
    L, Di = x.shape[1], P["D"].shape[0]
    xz = F.linear(x.float(), P["in_proj.weight"]).transpose(1, 2)
    xs, z = xz[:, :Di], xz[:, Di:]
    K = P["conv1d.weight"].shape[-1]
    xc = F.silu(F.conv1d(xs, P["conv1d.weight"], P["conv1d.bias"], padding=K - 1, groups=Di)[..., :L])
    R, N = P["dt_proj.weight"].shape[1], P["A_log"].shape[1]
    dt, Bm, Cm = F.linear(xc.transpose(1, 2), P["x_proj.weight"]).split([R, N, N], dim=-1)
    dt = F.linear(dt, P["dt_proj.weight"]).transpose(1, 2)  # bias left to the scan's delta_bias
    y, _ = selective_scan_blelloch(xc, dt, -P["A_log"].exp(), Bm.transpose(1, 2), Cm.transpose(1, 2), P["D"], z,
                                   P["dt_proj.bias"], True)
    return F.linear(y.transpose(1, 2), P["out_proj.weight"]).to(x.dtype)


def mamba_block_unfold(x, params):
    """The causal conv by hand (left padding, unfold into windows of K), matmuls instead of einsum, 8.2's loop with
    the bias and softplus left to the scan."""
    P = {n: p.float() for n, p in params.items()}
    Di, K = P["D"].shape[0], P["conv1d.weight"].shape[-1]
    xz = (x.float() @ P["in_proj.weight"].T).transpose(1, 2)  # [B, 2 Di, L]
    xs, z = xz[:, :Di], xz[:, Di:]
    windows = F.pad(xs, (K - 1, 0)).unfold(-1, K, 1)  # [B, Di, L, K]: x_{t-K+1..t}
    xc = F.silu((windows * P["conv1d.weight"][:, 0, None, :]).sum(-1) + P["conv1d.bias"][:, None])
    R, N = P["dt_proj.weight"].shape[1], P["A_log"].shape[1]
    x_dbl = P["x_proj.weight"] @ xc  # [B, R + 2N, L]
    dt = P["dt_proj.weight"] @ x_dbl[:, :R]
    y, _ = selective_scan_state_last(xc, dt, -P["A_log"].exp(), x_dbl[:, R:R + N], x_dbl[:, R + N:], P["D"], z,
                                     P["dt_proj.bias"], True)
    return (y.transpose(1, 2) @ P["out_proj.weight"].T).to(x.dtype)


@pytest.mark.parametrize("ex_id, fn", [
    ("8.1a", selection_linear),
    ("8.1b", discretize_broadcast),
    ("8.2", selective_scan_state_last),
    ("8.2", selective_scan_channel_outer),
    ("8.3b", blelloch_scan),
    ("8.3b", hillis_steele_cat),
    ("8.3b", hillis_steele_log_space),
    ("8.3b", odd_even_scan),
    ("8.3c", selective_scan_blelloch),
    pytest.param("8.4", selective_scan_time_first_kernel, marks=needs_interpreter),
    ("8.5a", mamba_block_conv_module),
    ("8.5a", mamba_block_unfold),
], ids=lambda x: x if isinstance(x, str) else x.__name__)
def test_correct_alternatives_pass(ex_id, fn):
    grade(ex_id, fn, quiet=True, **CPU)


@needs_interpreter
def test_other_block_sizes_pass():
    """The solution's launcher takes its block sizes as arguments: other powers of two pass too."""
    fn = solution("8.4")
    grade("8.4", lambda *a, **k: fn(*a, **k, BLOCK_D=8, BLOCK_L=16), quiet=True, **CPU)


# ------------------------------------------------------------------------------------------ the checks of how


@pytest.mark.parametrize("chunk", [16, 32, 64, 128, 256])
def test_log_depth_check_counts_rounds_not_steps(chunk):
    """Hillis-Steele (with F.pad, with torch.cat, in log space), Blelloch and the odd-even recursion pass the depth
    check (~1.7x the torch calls for 16x the length); the same scan run chunk by chunk in a Python loop over chunks
    of a fixed size (right values, depth growing with L) fails it, up to chunks of L/4 at the probe's L = 1024."""
    check = family.log_depth()

    def chunked(a, b):
        h, outs = None, []
        for s in range(0, b.shape[-1], chunk):
            part = solution("8.3b")(a[..., s:s + chunk], b[..., s:s + chunk])
            if h is not None:
                part = part + a[..., s:s + chunk].float().cumprod(-1).to(part.dtype) * h[..., None]
            outs.append(part)
            h = part[..., -1]
        return torch.cat(outs, dim=-1)

    from course_utils.grading.trial import Fail, Trial

    def run(fn):
        ex = EXERCISES["8.3b"]
        check(Trial(ex, ex.cases(torch.device("cpu"), [torch.float32])[0], torch.device("cpu"), {}, "f"), fn)

    for fn in (solution("8.3b"), blelloch_scan, hillis_steele_cat, hillis_steele_log_space, odd_even_scan):
        run(fn)
    with pytest.raises(Fail, match="depth check"):
        run(chunked)


def test_notebook_kernel_loads_as_a_gpu_kernel(monkeypatch):
    """On a GPU @triton.jit reads the kernel's source: the solution's kernel, loaded from the notebook without
    running it, has one (what the lead's GPU run and the gradebook rely on)."""
    from course_utils.authoring import SOLUTIONS
    from course_utils.notebook_functions import load_namespace

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    namespace = load_namespace(SOLUTIONS / "08_mamba_selective_scan.ipynb")
    kernel = namespace["selective_scan_kernel"]
    assert isinstance(kernel, triton.runtime.jit.JITFunction), type(kernel)
    assert "tl.associative_scan" in kernel.src


def bias_only_with_softplus(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """delta_bias dropped when delta_softplus=False (mamba-ssm adds it either way)."""
    return family.scan_core()(u, delta, A, B, C, D, z, delta_bias if delta_softplus else None, delta_softplus)


@pytest.mark.parametrize("ex_id, fn, says", [
    ("8.2", bias_only_with_softplus, "missing delta_bias"),
    ("8.3c", bias_only_with_softplus, "missing delta_bias"),
], ids=["8.2-bias_only_with_softplus", "8.3c-bias_only_with_softplus"])
def test_uncatalogued_slips_are_rejected(ex_id, fn, says):
    """Slips the catalogue does not list as such, caught by a case and matched to the nearest hint."""
    with pytest.raises(AssertionError, match=says):
        grade(ex_id, fn, quiet=True, **CPU)


@triton.jit
def _scan_in_a_helper(a, b):
    return tl_scan((a, b), 0, _first_order)  # tl.associative_scan imported under another name


@triton.jit
def _kernel_with_helper(x_ptr, out_ptr, BLOCK: tl.constexpr):
    x = tl.load(x_ptr + tl.arange(0, BLOCK))
    _, h = _scan_in_a_helper(x, x)
    tl.store(out_ptr + tl.arange(0, BLOCK), h)


def _launches_the_helper_kernel(x):
    out = torch.empty_like(x)
    _kernel_with_helper[(1,)](x, out, BLOCK=x.numel())
    return out


def test_kernel_names_follow_launchers_and_helpers():
    """The scan check reads the code of the kernels a launcher reaches (through globals, closures and
    @triton.jit helpers), so a kernel written in another layout or with the scan in a helper is recognised."""
    assert "associative_scan" in family.kernel_names(selective_scan_time_first_kernel)
    assert "associative_scan" in family.kernel_names(family.triton_wrong("right"))
    assert "associative_scan" in family.kernel_names(_launches_the_helper_kernel)
    assert "associative_scan" not in family.kernel_names(family.stepwise_kernel_scan)
    assert "associative_scan" not in family.kernel_names(selective_scan_blelloch)


def test_inputs_follow_the_case_flags():
    from course_utils.grading import Case

    case = Case({"B": 1, "D": 8, "L": 33, "N": 16, "dtype": torch.float32}, seed=1)  # no options
    plain = family.scan_inputs(case, torch.device("cpu"))
    assert set(plain) == {"u", "delta", "A", "B", "C"} and (plain["delta"] > 0).all() and (plain["A"] < 0).all()
    full = family.scan_inputs(EXERCISES["8.2"].cases(torch.device("cpu"), [torch.float32])[0], torch.device("cpu"))
    assert {"D", "z", "delta_bias", "delta_softplus"} <= set(full) and (full["delta"] < 0).any()


# ------------------------------------------------------------------------------ a state kept in the inputs' dtype

FP16 = {"device": "cpu", "dtypes": [torch.float32, torch.float16]}
STATE_DTYPE = {"8.2": family.STATE_IN_INPUT_DTYPE, "8.3c": family.STATE_IN_INPUT_DTYPE,
               "8.4": family.STATE_IN_INPUT_DTYPE_KERNEL}


def _state_dtype_mistake(ex_id):
    return next(m for m in EXERCISES[ex_id].mistakes if m.name.startswith("state kept in the inputs' dtype"))


@pytest.mark.parametrize("ex_id", ["8.2", "8.3c"])
def test_state_in_input_dtype_is_rejected_in_fp16(ex_id):
    """A T4 grades in float16: the long "slow" case rejects the state kept in float16 too, with the same hint (the
    catalogue's test rejects it in bfloat16)."""
    assert_rejected(ex_id, dataclasses.replace(_state_dtype_mistake(ex_id), options=FP16))


@pytest.mark.parametrize("ex_id", ["8.2", "8.3c", pytest.param("8.4", marks=needs_interpreter)])
def test_solution_passes_in_fp16(ex_id, capsys):
    grade(ex_id, solution(ex_id), **FP16)
    assert "float16" in capsys.readouterr().out


def test_the_slow_case_separates_a_state_in_input_dtype():
    """The margins the long case is chosen for, on 8.2's slow case: a state rounded to the inputs' dtype every step
    is >= 2x the tolerance off in `out`, a float32 state <= 1/3 of it (figures in the comment beside SCAN_HALF)."""
    from course_utils.conventions import relative_rms_error
    from course_utils.grading.checks import tolerance

    cpu = torch.device("cpu")
    for dtype in (torch.bfloat16, torch.float16):
        case = next(c for c in EXERCISES["8.2"].cases(cpu, [torch.float32, dtype]) if c.get("slow"))
        inputs = family.scan_inputs(case, cpu)
        expected, _ = family._reference_scan(inputs, case)
        tol = tolerance(dtype, cpu)
        wrong = relative_rms_error(family.scan_core(state_in_input_dtype=True)(**inputs)[0], expected)
        right = relative_rms_error(family.scan_core()(**inputs)[0], expected)
        assert wrong >= 2 * tol and right <= tol / 3, (dtype, wrong, right, tol)


def test_slow_inputs_have_a_long_memory():
    case = next(c for c in EXERCISES["8.2"].cases(torch.device("cpu"), [torch.float32, torch.bfloat16])
                if c.get("slow"))
    inputs = family.scan_inputs(case, torch.device("cpu"))
    decay = inputs["delta"].float()[..., None].mean() * -inputs["A"].mean()  # the mean Δ|A| a step
    assert case["L"] >= 1024 and decay.item() < 2 ** -9 and inputs["u"].float().mean() > 0.5


_SCAN_TYPES = dict(u_ptr="P", delta_ptr="P", A_ptr="*fp32", B_ptr="P", C_ptr="P", D_ptr="*fp32", z_ptr="P",
                   bias_ptr="*fp32", out_ptr="P", last_ptr="*fp32", D_inner="i32", L="i32")


@pytest.mark.parametrize("arch, dtype", [(90, "bf16"), (75, "fp16")], ids=["H200-sm90-bf16", "T4-sm75-fp16"])
@pytest.mark.parametrize("block_d, block_l, warps", [(4, 64, 4), (16, 32, 8)], ids=["default-4x64", "16x32"])
def test_selective_scan_kernel_compiles_for_the_course_gpus(arch, dtype, block_d, block_l, warps):
    """No GPU needed: 8.4's kernel — a tl.associative_scan over a 3-D [BLOCK_D, N, BLOCK_L] block, never compiled
    for a GPU in the interpreter — compiles with Triton's CUDA backend for an H200 and a T4 at the benchmark's
    N = 16, at the launcher's default blocks and a lighter one; ptxas: nothing spills (measured with Triton 3.7.1:
    229 registers on sm_90, 231 on sm_75 at the defaults; BLOCK_D = 8 or BLOCK_L = 128 spill)."""
    consts = dict(N=16, BLOCK_D=block_d, BLOCK_L=block_l, HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True)
    report = compile_kernels("08_mamba_selective_scan.ipynb", arch, dtype,
                             [("selective_scan_kernel", warps, _SCAN_TYPES, consts)])
    regs, spilled = report["selective_scan_kernel"]
    assert regs <= 255 and spilled == 0, (regs, spilled)
