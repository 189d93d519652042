"""The attention family (1.1-1.3b): solutions pass, every catalogued mistake is rejected with its hint."""

from __future__ import annotations

import torch
from family_tests import (  # noqa: F401  (collected here, parametrized by IDS)
    test_mistake_is_rejected,
    test_solution_passes,
    test_solution_passes_in_bf16,
)

from course_utils.exercises import grade

IDS = ["1.1", "1.2a", "1.2b", "1.3a", "1.3b"]


def test_associative_form_with_a_matmul_and_an_extra_column_passes():
    """Correct code written differently from the solution: φ(K)ᵀ[V, 1] computes numerator and normaliser
    in one matmul; the cost check must accept it."""

    def associative_ones_column(q, k, v, eps=1e-6):
        fq, fk = torch.nn.functional.elu(q.float()) + 1, torch.nn.functional.elu(k.float()) + 1
        v1 = torch.cat([v.float(), torch.ones_like(v[..., :1], dtype=torch.float32)], dim=-1)
        kv = fk.transpose(1, 2).transpose(-1, -2) @ v1.transpose(1, 2)  # [B, H, K, V+1]
        out = fq.transpose(1, 2) @ kv  # [B, H, T, V+1]
        o = out[..., :-1] / (out[..., -1:] + eps)
        return o.transpose(1, 2).to(q.dtype)

    grade("1.2b", associative_ones_column, quiet=True, device="cpu", dtypes=[torch.float32])
