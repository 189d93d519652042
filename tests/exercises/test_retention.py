"""The retention family (5.1a-c): solutions pass, every catalogued mistake is rejected with its hint, and correct
code written differently passes too."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from family_tests import (  # noqa: F401  (collected here, parametrized by IDS)
    test_mistake_is_rejected,
    test_solution_passes,
    test_solution_passes_in_bf16,
)

from course_utils.exercises import grade
from course_utils.grading.generic import CPU

IDS = ["5.1a", "5.1b", "5.1c"]


def _log_gammas(H, device):
    return torch.log1p(-(2.0 ** (-5.0 - torch.arange(H, dtype=torch.float64, device=device)))).float()


def parallel_in_log_space(q, k, v, scale=None):
    """D as exp((t - s) log gamma), masked with -inf before the exp (lab 04's log-space habit)."""
    B, T, H, K = q.shape
    s = K ** -0.5 if scale is None else scale
    t = torch.arange(T, device=q.device, dtype=torch.float32)
    logd = (t[:, None] - t[None, :]) * _log_gammas(H, q.device)[:, None, None]  # [H, T, T]
    D = logd.masked_fill(t[:, None] < t[None, :], float("-inf")).exp()
    return torch.einsum("bthk,bshk,hts,bshv->bthv", q.float() * s, k.float(), D, v.float()).to(q.dtype)


def parallel_rescaled(q, k, v, scale=None):
    """The factored form (Q * gamma^t)(K / gamma^s)^T: fine for retention's mild decays at these lengths."""
    B, T, H, K = q.shape
    s = K ** -0.5 if scale is None else scale
    g = 1 - 2.0 ** (-5 - torch.arange(H, device=q.device, dtype=torch.float32))
    powers = g[None, :] ** torch.arange(T, device=q.device, dtype=torch.float32)[:, None]  # [T, H]
    qq, kk = q.float() * powers[None, :, :, None], k.float() / powers[None, :, :, None]
    A = torch.einsum("bthk,bshk->bhts", qq * s, kk).tril()
    return torch.einsum("bhts,bshv->bthv", A, v.float()).to(q.dtype)


def recurrent_with_einsum(q, k, v, scale=None, initial_state=None):
    B, T, H, K = q.shape
    s = K ** -0.5 if scale is None else scale
    decay = _log_gammas(H, q.device).exp()
    S = torch.zeros(B, H, K, v.shape[-1], device=q.device) if initial_state is None else initial_state.float()
    outs = []
    for t in range(T):
        S = torch.einsum("h,bhkv->bhkv", decay, S) + torch.einsum("bhk,bhv->bhkv", k[:, t].float(), v[:, t].float())
        outs.append(s * torch.einsum("bhk,bhkv->bhv", q[:, t].float(), S))
    return torch.stack(outs, 1).to(q.dtype), S


def chunkwise_all_chunks_at_once(q, k, v, chunk_size=16, scale=None, initial_state=None):
    """No loop over chunks: every chunk's state contribution at once, the states by a decayed prefix sum over
    chunks written as one masked product over chunk indices (N x N, fine at these sizes)."""
    B, T, H, K = q.shape
    V, C = v.shape[-1], chunk_size
    s = K ** -0.5 if scale is None else scale
    N = -(-T // C)
    pad = N * C - T
    qc, kc, vc = (F.pad(x.float(), (0, 0, 0, 0, 0, pad)).reshape(B, N, C, H, -1) for x in (q, k, v))
    g = 1 - 2.0 ** (-5 - torch.arange(H, device=q.device, dtype=torch.float32))  # [H]
    i = torch.arange(C, device=q.device, dtype=torch.float32)
    d = i[:, None] - i[None, :]
    D = torch.where(d >= 0, g[:, None, None] ** d.clamp(min=0), 0.0)  # [H, C, C]
    intra = torch.einsum("bnihk,bnjhk,hij,bnjhv->bnihv", qc * s, kc, D, vc)
    U = torch.einsum("bnjhk,bnjhv,jh->bnhkv", kc, vc, g[None, :] ** (C - 1 - i[:, None]))  # chunk writes
    n = torch.arange(N, device=q.device, dtype=torch.float32)
    m = n[:, None] - n[None, :] - 1  # state before chunk a holds chunk b < a decayed by gamma^(C (a - b - 1))
    Wn = torch.where(m >= 0, g[:, None, None] ** (C * m.clamp(min=0)), 0.0)  # [H, N, N]
    S_before = torch.einsum("han,bnhkv->bahkv", Wn, U)
    if initial_state is not None:
        decay0 = g[None, :] ** (C * n[:, None])  # [N, H]: S_0 decayed by gamma^(C a) before chunk a
        S_before = S_before + decay0[None, :, :, None, None] * initial_state.float()[:, None]
    xi = (g[None, :] ** (i[:, None] + 1))[None, None, :, :, None]  # [1, 1, C, H, 1]
    inter = s * torch.einsum("bnihk,bnhkv->bnihv", qc, S_before) * xi
    o = (intra + inter).reshape(B, N * C, H, V)[:, :T]
    # the padded tail holds zero keys, so the last chunk's state is decayed by C - (N*C - T) real tokens only
    L = C - pad  # real tokens in the last chunk
    last = S_before[:, -1] * (g[None, :, None, None] ** L) + torch.einsum(
        "bjhk,bjhv,jh->bhkv", kc[:, -1, :L], vc[:, -1, :L], g[None, :] ** (L - 1 - i[:L, None]))
    return o.to(q.dtype), last


@pytest.mark.parametrize("ex_id, fn", [
    ("5.1a", parallel_in_log_space),
    ("5.1a", parallel_rescaled),
    ("5.1b", recurrent_with_einsum),
    ("5.1c", chunkwise_all_chunks_at_once),
], ids=lambda x: getattr(x, "__name__", x))
def test_correct_alternatives_pass(ex_id, fn):
    grade(ex_id, fn, quiet=True, **CPU)

