"""Gated linear attention, GLA (Yang et al. 2024, §4: the gated recurrent and parallel forms, the chunkwise form
with secondary chunking; linear attention's forms it generalises are §2).

    S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T      o_t = scale * q_t^T S_t

g is a per-key-channel log-decay [B, T, H, K] (g <= 0). The name trap this adapter hides: fla's
`chunk_gla` takes the gate as `g`, while `fused_recurrent_gla` and `naive_recurrent_gla` take it as `gk`;
`fused_recurrent_gla(..., g=...)` is swallowed by its **kwargs and runs with no gate at all. Every call
below passes the gate by keyword.

CUDA: fla `chunk_gla` ("auto"/"chunk") or `fused_recurrent_gla` ("recurrent").
CPU: fla `naive_recurrent_gla` for every mode (fla has no CPU chunk form of GLA).
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


def gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    mode: str = "auto",
):
    """Gated linear attention with a per-channel gate; returns (o, final_state).

    q, k: [B, T, H, K]   v: [B, T, H, V]   g: [B, T, H, K] log-space, g <= 0 (decay = exp(g))
    scale: default K ** -0.5   initial_state: [B, H, K, V] or None
    mode: "auto" (chunk kernel on GPU, naive recurrent on CPU), "recurrent" or "chunk"
    Returns (o [B, T, H, V] in q's dtype, final_state [B, H, K, V] float32).
    """
    fn = "gla"
    B, T, H, K, V = check_qkv(fn, q, k, v)
    check_tensor(fn, "g", g, "[B, T, H, K]")
    check_like(fn, "g", g, (B, T, H, K), "[B, T, H, K] (same as q; a scalar gate per head is simple_gla)")
    check_log_gate(fn, "g", g)
    scale = check_scale(fn, scale, K)
    check_mode(fn, mode)
    if initial_state is not None:
        check_state(fn, "initial_state", initial_state, B, H, K, V, T)
    check_same_device(fn, q=q, g=g, initial_state=initial_state)
    S0 = state_f32(initial_state)

    if on_cuda(q):
        ops = import_fla("fla.ops.gla")
        if mode == "recurrent":
            o, S = ops.fused_recurrent_gla(q, k, v, gk=g, scale=scale, initial_state=S0, output_final_state=True)
            record("fla.ops.gla.fused_recurrent_gla", q.device)
        else:
            o, S = ops.chunk_gla(q, k, v, g=g, scale=scale, initial_state=S0, output_final_state=True)
            record("fla.ops.gla.chunk_gla", q.device)
        return o.to(q.dtype), S.float()

    naive = import_fla("fla.ops.gla.naive")
    # naive_recurrent_gla has no scale argument: it always uses K ** -0.5. Only q is scaled, so
    # multiplying q by scale / K ** -0.5 gives exactly `scale` (the state does not involve q).
    q_in = q if scale == K**-0.5 else q.float() * (scale * K**0.5)
    o, S = naive.naive_recurrent_gla(q_in, k, v, gk=g, initial_state=S0, output_final_state=True)
    note = "fla has no CPU chunk form of GLA: ran the recurrent reference" if mode == "chunk" else ""
    record("fla.ops.gla.naive_recurrent_gla", q.device, note)
    return o.to(q.dtype), S
