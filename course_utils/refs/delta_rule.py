"""The delta rule (DeltaNet) and its gated form (Gated DeltaNet).

Delta rule (Schlag et al. 2021, §4.2; chunkwise algorithm: Yang et al. 2024, "Parallelizing Linear
Transformers with the Delta Rule over Sequence Length", §3-4): the state is corrected towards v_t
rather than only added to,

    S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T
    o_t = scale * q_t^T S_t

and the gated delta rule first decays the state: S_{t-1} <- exp(g_t) S_{t-1}, g: [B, T, H], g <= 0.
k is usually L2-normalised (as in DeltaNet); with |k|^2 beta > 2 the recurrence is unstable.

CUDA: fla `chunk_delta_rule` / `chunk_gated_delta_rule` ("auto"/"chunk"; chunk_delta_rule refuses
float32, so fp32 inputs run `fused_recurrent_delta_rule`) or `fused_recurrent_*` ("recurrent").
CPU: fla `delta_rule_recurrence` / `naive_recurrent_gated_delta_rule` ("auto"/"recurrent"; the latter also on a
GPU when gradients are needed: `fused_recurrent_gated_delta_rule` has no backward), or
`delta_rule_chunkwise` / `naive_chunk_gated_delta_rule` ("chunk").
"""

from __future__ import annotations

import torch

from course_utils.refs._checks import (
    check_beta,
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
    pad_time,
    record,
    state_f32,
)

_NAIVE_CHUNK = 32  # delta_rule_chunkwise's default block
_NAIVE_GATED_CHUNK = 64


def _check(fn, q, k, v, beta, g, scale, initial_state, mode):
    B, T, H, K, V = check_qkv(fn, q, k, v)
    check_tensor(fn, "beta", beta, "[B, T, H]")
    check_like(fn, "beta", beta, (B, T, H), "[B, T, H] (one learning rate per head and token)")
    check_beta(fn, beta)
    if g is not None:
        check_tensor(fn, "g", g, "[B, T, H]")
        check_like(fn, "g", g, (B, T, H), "[B, T, H] (one gate per head and token)")
        check_log_gate(fn, "g", g)
    scale = check_scale(fn, scale, K)
    check_mode(fn, mode)
    if initial_state is not None:
        check_state(fn, "initial_state", initial_state, B, H, K, V, T)
    check_same_device(fn, q=q, beta=beta, g=g, initial_state=initial_state)
    return scale, state_f32(initial_state)


_CHUNK_MIN_DIM = 32


def delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    mode: str = "auto",
):
    """DeltaNet's recurrence; returns (o, final_state).

    q, k: [B, T, H, K] (k usually L2-normalised)   v: [B, T, H, V]   beta: [B, T, H] in (0, 1)
    scale: default K ** -0.5   initial_state: [B, H, K, V] or None
    mode: "auto" (chunk kernel on GPU, naive recurrent on CPU), "recurrent" or "chunk"
    Returns (o [B, T, H, V] in q's dtype, final_state [B, H, K, V] float32).
    """
    scale, S0 = _check("delta_rule", q, k, v, beta, None, scale, initial_state, mode)
    K = q.shape[-1]

    if on_cuda(q):
        ops = import_fla("fla.ops.delta_rule")
        note = ""
        if mode != "recurrent" and q.dtype == torch.float32:
            mode, note = "recurrent", "chunk_delta_rule refuses float32"
        elif mode != "recurrent" and min(K, v.shape[-1]) < _CHUNK_MIN_DIM:
            # fla 0.6.0's chunk_delta_rule hit an illegal memory access on an H200 with head dim 16 (bf16;
            # 32 and 64 ran): a crash that kills the CUDA context, so small heads take the fused kernel
            mode, note = "recurrent", f"chunk_delta_rule needs head dims >= {_CHUNK_MIN_DIM}"
        op = ops.fused_recurrent_delta_rule if mode == "recurrent" else ops.chunk_delta_rule
        o, S = op(q, k, v, beta=beta.to(q.dtype), scale=scale, initial_state=S0, output_final_state=True)
        record(f"fla.ops.delta_rule.{op.__name__}", q.device, note)
        return o.to(q.dtype), S.float()

    naive = import_fla("fla.ops.delta_rule.naive")
    # Both naive forms are head-first [B, H, T, D] and hard-code scale = K ** -0.5. q enters only the
    # output, never the state, so scaling q by scale / K ** -0.5 gives exactly `scale`.
    qh = (q.float() * (scale * K**0.5)).transpose(1, 2)
    kh, vh, bh = k.float().transpose(1, 2), v.float().transpose(1, 2), beta.float().transpose(1, 2)
    if mode == "chunk":
        o, S = _cpu_chunk(naive, qh, kh, vh, bh, S0)
    else:
        o, S = naive.delta_rule_recurrence(qh, kh, vh, bh, initial_state=S0, output_final_state=True)
        record("fla.ops.delta_rule.delta_rule_recurrence", q.device)
    return o.transpose(1, 2).to(q.dtype), S.float()


def _cpu_chunk(naive, qh, kh, vh, bh, S0):
    """fla's delta_rule_chunkwise, adapted: it needs T % 32 == 0 and takes no initial state.

    Padding: tokens with k = v = 0, beta = 0 leave the state alone. Initial state: we prepend K tokens
    with k_i = e_i (the i-th unit vector), v_i = S0[i, :], beta = 1, q = 0. Starting from S = 0, token i
    sets row i of S to S0[i, :] and touches no other row (its update is (I - e_i e_i^T) S + e_i v_i^T),
    so after the prefix S == S0 exactly; their outputs are then dropped.
    """
    B, H, T, K = qh.shape
    n_pre = 0
    if S0 is not None:
        n_pre = K
        eye = torch.eye(K, dtype=qh.dtype, device=qh.device).expand(B, H, K, K)
        qh = torch.cat([torch.zeros_like(eye), qh], dim=2)
        kh = torch.cat([eye, kh], dim=2)
        vh = torch.cat([S0, vh], dim=2)
        bh = torch.cat([bh.new_ones(B, H, K), bh], dim=2)
    qh, kh, vh, bh = (pad_time(x, _NAIVE_CHUNK, dim=2) for x in (qh, kh, vh, bh))
    o, S = naive.delta_rule_chunkwise(qh, kh, vh, bh, chunk_size=_NAIVE_CHUNK)
    notes = ["T padded to a multiple of 32"] if (n_pre + T) % _NAIVE_CHUNK else []
    if S0 is not None:
        notes.append("initial state written by K unit-key prefix tokens")
    record("fla.ops.delta_rule.delta_rule_chunkwise", qh.device, "; ".join(notes))
    return o[:, :, n_pre : n_pre + T], S


def gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    mode: str = "auto",
):
    """Gated DeltaNet's recurrence; returns (o, final_state).

    q, k: [B, T, H, K] (k usually L2-normalised)   v: [B, T, H, V]
    g: [B, T, H] log-space, g <= 0   beta: [B, T, H] in (0, 1)
    scale: default K ** -0.5   initial_state: [B, H, K, V] or None
    mode: "auto" (chunk kernel on GPU, naive recurrent on CPU), "recurrent" or "chunk"
    Returns (o [B, T, H, V] in q's dtype, final_state [B, H, K, V] float32).
    """
    scale, S0 = _check("gated_delta_rule", q, k, v, beta, g, scale, initial_state, mode)

    note = ""
    if on_cuda(q) and mode == "recurrent" and _wants_grad(q, k, v, g, beta, S0):
        # fla 0.6.0's fused_recurrent_gated_delta_rule has no backward (it raises NotImplementedError, seen on an
        # H200): its naive recurrence, plain differentiable PyTorch, runs on the GPU instead.
        note = "fused_recurrent_gated_delta_rule has no backward"
    elif on_cuda(q):
        ops = import_fla("fla.ops.gated_delta_rule")
        op = ops.fused_recurrent_gated_delta_rule if mode == "recurrent" else ops.chunk_gated_delta_rule
        # fused_recurrent_gated_delta_rule's positional order is (q, k, v, g, gk, gv, beta): keywords only.
        o, S = op(
            q=q,
            k=k,
            v=v,
            g=g.float(),
            beta=beta.to(q.dtype),
            scale=scale,
            initial_state=S0,
            output_final_state=True,
        )
        record(f"fla.ops.gated_delta_rule.{op.__name__}", q.device)
        return o.to(q.dtype), S.float()

    naive = import_fla("fla.ops.gated_delta_rule.naive")
    # The two naive forms take (beta, g) and (g, beta) in that order: keywords only. Both return o in
    # float32; the chunk form pads T itself.
    if mode == "chunk":
        o, S = naive.naive_chunk_gated_delta_rule(
            q=q,
            k=k,
            v=v,
            g=g,
            beta=beta,
            chunk_size=_NAIVE_GATED_CHUNK,
            scale=scale,
            initial_state=S0,
            output_final_state=True,
        )
        record("fla.ops.gated_delta_rule.naive_chunk_gated_delta_rule", q.device)
    else:
        o, S = naive.naive_recurrent_gated_delta_rule(
            q=q, k=k, v=v, beta=beta, g=g, scale=scale, initial_state=S0, output_final_state=True
        )
        record("fla.ops.gated_delta_rule.naive_recurrent_gated_delta_rule", q.device, note)
    return o.to(q.dtype), S.float()


def _wants_grad(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd will ask for gradients of any of `tensors` (None entries are skipped)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
