"""The delta-rule family (5.2-5.4): solutions pass, every catalogued mistake is rejected with its hint, correct
code written differently passes too, and the loop check counts state touches, not torch calls."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import solution
from family_tests import (  # noqa: F401  (collected here, parametrized by IDS)
    test_mistake_is_rejected,
    test_solution_passes,
    test_solution_passes_in_bf16,
)

from course_utils.exercises import grade
from course_utils.exercises.delta_rule import _StateTouches, _touch_probe
from course_utils.grading.generic import CPU

IDS = ["5.2", "5.3", "5.4"]


# ------------------------------------------------------------------------------ correct code, written differently


def householder_matrices(q, k, v, beta, scale=None, initial_state=None):
    """S_t = (I - beta k k^T) S_{t-1} + beta k v^T with the K x K matrix built at every step."""
    B, T, H, K = q.shape
    s = K ** -0.5 if scale is None else scale
    S = torch.zeros(B, H, K, v.shape[-1], device=q.device) if initial_state is None else initial_state.float()
    eye = torch.eye(K, device=q.device)
    outs = []
    for t in range(T):
        k_t, b_t = k[:, t].float(), beta[:, t].float()[..., None, None]
        A = eye - b_t * torch.einsum("bhi,bhj->bhij", k_t, k_t)
        S = A @ S + b_t * torch.einsum("bhk,bhv->bhkv", k_t, v[:, t].float())
        outs.append(s * torch.einsum("bhk,bhkv->bhv", q[:, t].float(), S))
    return torch.stack(outs, 1).to(q.dtype), S


def forward_substitution_per_chunk(q, k, v, beta, chunk_size=16, scale=None, initial_state=None):
    """Exercise 5.3 with the WY vectors built row by row (Eq. 7's recurrences over the chunk, no matrix
    inverse), in the paper's layout (state [V, K]) inside, chunk by chunk without padding: the state is still
    touched a few times per chunk only."""
    B, T, H, K = q.shape
    s = K ** -0.5 if scale is None else scale
    S = (torch.zeros(B, H, K, v.shape[-1], device=q.device) if initial_state is None
         else initial_state.float()).transpose(-1, -2)  # [B, H, V, K]
    outs = []
    for start in range(0, T, chunk_size):
        qc, kc, vc = (x[:, start:start + chunk_size].float().transpose(1, 2) for x in (q, k, v))  # [B, H, L, D]
        bc = beta[:, start:start + chunk_size].float().transpose(1, 2)  # [B, H, L]
        L = qc.shape[2]
        kk = kc @ kc.transpose(-1, -2)  # [B, H, L, L]
        w_rows, u_rows = [], []
        for r in range(L):  # w_r = beta_r (k_r - sum_{i<r} (k_i . k_r) w_i), the same for u with v
            w_r, u_r = kc[:, :, r], vc[:, :, r]
            for i in range(r):
                w_r = w_r - kk[:, :, i, r, None] * w_rows[i]
                u_r = u_r - kk[:, :, i, r, None] * u_rows[i]
            w_rows.append(bc[:, :, r, None] * w_r)
            u_rows.append(bc[:, :, r, None] * u_r)
        W, U = torch.stack(w_rows, 2), torch.stack(u_rows, 2)
        pseudo = U - W @ S.transpose(-1, -2)  # [B, H, L, V]
        o = s * qc @ S.transpose(-1, -2) + ((s * qc @ kc.transpose(-1, -2)).tril()) @ pseudo
        S = S + pseudo.transpose(-1, -2) @ kc
        outs.append(o.transpose(1, 2))
    return torch.cat(outs, 1).to(q.dtype), S.transpose(-1, -2)


def gated_with_matrices(q, k, v, g, beta, scale=None, initial_state=None):
    B, T, H, K = q.shape
    s = K ** -0.5 if scale is None else scale
    S = torch.zeros(B, H, K, v.shape[-1], device=q.device) if initial_state is None else initial_state.float()
    eye = torch.eye(K, device=q.device)
    outs = []
    for t in range(T):
        k_t, b_t = k[:, t].float(), beta[:, t].float()[..., None, None]
        A = g[:, t].float().exp()[..., None, None] * (eye - b_t * k_t[..., :, None] * k_t[..., None, :])
        S = A @ S + b_t * k_t[..., :, None] * v[:, t].float()[..., None, :]
        outs.append(s * (q[:, t].float()[..., None] * S).sum(-2))
    return torch.stack(outs, 1).to(q.dtype), S


@pytest.mark.parametrize("ex_id, fn", [
    ("5.2", householder_matrices),
    ("5.3", forward_substitution_per_chunk),
    ("5.4", gated_with_matrices),
], ids=lambda x: getattr(x, "__name__", x))
def test_correct_alternatives_pass(ex_id, fn):
    grade(ex_id, fn, quiet=True, **CPU)


def test_the_chunkwise_solution_is_also_a_correct_recurrence():
    """5.3's solution passes 5.2's cases (its values are the recurrence's, whatever the chunk size)."""
    chunk = solution("5.3")

    def as_recurrence(q, k, v, beta, scale=None, initial_state=None):
        return chunk(q, k, v, beta, chunk_size=8, scale=scale, initial_state=initial_state)

    grade("5.2", as_recurrence, quiet=True, **CPU)


def test_loop_check_counts_state_touches_per_chunk():
    """The solution touches the K x V state a few times per chunk; 5.2's loop inside chunks once per token."""
    def touches(fn, n_chunks):
        args, kwargs = _touch_probe(n_chunks * 32, 32, 8, 12, torch.device("cpu"))
        with torch.no_grad(), _StateTouches(8, 12) as counter:
            fn(*args, **kwargs)
        return counter.touches

    for fn in (solution("5.3"), forward_substitution_per_chunk):
        per_chunk = (touches(fn, 6) - touches(fn, 2)) / 4
        assert 1 <= per_chunk <= 8, (fn.__name__, per_chunk)
    recurrent = solution("5.2")

    def token_loop(q, k, v, beta, chunk_size=16):
        return recurrent(q, k, v, beta)

    assert (touches(token_loop, 6) - touches(token_loop, 2)) / 4 >= 32


def test_gated_rule_reduces_to_the_delta_rule():
    gen = torch.Generator().manual_seed(0)
    q, v = torch.randn(1, 20, 2, 16, generator=gen), torch.randn(1, 20, 2, 32, generator=gen)
    k = F.normalize(torch.randn(1, 20, 2, 16, generator=gen), dim=-1)
    beta = torch.rand(1, 20, 2, generator=gen)
    o_g, S_g = solution("5.4")(q, k, v, torch.zeros(1, 20, 2), beta)
    o_d, S_d = solution("5.2")(q, k, v, beta)
    assert torch.allclose(o_g, o_d, atol=1e-6) and torch.allclose(S_g, S_d, atol=1e-6)
