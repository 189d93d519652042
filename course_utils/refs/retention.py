"""Retention (RetNet, Sun et al. 2023, §2.1-2.3): linear attention with a fixed decay gamma_h per head.

    S_t = gamma_h S_{t-1} + k_t v_t^T      o_t = scale * q_t^T S_t      gamma_h = 1 - 2^(-5-h)

It is simple GLA with the constant gate g = log gamma_h (multi-scale retention, §2.2, gives each head
its own gamma). No group norm or swish gate here: those belong to the layer, not the operator.

CUDA: fla `chunk_retention` ("auto"/"chunk") or `fused_recurrent_retention` ("recurrent").
CPU: fla `naive_retention`, the parallel form ("auto"), or fla's simple GLA references with
g = log gamma: `naive_recurrent_simple_gla` ("recurrent"), `naive_chunk_simple_gla` ("chunk") — which
is how fla itself builds its retention kernels.
"""

from __future__ import annotations

import torch

from course_utils.refs._checks import (
    check_mode,
    check_qkv,
    check_same_device,
    check_scale,
    check_state,
    import_fla,
    on_cuda,
    record,
    state_f32,
)
from course_utils.refs.simple_gla import _run as _simple_gla_run


def retention_gammas(H: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The per-head decays of multi-scale retention: gamma_h = 1 - 2^(-5-h), h = 0..H-1.

    Returns a float32 tensor [H] (0.96875, 0.984375, ...: later heads remember longer).
    """
    if isinstance(H, bool) or not isinstance(H, int) or H < 1:
        raise ValueError(f"retention_gammas: H must be a positive int; got {H!r}.")
    return 1 - 2.0 ** (-5.0 - torch.arange(H, dtype=torch.float32, device=device))


def retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    mode: str = "auto",
):
    """Multi-scale retention; returns (o, final_state).

    q, k: [B, T, H, K]   v: [B, T, H, V]   scale: default K ** -0.5   initial_state: [B, H, K, V] or None
    mode: "auto" (chunk kernel on GPU, naive parallel form on CPU), "recurrent" or "chunk"
    Returns (o [B, T, H, V] in q's dtype, final_state [B, H, K, V] float32).
    """
    fn = "retention"
    B, T, H, K, V = check_qkv(fn, q, k, v)
    scale = check_scale(fn, scale, K)
    check_mode(fn, mode)
    if initial_state is not None:
        check_state(fn, "initial_state", initial_state, B, H, K, V, T)
    check_same_device(fn, q=q, initial_state=initial_state)
    S0 = state_f32(initial_state)

    if on_cuda(q):
        ops = import_fla("fla.ops.retention")
        op = ops.fused_recurrent_retention if mode == "recurrent" else ops.chunk_retention
        o, S = op(q, k, v, scale=scale, initial_state=S0, output_final_state=True)
        record(f"fla.ops.retention.{op.__name__}", q.device)
        return o.to(q.dtype), S.float()
    if mode != "auto":
        g = retention_gammas(H, q.device).log().expand(B, T, H)
        return _simple_gla_run(q, k, v, g, scale, S0, mode)
    return _cpu_parallel(q, k, v, scale, S0)


def _cpu_parallel(q, k, v, scale, S0):
    """fla's naive_retention, adapted: it is head-first [B, H, T, D], has no scale argument (always
    K ** -0.5) and neither takes nor returns a state. So we scale q by scale / K ** -0.5, transpose, and
    add the state's two closed forms (S0 decays by gamma once per token, before k_t v_t^T is added):
        o_t += scale * gamma^(t+1) q_t^T S0
        S_T  = gamma^T S0 + sum_t gamma^(T-1-t) k_t v_t^T
    """
    naive = import_fla("fla.ops.retention.naive")
    B, T, H, K = q.shape
    qf, kf, vf = q.float(), k.float(), v.float()
    o = naive.naive_retention(
        (qf * (scale * K**0.5)).transpose(1, 2), kf.transpose(1, 2), vf.transpose(1, 2)
    ).transpose(1, 2)
    gamma = retention_gammas(H, q.device)
    t = torch.arange(T, dtype=torch.float32, device=q.device)[:, None]  # [T, 1]
    S = torch.einsum("bthk,bthv,th->bhkv", kf, vf, gamma ** (T - 1 - t))
    if S0 is not None:
        o = o + scale * torch.einsum("bthk,bhkv->bthv", qf, S0) * (gamma ** (t + 1)).unsqueeze(-1)
        S = S + gamma[:, None, None] ** T * S0
    record("fla.ops.retention.naive_retention", q.device, "state terms added in closed form")
    return o.to(q.dtype), S
