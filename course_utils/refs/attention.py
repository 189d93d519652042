"""Softmax attention and non-causal linear attention: the two baselines of Lab 01.

Softmax attention runs torch's scaled_dot_product_attention (on every device); non-causal linear
attention has no library form in fla or mamba-ssm, so it is two einsums here (Katharopoulos et al. 2020,
§3.2: computing phi(K)^T V first makes the cost linear in T).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from course_utils.conventions import EPS
from course_utils.refs._checks import check_qkv, check_scale, record


def softmax_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False, scale: float | None = None
) -> torch.Tensor:
    """o_t = sum_s softmax_s(scale * q_t . k_s) v_s  (s <= t when causal).

    q, k: [B, T, H, K]   v: [B, T, H, V]   scale: default K ** -0.5
    Returns o: [B, T, H, V] in q's dtype.
    """
    fn = "softmax_attention"
    _, _, _, K, _ = check_qkv(fn, q, k, v)
    scale = check_scale(fn, scale, K)
    # SDPA is head-first: [B, H, T, D].
    o = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=bool(causal), scale=scale
    )
    record("torch.nn.functional.scaled_dot_product_attention", q.device)
    return o.transpose(1, 2)


def linear_attention_noncausal(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, normalize: bool = True, scale: float | None = None
) -> torch.Tensor:
    """Every query reads the same summary of all keys and values.

    o_i = scale q_i^T (sum_j k_j v_j^T) / (scale q_i^T sum_j k_j + 1e-10)   when normalize
    o_i = scale q_i^T (sum_j k_j v_j^T)                                      otherwise
    (with normalize the scale cancels; it is kept so both forms share one definition)

    q, k: [B, T, H, K], already feature-mapped (e.g. elu(x) + 1)   v: [B, T, H, V]
    Returns o: [B, T, H, V] in q's dtype, computed in float32.
    """
    fn = "linear_attention_noncausal"
    _, _, _, K, _ = check_qkv(fn, q, k, v)
    scale = check_scale(fn, scale, K)
    qf, kf, vf = q.float(), k.float(), v.float()
    kv = torch.einsum("bthk,bthv->bhkv", kf, vf)  # the [K, V] summary: O(T K V), not O(T^2)
    o = scale * torch.einsum("bthk,bhkv->bthv", qf, kv)
    if normalize:
        z = kf.sum(1)  # [B, H, K]
        o = o / (scale * torch.einsum("bthk,bhk->bth", qf, z) + EPS).unsqueeze(-1)
    record("torch.einsum (no library has non-causal linear attention)", q.device)
    return o.to(q.dtype)
