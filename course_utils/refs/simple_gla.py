"""Simple GLA: linear attention with one scalar log-decay per head and token (GLA paper §3; the gated
form shared by RetNet, Mamba-2's SSD and Lightning Attention).

    S_t = exp(g_t) S_{t-1} + k_t v_t^T      o_t = scale * q_t^T S_t

CUDA: fla `chunk_simple_gla` ("auto"/"chunk") or `fused_recurrent_simple_gla` ("recurrent").
CPU: fla `naive_recurrent_simple_gla` ("auto"/"recurrent") or `naive_chunk_simple_gla` ("chunk").
"""

from __future__ import annotations

import torch

from course_utils.refs._checks import (
    check_like,
    check_log_gate,
    check_mode,
    check_qkv,
    check_same_device,
    check_scale,
    check_state,
    check_tensor,
    import_fla,
    on_cuda,
    record,
    state_f32,
)

_NAIVE_CHUNK = 64


def simple_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    mode: str = "auto",
):
    """Linear attention with a scalar gate per head; returns (o, final_state).

    q, k: [B, T, H, K]   v: [B, T, H, V]   g: [B, T, H] log-space, g <= 0 (decay = exp(g))
    scale: default K ** -0.5   initial_state: [B, H, K, V] or None
    mode: "auto" (chunk kernel on GPU, naive recurrent on CPU), "recurrent" or "chunk"
    Returns (o [B, T, H, V] in q's dtype, final_state [B, H, K, V] float32).
    """
    fn = "simple_gla"
    B, T, H, K, V = check_qkv(fn, q, k, v)
    check_tensor(fn, "g", g, "[B, T, H]")
    check_like(fn, "g", g, (B, T, H), "[B, T, H] (one gate per head; a per-channel gate is gla)")
    check_log_gate(fn, "g", g)
    scale = check_scale(fn, scale, K)
    check_mode(fn, mode)
    if initial_state is not None:
        check_state(fn, "initial_state", initial_state, B, H, K, V, T)
    check_same_device(fn, q=q, g=g, initial_state=initial_state)
    S0 = state_f32(initial_state)
    return _run(q, k, v, g, scale, S0, mode)


def _run(q, k, v, g, scale, S0, mode):
    """Dispatch, inputs already checked (retention reuses it on CPU with g = log gamma)."""
    if on_cuda(q):
        ops = import_fla("fla.ops.simple_gla")
        op = ops.fused_recurrent_simple_gla if mode == "recurrent" else ops.chunk_simple_gla
        o, S = op(q, k, v, g=g, scale=scale, initial_state=S0, output_final_state=True)
        record(f"fla.ops.simple_gla.{op.__name__}", q.device)
        return o.to(q.dtype), S.float()
    naive = import_fla("fla.ops.simple_gla.naive")
    if mode == "chunk":
        # pads T to a multiple of chunk_size itself, but returns o in float32: cast back.
        o, S = naive.naive_chunk_simple_gla(
            q, k, v, g, initial_state=S0, output_final_state=True, chunk_size=_NAIVE_CHUNK, scale=scale
        )
        record("fla.ops.simple_gla.naive_chunk_simple_gla", q.device)
    else:
        o, S = naive.naive_recurrent_simple_gla(q, k, v, g, scale=scale, initial_state=S0, output_final_state=True)
        record("fla.ops.simple_gla.naive_recurrent_simple_gla", q.device)
    return o.to(q.dtype), S.float()
