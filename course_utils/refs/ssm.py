"""Selective state-space models: Mamba's selective scan (Gu & Dao 2023, §3.1-3.3, Algorithm 2) and
Mamba-2's SSD (Dao & Gu 2024, §3, §6).

Selective scan, per channel d and state index n (shapes as mamba-ssm: u, delta [B, D, L]):
    x_t = exp(delta_t A) x_{t-1} + delta_t B_t u_t        y_t = C_t^T x_t + D u_t   (then * silu(z_t))
A is discretised exactly (zero-order hold), B by the simpler Euler step delta * B (paper §3.2 / App.).

SSD, per head h (x [B, L, H, P]): one scalar decay per head and token,
    h_t = exp(dt_t A_h) h_{t-1} + dt_t x_t B_t^T   (state [P, N])     y_t = h_t C_t + D x_t

mamba-ssm cannot be imported without its compiled extension, so every import goes through
course_utils.mamba_import.import_mamba() first, inside the functions (importing it costs seconds).

selective_scan: CUDA + built extension → mamba-ssm `selective_scan_fn`; otherwise `selective_scan_ref`.
selective_state_update: CUDA → mamba-ssm's Triton `selective_state_update`;
    CPU → `selective_state_update_ref`.
ssd: CUDA → mamba-ssm's Triton `mamba_chunk_scan_combined`; CPU → `ssd_minimal_discrete` (Listing 1).
"""

from __future__ import annotations

import torch

from course_utils.refs._checks import (
    check_like,
    check_same_device,
    check_tensor,
    on_cuda,
    pad_time,
    record,
)


def _mamba():
    from course_utils.mamba_import import has_mamba_cuda, import_mamba

    import_mamba()
    return has_mamba_cuda()


def _check_optional(fn, name, x, expected, layout):
    if x is not None:
        check_tensor(fn, name, x, layout)
        check_like(fn, name, x, expected, layout, ref="u")


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
):
    """Mamba's selective scan over a whole sequence; returns (out, last_state).

    u, delta: [B, D, L]   A: [D, N] (real, usually negative)
    B, C: [B, N, L], or [B, G, N, L] with G groups of D // G channels
    D: [D] skip connection   z: [B, D, L] gate (out *= silu(z))   delta_bias: [D] added to delta,
    then softplus if delta_softplus
    Returns (out [B, D, L] in u's dtype, last_state [B, D, N] float32): the state after the last step.
    """
    fn = "selective_scan"
    check_tensor(fn, "u", u, "[B, D, L]")
    Bsz, Dm, L = (int(s) for s in u.shape)
    check_tensor(fn, "delta", delta, "[B, D, L]")
    check_like(fn, "delta", delta, (Bsz, Dm, L), "[B, D, L] (same as u)", ref="u")
    check_tensor(fn, "A", A, "[D, N]")
    check_like(fn, "A", A, (Dm, None), "[D, N]", ref="u")
    N = int(A.shape[1])
    for name, x in (("B", B), ("C", C)):
        if isinstance(x, torch.Tensor) and x.ndim == 4:
            check_tensor(fn, name, x, "[B, G, N, L]")
            check_like(fn, name, x, (Bsz, None, N, L), "[B, G, N, L]", ref="u")
            if Dm % x.shape[1]:
                raise ValueError(f"{fn}: {name} has G = {x.shape[1]} groups, which must divide D = {Dm}.")
        else:
            check_tensor(fn, name, x, "[B, N, L]")
            check_like(fn, name, x, (Bsz, N, L), "[B, N, L] (N from A, L from u)", ref="u")
    _check_optional(fn, "D", D, (Dm,), "[D]")
    _check_optional(fn, "z", z, (Bsz, Dm, L), "[B, D, L]")
    _check_optional(fn, "delta_bias", delta_bias, (Dm,), "[D]")
    check_same_device(fn, u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)

    has_cuda_ext = _mamba()
    from mamba_ssm.ops import selective_scan_interface as ssi

    kwargs = dict(D=D, z=z, delta_bias=delta_bias, delta_softplus=bool(delta_softplus))
    kwargs["return_last_state"] = True
    if on_cuda(u) and has_cuda_ext:
        out, last = ssi.selective_scan_fn(u, delta, A, B, C, **kwargs)
        record("mamba_ssm.selective_scan_fn", u.device)
    else:
        out, last = ssi.selective_scan_ref(u, delta, A, B, C, **kwargs)
        note = "mamba-ssm CUDA extension not built" if on_cuda(u) else ""
        record("mamba_ssm.selective_scan_ref", u.device, note)
    return out, last.float()


def selective_state_update(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
):
    """One step of the selective scan (decoding); returns (out, new_state). Never mutates `state`.

    Mamba-1 form:  state [B, D, N]   x, dt, z: [B, D]   A: [D, N]   B, C: [B, N]   D, dt_bias: [D]
    Multi-head form (Mamba-2 decoding): state [B, H, P, N]   x, dt, z: [B, H, P]   A: [H, P, N]
                   B, C: [B, G, N] (G divides H)   D, dt_bias: [H, P]
    Returns (out shaped like x, new_state shaped like state).
    """
    fn = "selective_state_update"
    if isinstance(state, torch.Tensor) and state.ndim == 4:
        check_tensor(fn, "state", state, "[B, H, P, N]")
        Bsz, H, P, N = (int(s) for s in state.shape)
        lead, x_lay, a_lay, bc_lay, d_lay = (Bsz, H, P), "[B, H, P]", "[H, P, N]", "[B, G, N]", "[H, P]"
    else:
        check_tensor(fn, "state", state, "[B, D, N]")
        Bsz, Dm, N = (int(s) for s in state.shape)
        lead, x_lay, a_lay, bc_lay, d_lay = (Bsz, Dm), "[B, D]", "[D, N]", "[B, N]", "[D]"

    def like(name, t, expected, layout):
        check_tensor(fn, name, t, layout)
        check_like(fn, name, t, expected, layout, ref="state")

    like("x", x, lead, x_lay)
    like("dt", dt, lead, x_lay)
    like("A", A, (*lead[1:], N), a_lay)
    if state.ndim == 4:
        like("B", B, (Bsz, None, N), bc_lay)
        if H % B.shape[1]:
            raise ValueError(f"{fn}: B has G = {B.shape[1]} groups, which must divide H = {H}.")
    else:
        like("B", B, (Bsz, N), bc_lay)
    like("C", C, tuple(B.shape), bc_lay + " (same as B)")
    for name, t, expected, layout in (
        ("D", D, lead[1:], d_lay),
        ("z", z, lead, x_lay),
        ("dt_bias", dt_bias, lead[1:], d_lay),
    ):
        if t is not None:
            like(name, t, expected, layout)
    check_same_device(fn, state=state, x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias)

    _mamba()
    # Both mamba-ssm forms write the new state into `state` in place; work on a copy.
    new_state = state.clone()
    kwargs = dict(D=D, z=z, dt_bias=dt_bias, dt_softplus=bool(dt_softplus))
    if on_cuda(x):
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update as op

        # mamba-ssm 2.3.2's launcher unpacks `*(D.stride(0), ...) if D is not None else 0`, which raises
        # TypeError when D or dt_bias is None: pass exact zeros instead (adding 0 changes nothing). A
        # contiguous A keeps it off its "tied head dim" shortcut, meant for expanded A, dt and dt_bias.
        lead = x.shape[1:]  # [D] or [H, P]
        if kwargs["D"] is None:
            kwargs["D"] = x.new_zeros(lead, dtype=torch.float32)
        if kwargs["dt_bias"] is None:
            kwargs["dt_bias"] = dt.new_zeros(lead, dtype=torch.float32)
        out = op(new_state, x, dt, A.contiguous(), B, C, **kwargs)
        record("mamba_ssm.ops.triton.selective_state_update", x.device)
    else:
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update_ref as op

        out = op(new_state, x, dt, A, B, C, **kwargs)
        record("mamba_ssm.ops.triton.selective_state_update_ref", x.device)
    return out, new_state


def ssd(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int = 64,
    D: torch.Tensor | None = None,
    initial_states: torch.Tensor | None = None,
):
    """Mamba-2's state-space dual layer (the scan; no conv, no gate); returns (y, final_state).

    x: [B, L, H, P]   dt: [B, L, H], >= 0 (already softplus-ed and biased)   A: [H], <= 0
    B, C: [B, L, G, N] (G groups, G divides H)   D: [H] or [H, P]   initial_states: [B, H, P, N] or None
    chunk_size: block length of the chunked algorithm (any L: the CPU reference pads L to a multiple)
    Returns (y [B, L, H, P] in x's dtype, final_state [B, H, P, N] float32).
    """
    fn = "ssd"
    check_tensor(fn, "x", x, "[B, L, H, P]")
    Bsz, L, H, P = (int(s) for s in x.shape)
    check_tensor(fn, "dt", dt, "[B, L, H]")
    check_like(fn, "dt", dt, (Bsz, L, H), "[B, L, H]", ref="x")
    check_tensor(fn, "A", A, "[H]")
    check_like(fn, "A", A, (H,), "[H] (one scalar per head)", ref="x")
    check_tensor(fn, "B", B, "[B, L, G, N]")
    check_like(fn, "B", B, (Bsz, L, None, None), "[B, L, G, N]", ref="x")
    G, N = int(B.shape[2]), int(B.shape[3])
    if H % G:
        raise ValueError(f"{fn}: B has G = {G} groups, which must divide H = {H}.")
    check_tensor(fn, "C", C, "[B, L, G, N]")
    check_like(fn, "C", C, (Bsz, L, G, N), "[B, L, G, N] (same as B)", ref="x")
    if D is not None:
        check_tensor(fn, "D", D, "[H]" if D.ndim == 1 else "[H, P]")
        check_like(fn, "D", D, (H,) if D.ndim == 1 else (H, P), "[H] or [H, P]", ref="x")
    if initial_states is not None:
        check_tensor(fn, "initial_states", initial_states, "[B, H, P, N]")
        check_like(fn, "initial_states", initial_states, (Bsz, H, P, N), "[B, H, P, N]", ref="x")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{fn}: chunk_size must be a positive int; got {chunk_size!r}.")
    if float(dt.detach().min()) < 0:
        raise ValueError(f"{fn}: dt is a step size and must be >= 0 (apply softplus); got min {float(dt.min()):.3g}.")
    if float(A.detach().max()) > 0:
        raise ValueError(
            f"{fn}: A must be <= 0 so that the decay exp(dt * A) is <= 1 (Mamba-2 uses A = -exp(A_log)); "
            f"got max {float(A.max()):.4g}."
        )
    check_same_device(fn, x=x, dt=dt, A=A, B=B, C=C, D=D, initial_states=initial_states)

    _mamba()
    if on_cuda(x):
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

        y, final = mamba_chunk_scan_combined(
            x, dt, A, B, C, chunk_size, D=D, initial_states=initial_states, return_final_states=True
        )
        record("mamba_ssm.ops.triton.mamba_chunk_scan_combined", x.device)
        return y, final.float()

    from mamba_ssm.modules.ssd_minimal import ssd_minimal_discrete

    # ssd_minimal_discrete (the paper's Listing 1) wants: one dtype, L % chunk_size == 0, per-head B and
    # C, and dt folded in (X = x * dt, A = A * dt). Zero padding (dt = 0, x = 0) decays nothing and adds
    # nothing, so the real outputs and the final state are unchanged. D is not part of it: added here.
    xf, dtf = x.float(), dt.float()
    Bh = B.float().repeat_interleave(H // G, dim=2)
    Ch = C.float().repeat_interleave(H // G, dim=2)
    X, Adt, Bh, Ch = (pad_time(t, chunk_size) for t in (xf * dtf.unsqueeze(-1), dtf * A.float(), Bh, Ch))
    init = None if initial_states is None else initial_states.float().unsqueeze(1)  # [B, 1, H, P, N]
    y, final = ssd_minimal_discrete(X, Adt, Bh, Ch, chunk_size, initial_states=init)
    y = y[:, :L]
    if D is not None:
        y = y + xf * (D.float().unsqueeze(-1) if D.ndim == 1 else D.float())
    note = f"L padded to a multiple of {chunk_size}" if L % chunk_size else ""
    record("mamba_ssm.modules.ssd_minimal_discrete", x.device, note)
    return y.to(x.dtype), final.float()


# ---------------------------------------------------------------------------------------------- the Mamba block
# Added for Lab 08 (Exercise 8.5): the whole block, as mamba-ssm's own module computes it.


def mamba_block(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The forward of a `mamba_ssm.Mamba` layer (Gu & Dao 2023, §3.4, Figure 3) on x, also without mamba-ssm's
    CUDA extension; returns y [B, L, d_model] in x's dtype (the layer computes in its parameters' dtype).

    x: [B, L, d_model] on the layer's device.
    What runs:
    - CUDA tensors and the extension built (`make gpu-setup`): the layer as it is — its fused fast path when
      causal-conv1d is installed, else its reference path with the CUDA `selective_scan_fn`.
    - otherwise (a CPU, or a GPU without the extension): the layer's reference path — without the
      causal-conv1d package, `Mamba.forward` convolves with its own `nn.Conv1d` (padding d_conv - 1 on both
      sides, the output cut to the first L steps: causal) and calls `selective_scan_fn`, which needs the
      extension. For the duration of the call `mamba_ssm.modules.mamba_simple.selective_scan_fn` is swapped
      for mamba-ssm's `selective_scan_ref` (same arguments, same results, pure PyTorch); the fast path is
      switched off for the call too, as it needs CUDA kernels, and on a CPU causal-conv1d's function (CUDA only)
      is hidden, so that the layer convolves with its nn.Conv1d. Which of these ran: `course_utils.refs.last_backend()`.
    """
    fn = "mamba_block"
    check_tensor(fn, "x", x, "[B, L, d_model]")
    if not isinstance(layer, torch.nn.Module) or not hasattr(layer, "in_proj") or not hasattr(layer, "A_log"):
        raise TypeError(f"{fn}: layer must be a mamba_ssm.Mamba module; got {type(layer).__name__}.")
    d_model = int(layer.in_proj.weight.shape[1])
    if x.shape[-1] != d_model:
        raise ValueError(f"{fn}: x is [B, L, d_model] with d_model = {d_model} (the layer's in_proj); got "
                         f"x of shape {tuple(x.shape)}. A [B, d_model, L] tensor needs x.transpose(1, 2).")
    param = layer.in_proj.weight
    if x.device != param.device:
        raise ValueError(f"{fn}: x is on {x.device} but the layer is on {param.device}: move one of them.")

    has_cuda_ext = _mamba()
    from mamba_ssm.modules import mamba_simple

    xin = x.to(param.dtype)
    if on_cuda(x) and has_cuda_ext:
        y = layer(xin)
        fast = layer.use_fast_path and mamba_simple.causal_conv1d_fn is not None
        record("mamba_ssm.Mamba (" + ("fused fast path" if fast else "selective_scan_fn") + ")", x.device)
        return y.to(x.dtype)

    from mamba_ssm.ops.selective_scan_interface import selective_scan_ref

    saved = mamba_simple.selective_scan_fn, mamba_simple.causal_conv1d_fn, layer.use_fast_path
    mamba_simple.selective_scan_fn, layer.use_fast_path = selective_scan_ref, False
    if not on_cuda(x):  # causal-conv1d's kernel, where installed, runs on CUDA only: nn.Conv1d instead
        mamba_simple.causal_conv1d_fn = None
    try:
        y = layer(xin)
    finally:  # restored on success and on error; nested calls restore in turn
        mamba_simple.selective_scan_fn, mamba_simple.causal_conv1d_fn, layer.use_fast_path = saved
    note = "mamba-ssm CUDA extension not built" if on_cuda(x) else ""
    record("mamba_ssm.Mamba (reference path, selective_scan_ref)", x.device, note)
    return y.to(x.dtype)
