"""Causal linear attention as an RNN with a matrix state (Katharopoulos et al. 2020, Eq. 8; GLA paper §2).

    S_t = S_{t-1} + k_t v_t^T            o_t = scale * q_t^T S_t
    z_t = z_{t-1} + k_t   (normalize)    o_t = (q_t^T S_t) / (q_t^T z_t + 1e-10)

CUDA: fla `chunk_linear_attn` (mode "auto"/"chunk") or `fused_recurrent_linear_attn` ("recurrent").
CPU: fla `naive_recurrent_linear_attn` ("auto"/"recurrent") or `naive_chunk_linear_attn` ("chunk").
"""

from __future__ import annotations

import torch

from course_utils.conventions import EPS
from course_utils.refs._checks import (
    check_like,
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

_NAIVE_CHUNK = 64  # naive_chunk_linear_attn hard-codes this chunk size


def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    initial_state=None,
    normalize: bool = False,
    mode: str = "auto",
):
    """Causal linear attention; returns (o, final_state).

    q, k: [B, T, H, K], already feature-mapped   v: [B, T, H, V]   scale: default K ** -0.5
    initial_state: normalize=False: S [B, H, K, V] or None
                   normalize=True:  (S [B, H, K, V], z [B, H, K]) or None
    mode: "auto" (chunk kernel on GPU, naive recurrent on CPU), "recurrent" or "chunk"
    Returns (o [B, T, H, V] in q's dtype, final_state): S [B, H, K, V], or (S, z) when normalize;
    states are float32. The state is inclusive: o_t reads S_t, which already holds k_t v_t^T.
    """
    fn = "linear_attention"
    B, T, H, K, V = check_qkv(fn, q, k, v)
    scale = check_scale(fn, scale, K)
    check_mode(fn, mode)
    if not isinstance(normalize, bool):
        raise TypeError(f"{fn}: normalize must be True or False; got {normalize!r}.")
    S0, z0 = _split_state(fn, initial_state, normalize, B, T, H, K, V)
    check_same_device(fn, q=q, initial_state=S0)
    if on_cuda(q):
        return _cuda(q, k, v, scale, S0, z0, normalize, mode)
    if mode == "chunk":
        return _cpu_chunk(q, k, v, scale, S0, z0, normalize)
    return _cpu_recurrent(q, k, v, scale, S0, z0, normalize)


def _split_state(fn, initial_state, normalize, B, T, H, K, V):
    """(S0, z0) from the caller's initial_state, checked; z0 is None unless normalize."""
    if initial_state is None:
        return None, None
    if normalize:
        if not isinstance(initial_state, (tuple, list)) or len(initial_state) != 2:
            raise TypeError(
                f"{fn}: with normalize=True the state is a pair (S [B, H, K, V], z [B, H, K]); got "
                f"{type(initial_state).__name__}. Pass initial_state=(S, z)."
            )
        S0, z0 = initial_state
        check_state(fn, "initial_state[0] (S)", S0, B, H, K, V, T)
        check_tensor(fn, "initial_state[1] (z)", z0, "[B, H, K]")
        check_like(fn, "initial_state[1] (z)", z0, (B, H, K), "[B, H, K]", ref="q")
        check_same_device(fn, S=S0, z=z0)
        return state_f32(S0), state_f32(z0)
    if isinstance(initial_state, (tuple, list)):
        raise TypeError(
            f"{fn}: with normalize=False the state is one tensor S [B, H, K, V], not a pair (S, z); "
            "pass initial_state=S (or set normalize=True)."
        )
    check_state(fn, "initial_state", initial_state, B, H, K, V, T)
    return state_f32(initial_state), None


def _cuda(q, k, v, scale, S0, z0, normalize, mode):
    la = import_fla("fla.ops.linear_attn")
    if normalize and mode == "recurrent":
        return _cuda_recurrent_normalized(la, q, k, v, scale, S0, z0)
    # chunk_linear_attn defaults to normalize=True and the fused/naive forms to False: always pass it.
    op = la.fused_recurrent_linear_attn if mode == "recurrent" else la.chunk_linear_attn
    init = S0
    if normalize and S0 is not None:
        init = (S0, z0.unsqueeze(1))  # fla's z_state is [B, 1, H, K]
    o, final = op(q, k, v, scale=scale, initial_state=init, output_final_state=True, normalize=normalize)
    record(f"fla.ops.linear_attn.{op.__name__}", q.device)
    # fla divides by a float32 normaliser when z0 is given, which promotes o: keep q's dtype.
    o = o.to(q.dtype)
    if normalize:
        S, z = final
        return o, (S.float(), z.squeeze(1).float())
    return o, final.float()


def _cuda_recurrent_normalized(la, q, k, v, scale, S0, z0):
    """fla's fused recurrent kernel on [v, 1]: a column of ones makes the state's last column z_t = z0 + sum k
    and the output's last column the normaliser scale * q_t^T z_t, so o = numerator / (normaliser + 1e-10) is
    fla's formula from one kernel call. fla's own normalize=True computes z_t with a cumsum kernel that
    autotunes 48 configurations per (B, H, dtype): about 14 s each on an H200, four times in one graded cell."""
    ones = torch.ones_like(v[..., :1])
    init = None if S0 is None else torch.cat([S0, z0.unsqueeze(-1)], dim=-1)  # [B, H, K, V + 1]: (S0, z0) a pair
    o_aug, final = la.fused_recurrent_linear_attn(q, k, torch.cat([v, ones], dim=-1), scale=scale,
                                                  initial_state=init, output_final_state=True, normalize=False)
    record("fla.ops.linear_attn.fused_recurrent_linear_attn", q.device, "normaliser from a column of ones")
    o = o_aug[..., :-1].float() / (o_aug[..., -1:].float() + EPS)
    final = final.float()
    return o.to(q.dtype), (final[..., :-1], final[..., -1])


def _cpu_recurrent(q, k, v, scale, S0, z0, normalize):
    naive = import_fla("fla.ops.linear_attn.naive")
    init = S0
    if normalize and S0 is not None:
        init = (S0, z0.unsqueeze(1))  # fla's z_state is [B, 1, H, K]
    o, final = naive.naive_recurrent_linear_attn(
        q, k, v, scale=scale, initial_state=init, output_final_state=True, normalize=normalize
    )
    record("fla.ops.linear_attn.naive_recurrent_linear_attn", q.device)
    if normalize:
        S, z = final
        return o, (S, z.squeeze(1))
    return o, final


def _cpu_chunk(q, k, v, scale, S0, z0, normalize):
    """fla's naive chunk form, adapted: it needs T % 64 == 0, keeps no state and takes none.

    So we (1) zero-pad T (zero k, v add nothing), (2) run it unnormalised, (3) add the initial state's
    contribution scale * q_t^T S0 to every output (S_t = S0 + sum_{j<=t} k_j v_j^T is linear in S0),
    (4) form the final state as S0 + sum_t k_t v_t^T, and (5) normalise with z_t = z0 + cumsum(k).
    """
    naive = import_fla("fla.ops.linear_attn.naive")
    T = q.shape[1]
    qf, kf, vf = q.float(), k.float(), v.float()
    o = naive.naive_chunk_linear_attn(
        pad_time(qf, _NAIVE_CHUNK),
        pad_time(kf, _NAIVE_CHUNK),
        pad_time(vf, _NAIVE_CHUNK),
        scale=scale,
        normalize=False,
    )[:, :T]
    S = torch.einsum("bthk,bthv->bhkv", kf, vf)
    if S0 is not None:
        o = o + scale * torch.einsum("bthk,bhkv->bthv", qf, S0)
        S = S + S0
    note = "T padded to a multiple of 64" if T % _NAIVE_CHUNK else ""
    record("fla.ops.linear_attn.naive_chunk_linear_attn", q.device, note)
    if not normalize:
        return o.to(q.dtype), S
    k_cum = kf.cumsum(1) if z0 is None else kf.cumsum(1) + z0.unsqueeze(1)
    o = o / (scale * (qf * k_cum).sum(-1, keepdim=True) + EPS)
    return o.to(q.dtype), (S, k_cum[:, -1])
