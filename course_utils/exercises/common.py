"""Helpers shared by the lab specs: seeded inputs in the course layout, case lists, cheap wrong references.

The *expected* values of every exercise come from course_utils.refs. The functions here only build
inputs and the outputs of known mistakes ("what would a missing scale give?"), which grade() compares
against when a student's output is wrong, to name the mistake.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from course_utils.grading import Case, randn

EPS = 1e-10  # the normaliser guard of the references (fla's)


def generator(case: Case, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(1000 * case.seed + salt)


def bthd(gen: torch.Generator, case: Case, D: int, device: torch.device) -> torch.Tensor:
    """A seeded [B, T, H, D] tensor; a transposed view of [B, H, T, D] when the case is non-contiguous."""
    B, T, H = case["B"], case["T"], case["H"]
    if case.get("noncontiguous"):
        return randn(gen, B, H, T, D).to(device, case.dtype).transpose(1, 2)
    return randn(gen, B, T, H, D).to(device, case.dtype)


def feature_map(x: torch.Tensor) -> torch.Tensor:
    """elu(x) + 1: the positive feature map of Katharopoulos et al. 2020, §3.2.1."""
    return F.elu(x) + 1


def half_dtype_cases(dtypes: list[torch.dtype], base: dict[str, Any], seed: int) -> list[Case]:
    """One extra case per reduced-precision dtype the environment supports (GPU only)."""
    return [Case({**base, "dtype": dt}, seed=seed + i) for i, dt in enumerate(dtypes) if dt != torch.float32]


def linear_attention_cumsum(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    S0: torch.Tensor | None = None,
    z0: torch.Tensor | None = None,
    normalize: bool = False,
    causal: bool = True,
    exclusive: bool = False,
    reverse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Linear attention with every variation a student might write by mistake, in float32.

    q, k: [B, T, H, K]   v: [B, T, H, V]   S0: [B, H, K, V]   z0: [B, H, K]
    causal=False: every query reads the whole sequence; exclusive: o_t reads S_{t-1} (no self term);
    reverse: the recurrence runs from t = T-1 down to 0 (suffix sums).
    Returns (o [B, T, H, V], S [B, H, K, V], z [B, H, K]) — S, z after the whole sequence.
    """
    if reverse:
        o, S, z = linear_attention_cumsum(q.flip(1), k.flip(1), v.flip(1), scale, S0, z0, normalize, causal,
                                          exclusive)
        return o.flip(1), S, z
    q, k, v = q.float(), k.float(), v.float()
    kv = torch.einsum("bthk,bthv->bthkv", k, v)
    S_t = kv.cumsum(1) if causal else kv.sum(1, keepdim=True).expand_as(kv)
    z_t = k.cumsum(1) if causal else k.sum(1, keepdim=True).expand_as(k)
    if exclusive:
        S_t, z_t = S_t - kv, z_t - k
    S_fin, z_fin = kv.sum(1), k.sum(1)
    if S0 is not None:
        S_t, S_fin = S_t + S0.float()[:, None], S_fin + S0.float()
    if z0 is not None:
        z_t, z_fin = z_t + z0.float()[:, None], z_fin + z0.float()
    o = scale * torch.einsum("bthk,bthkv->bthv", q, S_t)
    if normalize:
        o = o / (scale * (q * z_t).sum(-1, keepdim=True) + EPS)
    return o, S_fin, z_fin


def state_of(initial_state: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(S0, z0) from an initial_state that is None, S, or (S, z)."""
    if initial_state is None:
        return None, None
    if isinstance(initial_state, tuple):
        return initial_state[0], initial_state[1]
    return initial_state, None
