"""The linear-attention family (2.1-2.4, 3.1, 3.3, 3.4): solutions pass, every catalogued mistake is rejected
with its hint, and correct code written differently passes too."""

from __future__ import annotations

import pytest
import torch
from conftest import solution
from family_tests import (  # noqa: F401  (collected here, parametrized by IDS)
    test_mistake_is_rejected,
    test_solution_passes,
    test_solution_passes_in_bf16,
)

from course_utils.exercises import grade
from course_utils.grading.generic import BF16, CPU

IDS = ["2.1", "2.2", "2.3", "2.4", "3.1", "3.3", "3.4"]


def _bf16_everywhere(q, k, v, scale=None, initial_state=None, normalize=False):
    """A loop that keeps everything, the state too, in the input dtype."""
    S = q.new_zeros(q.shape[0], q.shape[2], q.shape[3], v.shape[-1]) if initial_state is None else initial_state
    s = q.shape[-1] ** -0.5 if scale is None else scale
    outs = []
    for t in range(q.shape[1]):
        S = S + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(s * torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    return torch.stack(outs, 1), S


def test_a_plain_bf16_loop_passes():
    """A student who keeps everything in bf16 (state too) is within the bf16 tolerance at T=100."""
    grade("2.4", _bf16_everywhere, quiet=True, **BF16)


def test_the_recurrent_solution_passes_the_backward_exercise_and_back():
    """2.2 and 2.4 grade the same function: the solution of either passes the other."""
    for fn in [solution("2.2")] + [f for f in solution_functions_of("2.4")]:
        grade("2.2", fn, quiet=True, **CPU)
        grade("2.4", fn, quiet=True, **CPU)


def solution_functions_of(ex_id):
    from conftest import solution_functions

    return solution_functions()[ex_id]


# ------------------------------------------------------------- 3.4: the normalised chunkwise form, written otherwise


def _ones_column(q, k, v, chunk_size=16, scale=None, initial_state=None, normalize=True):
    """3.3's batched form on [V | 1] from [S0 | z0]: the last output column is the denominator, the last column
    of the state is z (no loop over chunks at all)."""
    batched = solution("3.3")
    if not normalize:
        return batched(q, k, v, chunk_size, scale, initial_state)
    B, T, H, K = q.shape
    V = v.shape[-1]
    S0, z0 = initial_state if initial_state is not None else (q.new_zeros(B, H, K, V), q.new_zeros(B, H, K))
    v1 = torch.cat([v.float(), torch.ones_like(v[..., :1], dtype=torch.float32)], dim=-1)
    o1, S1 = batched(q.float(), k.float(), v1, chunk_size, scale, torch.cat([S0.float(), z0.float()[..., None]], -1))
    return (o1[..., :V] / (o1[..., V:] + 1e-10)).to(q.dtype), (S1[..., :V], S1[..., V])


def _chunk_loop_with_z(q, k, v, chunk_size=16, scale=None, initial_state=None, normalize=True):
    """One loop carrying (S, z) together, the denominator as the masked block's row sums (a matmul with ones)."""
    B, T, H, K = q.shape
    s = K ** -0.5 if scale is None else scale
    S0, z0 = (initial_state, None) if not normalize else (initial_state or (None, None))
    S = torch.zeros(B, H, K, v.shape[-1], device=q.device) if S0 is None else S0.float()
    z = torch.zeros(B, H, K, device=q.device) if z0 is None else z0.float()
    outs = []
    for start in range(0, T, chunk_size):
        qc, kc, vc = (x[:, start:start + chunk_size].float() for x in (q, k, v))
        a = (s * torch.einsum("bchk,bshk->bhcs", qc, kc)).tril()
        num = torch.einsum("bhcs,bshv->bchv", a, vc) + s * torch.einsum("bchk,bhkv->bchv", qc, S)
        if normalize:
            den = a.sum(-1).transpose(1, 2)[..., None] + s * torch.einsum("bchk,bhk->bch", qc, z)[..., None]
            num = num / (den + 1e-10)
        outs.append(num)
        S, z = S + torch.einsum("bchk,bchv->bhkv", kc, vc), z + kc.sum(1)
    o = torch.cat(outs, dim=1).to(q.dtype)
    return (o, (S, z)) if normalize else (o, S)


@pytest.mark.parametrize("fn", [_ones_column, _chunk_loop_with_z], ids=lambda f: f.__name__)
def test_normalized_chunkwise_written_otherwise_passes(fn):
    """Correct 3.4s unlike the solution's: 3.3 on a ones column (no loop), and one loop carrying S and z."""
    grade("3.4", fn, quiet=True, **BF16)
