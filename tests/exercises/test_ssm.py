"""The state-space family (Lab 07: 7.1a, 7.1b, 7.2, 7.3a, 7.3b, 7.4): solutions pass, every catalogued mistake
is rejected with its hint, correct code written differently passes, the how checks reject a Toeplitz matrix,
a loop and dense powers, and the grader's own references agree with independent constructions (scipy, the
state-spaces/s4 HiPPO code's construction)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import assert_rejected, catalogue_params, slug, solution
from family_tests import (  # noqa: F401  (collected here, parametrized by IDS)
    test_solution_passes,
    test_solution_passes_in_bf16,
)

from course_utils.exercises import EXERCISES, grade, ssm
from course_utils.grading.generic import BF16, CPU

IDS = ["7.1a", "7.1b", "7.2", "7.3a", "7.3b", "7.4"]

@pytest.mark.parametrize("ex_id, mistake", catalogue_params(IDS))
def test_mistake_is_rejected(ex_id, mistake):
    assert_rejected(ex_id, mistake)


def test_every_exercise_names_its_own_mistakes():
    sizes = {ex_id: len(EXERCISES[ex_id].mistakes) for ex_id in IDS}
    assert all(n >= 6 for n in sizes.values()), sizes


@pytest.mark.parametrize("ex_id", ["7.1a", "7.2", "7.3a", "7.4"])
def test_a_nan_in_a_matrix_output_is_caught(ex_id):
    """A NaN in a matrix or kernel output is caught (generic.py makes its NaN mistake for rank >= 3 outputs only)."""
    fn = solution(ex_id)

    def nan_inside(*args, **kwargs):
        out = fn(*args, **kwargs)
        first = (out[0] if isinstance(out, tuple) else out).clone()
        first.view(-1)[1] = float("nan")
        return (first,) + tuple(out[1:]) if isinstance(out, tuple) else first

    with pytest.raises(AssertionError, match="NaN at"):
        grade(ex_id, nan_inside, quiet=True, **CPU)


# ------------------------------------------------------------------------------------------ correct alternatives


def zoh_block_exponential(A, B, dt):
    """Van Loan's trick: exp(dt [[A, B], [0, 0]]) = [[Ab, Bb], [0, I]] (no inverse of A)."""
    N, M = B.shape
    big = torch.zeros(N + M, N + M, dtype=torch.float64, device=A.device)
    big[:N, :N], big[:N, N:] = A.double(), B.double()
    E = torch.linalg.matrix_exp(dt * big)
    return E[:N, :N].to(A.dtype), E[:N, N:].to(B.dtype)


def zoh_in_float32_with_inv(A, B, dt):
    Af = A.float()
    Ab = torch.linalg.matrix_exp(dt * Af)
    eye = torch.eye(A.shape[0], device=A.device)
    return Ab.to(A.dtype), (torch.linalg.inv(Af) @ (Ab - eye) @ B.float()).to(B.dtype)


def bilinear_with_inv(A, B, dt):
    eye = torch.eye(A.shape[0], device=A.device, dtype=torch.float64)
    inv = torch.linalg.inv(eye - dt / 2 * A.double())
    return (inv @ (eye + dt / 2 * A.double())).to(A.dtype), (inv @ B.double() * dt).to(B.dtype)


def hippo_s4_construction(N, dtype=torch.float32, device="cpu"):
    """state-spaces/s4's transition('legs', N): M = -(tril(2k+1) - diag(n)), A = T M T^-1, T = diag(sqrt(2n+1))."""
    q = np.arange(N, dtype=np.float64)
    col, row = np.meshgrid(q, q)
    M = -(np.where(row >= col, 2 * q + 1, 0) - np.diag(q))
    T = np.diag(np.sqrt(2 * q + 1))
    A = T @ M @ np.linalg.inv(T)
    return (torch.as_tensor(A, dtype=dtype, device=device),
            torch.as_tensor(np.diag(T)[:, None].copy(), dtype=dtype, device=device))


def kernel_matrix_power(Ab, Bb, C, L):
    Af = Ab.double()
    return torch.stack([(C.double() @ torch.linalg.matrix_power(Af, i) @ Bb.double())[0, 0]
                        for i in range(L)]).to(Ab.dtype)


def conv_complex_fft(u, K, D):
    """torch.fft.fft (complex) over a power-of-two length >= 2L, head-first inside."""
    B, L, H = u.shape
    n = 1 << (2 * L - 1).bit_length()
    uf = torch.fft.fft(u.float().permute(0, 2, 1), n=n)  # [B, H, n]
    y = torch.fft.ifft(uf * torch.fft.fft(K.float(), n=n), n=n).real[..., :L]
    return (y.permute(0, 2, 1) + D.float() * u.float()).to(u.dtype)


def s4d_with_pow(A, B, C, dt, L):
    """Ab ** l by torch.pow and the sum written as a matmul."""
    dA = dt.float()[:, None] * A.float()
    Ab = dA.exp()
    Bb = torch.expm1(dA) / A.float() * B.float()
    V = Ab[..., None] ** torch.arange(L, device=A.device, dtype=torch.float32)  # [H, N, L]
    return ((C.float() * Bb)[:, None, :] @ V)[:, 0].to(A.dtype)


def zoh_by_series(A, B, dt):
    """No library exponential: the series of exp on the augmented matrix [[dt A, dt B], [0, 0]], scaled down by
    2^s and squared back up s times."""
    N, M = B.shape
    X = torch.zeros(N + M, N + M, dtype=torch.float64, device=A.device)
    X[:N, :N], X[:N, N:] = dt * A.double(), dt * B.double()
    s = max(0, math.ceil(math.log2(max(X.abs().sum(0).max().item(), 1e-300))) + 1)
    X = X / 2**s
    E = term = torch.eye(N + M, dtype=torch.float64, device=A.device)
    for k in range(1, 30):
        term = term @ X / k
        E = E + term
    for _ in range(s):
        E = E @ E
    return E[:N, :N].to(A.dtype), E[:N, N:].to(B.dtype)


def zoh_solve_first(A, B, dt):
    """(exp(dt A) - I) A^-1 B: A^-1 commutes with exp(dt A)."""
    Ab = torch.linalg.matrix_exp(dt * A.double())
    eye = torch.eye(A.shape[0], dtype=torch.float64, device=A.device)
    return Ab.to(A.dtype), ((Ab - eye) @ torch.linalg.solve(A.double(), B.double())).to(B.dtype)


def bilinear_in_float32_commuted(A, B, dt):
    """Ab = (I + dt/2 A)(I - dt/2 A)^-1 (the factors commute) and Bb = (Ab + I) dt/2 B (the same Bb), in float32."""
    eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    Ab = torch.linalg.solve(eye - dt / 2 * A, eye + dt / 2 * A, left=False)
    return Ab, (Ab + eye) @ B * (dt / 2)


def hippo_loops(N, dtype=torch.float32, device="cpu"):
    A, B = torch.zeros(N, N, dtype=torch.float64), torch.zeros(N, 1, dtype=torch.float64)
    for n in range(N):
        B[n, 0] = math.sqrt(2 * n + 1)
        for k in range(n + 1):
            A[n, k] = -(n + 1) if n == k else -math.sqrt(2 * n + 1) * math.sqrt(2 * k + 1)
    return A.to(device, dtype), B.to(device, dtype)


def kernel_row_vector(Ab, Bb, C, L):
    """Carry the row C Ab^l instead of the column Ab^l Bb, in the inputs' dtype."""
    c, out = C, []
    for _ in range(L):
        out.append((c @ Bb).reshape(()))
        c = c @ Ab
    return torch.stack(out)


def kernel_eigen(Ab, Bb, C, L):
    """Powers through an eigendecomposition (fine for these well-conditioned Ab): K_l = sum_n (C V)_n lambda_n^l
    (V^-1 Bb)_n."""
    lam, V = torch.linalg.eig(Ab.double())
    left = (C.double().to(V.dtype) @ V)[0]
    right = torch.linalg.solve(V, Bb.double().to(V.dtype))[:, 0]
    powers = lam[:, None] ** torch.arange(L, device=Ab.device).to(lam.dtype)  # [N, L]
    return ((left * right) @ powers).real.to(Ab.dtype)


def conv_odd_length(u, K, D):
    """n = 2L - 1 exactly (odd), rfft along dim 1 of u as it comes, irfft told n too, float32 throughout."""
    L = u.shape[1]
    n = 2 * L - 1
    y = torch.fft.irfft(torch.fft.rfft(u, n=n, dim=1) * torch.fft.rfft(K.T, n=n, dim=0), n=n, dim=1)[:, :L]
    return y + D * u


def conv_padded_by_hand(u, K, D):
    """F.pad to 2L, complex fft without n, the real part."""
    L = u.shape[1]
    up = torch.nn.functional.pad(u.transpose(1, 2), (0, L))
    y = torch.fft.ifft(torch.fft.fft(up) * torch.fft.fft(torch.nn.functional.pad(K, (0, L)))).real[..., :L]
    return y.transpose(1, 2).to(u.dtype) + D * u


def s4d_exp_minus_one(A, B, C, dt, L):
    """The docstring's (exp(dt A) - 1) / A as written, float32, no expm1: cancellation at dt A ~ -1e-4 costs
    ~1e-3 of Bb's digits and must still pass."""
    dtA = dt[:, None] * A
    Bb = (torch.exp(dtA) - 1) / A * B
    return torch.einsum("hn,hnl->hl", C * Bb, torch.exp(dtA[..., None] * torch.arange(L, device=A.device)))


def s4d_complex(A, B, C, dt, L):
    """Complex arithmetic (S4D's general case), the real part."""
    dtA = (dt[:, None] * A).to(torch.complex64)
    V = torch.exp(dtA[..., None] * torch.arange(L, device=A.device))
    return ((C * torch.expm1(dtA) / A * B)[:, None, :] @ V)[:, 0].real.to(A.dtype)


def s4d_cumprod(A, B, C, dt, L):
    """The powers by a cumulative product along l, float64."""
    Ab = torch.exp(dt.double()[:, None] * A.double())
    V = torch.cat([torch.ones_like(Ab)[..., None], Ab[..., None].expand(*Ab.shape, max(L - 1, 0)).cumprod(-1)], -1)
    return ((C.double() * (Ab - 1) / A.double() * B.double())[..., None] * V).sum(1).to(A.dtype)


@pytest.mark.parametrize("ex_id, fn", [
    ("7.1a", zoh_block_exponential),
    ("7.1a", zoh_in_float32_with_inv),
    ("7.1a", zoh_by_series),
    ("7.1a", zoh_solve_first),
    ("7.1b", bilinear_with_inv),
    ("7.1b", bilinear_in_float32_commuted),
    ("7.2", hippo_s4_construction),
    ("7.2", hippo_loops),
    ("7.3a", kernel_matrix_power),
    ("7.3a", kernel_row_vector),
    ("7.3a", kernel_eigen),
    ("7.3b", conv_complex_fft),
    ("7.3b", conv_odd_length),
    ("7.3b", conv_padded_by_hand),
    ("7.4", s4d_with_pow),
    ("7.4", s4d_exp_minus_one),
    ("7.4", s4d_complex),
    ("7.4", s4d_cumprod),
], ids=lambda x: x if isinstance(x, str) else x.__name__)
def test_correct_alternatives_pass(ex_id, fn):
    grade(ex_id, fn, quiet=True, **CPU)


# ------------------------------------------------------------------------------------------ hints beyond the catalogue


def zoh_by_eigendecomposition(A, B, dt):
    lam, V = torch.linalg.eig(A.double())
    Vi = torch.linalg.inv(V)
    Ab = V @ torch.diag(torch.exp(dt * lam)) @ Vi
    Bb = V @ torch.diag(torch.expm1(dt * lam) / lam) @ Vi @ B.double().to(V.dtype)
    return Ab.real.to(A.dtype), Bb.real.to(B.dtype)


def zoh_without_b(A, B, dt):
    Ab = torch.linalg.matrix_exp(dt * A.double())
    eye = torch.eye(A.shape[0], dtype=torch.float64, device=A.device)
    return Ab.to(A.dtype), torch.linalg.solve(A.double(), Ab - eye).to(B.dtype)


def kernel_without_c(Ab, Bb, C, L):
    x, out = Bb, []
    for _ in range(L):
        out.append(x[:, 0])
        x = Ab @ x
    return torch.stack(out)


def s4d_in_low_precision(A, B, C, dt, L):
    dtA = dt[:, None] * A
    return torch.einsum("hn,hnl->hl", C * (torch.exp(dtA) - 1) / A * B,
                        torch.exp(dtA[..., None] * torch.arange(L, device=A.device)))


def s4d_by_vander(A, B, C, dt, L):
    """Right for L >= 2; torch.linalg.vander refuses a single column (the L = 1 case)."""
    dtA = dt[:, None] * A
    return torch.einsum("hn,hnl->hl", C * torch.expm1(dtA) / A * B, torch.linalg.vander(torch.exp(dtA), N=L))


def zoh_swapped(A, B, dt):
    Ab, Bb = ssm.rule_fn("zoh")(A, B, dt)
    return Bb, Ab


def hippo_swapped(N, dtype=torch.float32, device="cpu"):
    A, B = ssm.hippo_wrong()(N, dtype, device)
    return B, A


@pytest.mark.parametrize("ex_id, fn, options, says", [
    ("7.1a", zoh_by_eigendecomposition, CPU, "ill-conditioned (S4 §3.1)"),  # right on N=8, lost on HiPPO N=32
    ("7.1a", zoh_swapped, CPU, "is the order swapped? the function returns (Ab, Bb)"),
    ("7.2", hippo_swapped, CPU, "is the order swapped? the function returns (A, B)"),
    ("7.1a", zoh_without_b, CPU, "is B missing?"),
    ("7.3a", kernel_without_c, CPU, "is C (the read-out [1, N]) missing"),
    ("7.3b", conv_odd_length, BF16, "torch.fft does not compute in bfloat16"),
    ("7.4", s4d_in_low_precision, BF16, "compute the kernel in float32"),
    ("7.4", s4d_by_vander, CPU, "torch.linalg.vander needs at least 2 columns"),
], ids=lambda x: x.__name__ if callable(x) else "")
def test_mistakes_outside_the_catalogue_get_the_right_hint(ex_id, fn, options, says):
    with pytest.raises(AssertionError) as failure:
        grade(ex_id, fn, quiet=True, **options)
    assert says in str(failure.value), str(failure.value)


# ------------------------------------------------------------------------------------------ how checks


def conv_toeplitz(u, K, D):
    """Right values through an L x L lower-triangular Toeplitz matrix (and an FFT for show): rejected."""
    torch.fft.rfft(u.float(), dim=1)
    L = u.shape[1]
    idx = torch.arange(L, device=u.device)
    lag = idx[:, None] - idx[None, :]
    T = torch.where(lag >= 0, K.float()[:, lag.clamp(min=0)], 0.0)  # [H, L, L]
    return (torch.einsum("hts,bsh->bth", T, u.float()) + D.float() * u.float()).to(u.dtype)


def conv_loop(u, K, D):
    """A direct sum per output step (and an FFT for show): rejected by the loop check."""
    torch.fft.rfft(u.float(), dim=1)
    L = u.shape[1]
    ys = [(K.float()[:, : t + 1].flip(-1).T[None] * u.float()[:, : t + 1]).sum(1) for t in range(L)]
    return (torch.stack(ys, 1) + D.float() * u.float()).to(u.dtype)


def _no_fft_loop(u, K, D):
    L = u.shape[1]
    ys = [(K.float()[:, : t + 1].flip(-1).T[None] * u.float()[:, : t + 1]).sum(1) for t in range(L)]
    return (torch.stack(ys, 1) + D.float() * u.float()).to(u.dtype)


def conv_fft_then_conv1d(u, K, D):
    """An FFT that does nothing, then conv1d does the work."""
    torch.fft.rfft(u.float(), dim=1)
    L, H = u.shape[1], u.shape[2]
    x = torch.nn.functional.pad(u.float().transpose(1, 2), (L - 1, 0))
    y = torch.nn.functional.conv1d(x, K.float().flip(-1)[:, None], groups=H).transpose(1, 2)
    return (y + D.float() * u.float()).to(u.dtype)


def s4d_dense(A, B, C, dt, L):
    """Right values through dense diag(Ab) and its matrix powers: rejected by the how check."""
    out = []
    for h in range(A.shape[0]):
        dA = dt[h].float() * A[h].float()
        Ab = torch.diag(dA.exp())
        Bb = ((dA.exp() - 1) / A[h].float() * B[h].float())[:, None]
        out.append(torch.stack([(C[h].float()[None] @ torch.linalg.matrix_power(Ab, i) @ Bb)[0, 0]
                                for i in range(L)]))
    return torch.stack(out).to(A.dtype)


@pytest.mark.parametrize("ex_id, fn, says", [
    ("7.3b", conv_toeplitz, "builds an L×L (Toeplitz) matrix"),
    ("7.3b", conv_loop, "loops over time steps"),
    ("7.3b", _no_fft_loop, "never calls torch.fft"),
    ("7.3b", conv_fft_then_conv1d, "conv1d"),
    ("7.4", s4d_dense, "dense N x N"),
], ids=lambda x: x.__name__ if callable(x) else slug(x))
def test_how_checks_reject_right_values_computed_the_wrong_way(ex_id, fn, says):
    with pytest.raises(AssertionError, match=r"(how|memory) check") as failure:
        grade(ex_id, fn, quiet=True, **CPU)
    assert "passes every case" in str(failure.value) and says in str(failure.value)


def test_calling_the_oracle_is_rejected():
    from course_utils.refs import discretize_zoh

    with pytest.raises(AssertionError, match="scipy.signal"):
        grade("7.1a", lambda A, B, dt: discretize_zoh(A, B, dt), quiet=True, **CPU)


# ------------------------------------------------------------------------------------------ the references


@pytest.mark.parametrize("N", [1, 2, 5, 64])
def test_legs_closed_form_is_the_s4_construction(N):
    A, B = ssm.legs_closed_form(N)
    A_s4, B_s4 = hippo_s4_construction(N, torch.float64)
    assert torch.allclose(A, A_s4, rtol=1e-12, atol=1e-12) and torch.allclose(B, B_s4, rtol=1e-15, atol=0)


def test_kernel_reference_is_the_recurrence_impulse_response():
    """K_l is the output at step l of the recurrence driven by a unit impulse at step 0 (D = 0)."""
    gen = torch.Generator().manual_seed(3)
    Ab, Bb, C = ssm.ssm64(gen, 6, 40, H=2)
    u = torch.zeros(1, 40, 2, dtype=torch.float64)
    u[0, 0] = 1.0
    y = ssm.recurrence64(u, Ab, Bb, C, torch.zeros(2))
    assert torch.allclose(y[0].T, ssm.kernel64(Ab, Bb, C, 40), atol=1e-12)


def test_s4d_reference_is_the_diagonal_closed_form():
    case = EXERCISES["7.4"].cases(torch.device("cpu"), [torch.float32])[0]
    inputs = {n: (v.double() if isinstance(v, torch.Tensor) else v)
              for n, v in ssm._s4d_inputs(case, torch.device("cpu")).items()}
    ref = ssm._s4d_reference(inputs, case)
    A, B, C, dt, L = (inputs[n] for n in ("A", "B", "C", "dt", "L"))
    dA = dt[:, None] * A
    closed = torch.einsum("hn,hnl->hl", C * torch.expm1(dA) / A * B, (dA[..., None] * torch.arange(L)).exp())
    assert torch.allclose(ref, closed, rtol=1e-9, atol=1e-12)


def test_conv_cases_have_a_kernel_alive_at_its_far_end():
    """A circular convolution only shows if K_(L-1) is not negligible: the inputs' slowest mode lasts ~L steps."""
    for case in EXERCISES["7.3b"].cases(torch.device("cpu"), [torch.float32]):
        K = ssm._conv_inputs(case, torch.device("cpu"))["K"]
        if case["L"] >= 16:
            assert K[:, -case["L"] // 4:].abs().max() > 1e-2 * K.abs().max(), case.label()


# ------------------------------------------------------------------------------------------ on a GPU (skipped on CPU)

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@GPU
@pytest.mark.parametrize("ex_id", IDS)
def test_solution_passes_on_the_gpu(ex_id):
    """The GPU's own cases: float32 and the environment's float16 / bfloat16 case, references moved to the CPU."""
    grade(ex_id, solution(ex_id), device="cuda", quiet=True)


@GPU
@pytest.mark.parametrize("ex_id, mistake", [p for p in catalogue_params(IDS) if p.values[1].options == {}][::4])
def test_mistakes_are_rejected_on_the_gpu(ex_id, mistake):
    """Every fourth catalogued mistake, graded on the GPU in float32: the diagnosis runs the wrong implementations
    on CUDA tensors too."""
    with pytest.raises(AssertionError) as failure:
        grade(ex_id, mistake.wrong_fn, device="cuda", dtypes=[torch.float32], quiet=True)
    assert all(piece in str(failure.value) for piece in mistake.expected_message()), str(failure.value)


def conv_in_input_dtype(n_of_L):
    def conv(u, K, D):
        L = u.shape[1]
        n = n_of_L(L)
        y = torch.fft.irfft(torch.fft.rfft(u, n=n, dim=1) * torch.fft.rfft(K.T, n=n, dim=0), n=n, dim=1)[:, :L]
        return y + D * u

    return conv


@GPU
def test_float16_fft_on_the_gpu():
    """cuFFT computes float16 at power-of-two lengths only: n = 2L (L = 64 in the float16 case) passes without a
    cast, n = 2L - 1 is rejected with the hint that says so."""
    fp16 = {"device": "cuda", "dtypes": [torch.float32, torch.float16], "quiet": True}
    grade("7.3b", conv_in_input_dtype(lambda L: 2 * L), **fp16)
    with pytest.raises(AssertionError, match="float16 only on a GPU at power-of-two lengths"):
        grade("7.3b", conv_in_input_dtype(lambda L: 2 * L - 1), **fp16)
