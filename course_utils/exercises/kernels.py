"""Family: Triton kernels for linear attention (Lab 06). Every exercise is a launcher — a Python function
with the signature below that allocates the output, picks a grid and launches the student's `@triton.jit`
kernel — and runs on a CPU in Triton's interpreter (course_utils.env sets TRITON_INTERPRET=1 there).

    6.1  program ids, grids, a mask on a ragged edge   decay_values(v, g)              o = exp(g)[..., None] * v
    6.2  tl.dot of blocks                              read_state(q, S, scale=None)    o_t = scale * q_t^T S
    6.3  tl.cumsum along a block                       chunk_local_cumsum(g, chunk_size)
    6.3b tl.associative_scan, a first-order recurrence chunk_local_linear_scan(g, x, chunk_size)
                                                       h_t = exp(g_t) h_(t-1) + x_t, restarted at every chunk
    6.4  the fused recurrent linear-attention forward  fused_recurrent_linear_attention(q, k, v, scale=None,
                                                                                        initial_state=None)
    6.5  the chunked forward as two kernels            chunked_linear_attention(q, k, v, scale=None,
                                                            initial_state=None, chunk_size=16)

Expected values: 6.1-6.3b in PyTorch (float32, then the inputs' dtype); 6.4 and 6.5 from
course_utils.refs.linear_attn (fla's `fused_recurrent_linear_attn` / `chunk_linear_attn` on a GPU, its naive
recurrent / chunked references on a CPU). Shapes follow
course_utils.conventions: q, k, g [B, T, H, K], v [B, T, H, V], a scalar gate [B, T, H], states [B, H, K, V].

Every mistake is a real kernel: one `@triton.jit` kernel per exercise whose `MISTAKE` constexpr switches on
exactly one wrong line (Triton compiles one specialisation per value, so each is a kernel of its own), with a
launcher of the exercise's signature (`*_wrong(name, ...)`). Mistakes that would read or write out of bounds
(a missing mask) are not in the catalogue: in the interpreter they read whatever memory lies past the tensor.
Launchers that compute part of the answer in PyTorch are (6.1, 6.5): the kernel check rejects them. A race — two
programs storing to one block — is wrong in every program order, and the interpreter runs them in one order.
The warm-ups (6.1-6.3b) print the student's block beside the expected one on a wrong value (`block_beside_expected`,
through Exercise.explain). The GLA kernels (6.6, 6.7) are in course_utils.exercises.kernels_gla.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
import triton
import triton.language as tl

from course_utils.conventions import GATE_LAYOUT, QK_LAYOUT, STATE_LAYOUT, VO_LAYOUT, resolve_scale
from course_utils.exercises.cases import bthd, case_list, generator, randn
from course_utils.grading import Case, Exercise, Mistake, TensorOut, TupleOut, register
from course_utils.grading.generic import BF16
from course_utils.grading.how import forbid, launches_a_kernel
from course_utils.grading.spec import Failure

K_DIM, V_DIM = 16, 32  # powers of two (tl.arange), >= 16 (tl.dot); K != V so a transposed state shows
BLOCK_61 = 128  # 6.1's block of elements: B*T*H*V is rarely a multiple of it (a ragged last block)
BLOCK_T = 16  # 6.2's block of time steps (tl.dot needs >= 16)
BLOCK_V = 16  # 6.4's value block: V_DIM = 32 makes two programs per (batch, head)


# ================================================================================================ inputs


def _inputs(case: Case, device: torch.device) -> dict[str, Any]:
    """Every family input the case asks for, seeded (q, k [B,T,H,K], v [B,T,H,V], g, S, ...)."""
    gen = generator(case)
    B, T, H = case["B"], case["T"], case["H"]
    q, k = bthd(gen, case, K_DIM, device), bthd(gen, case, K_DIM, device)
    v = bthd(gen, case, V_DIM, device)
    inputs: dict[str, Any] = {"q": q, "k": k, "v": v}
    inputs["g_scalar"] = (-torch.rand(B, T, H, generator=gen)).to(device, case.dtype)  # log gates in (-1, 0]
    inputs["g"] = (0.1 * randn(gen, B, T, H, K_DIM)).to(device, case.dtype)  # any signs: a cumsum has no rules
    inputs["S"] = (0.3 * randn(gen, B, H, K_DIM, V_DIM)).to(device, case.dtype)
    # log gates < 0 for 6.3b's decays; drawn last, so the inputs of the other exercises stay as they were
    inputs["g_log"] = torch.nn.functional.logsigmoid(randn(gen, B, T, H, K_DIM) + 1.0).to(device, case.dtype)
    if case.get("noncontiguous"):
        inputs["g_scalar"] = inputs["g_scalar"].transpose(1, 2).contiguous().transpose(1, 2)
        inputs["g"] = inputs["g"].transpose(1, 2).contiguous().transpose(1, 2)
        inputs["g_log"] = inputs["g_log"].transpose(1, 2).contiguous().transpose(1, 2)
    return inputs


def _pick(*names: str, rename: dict[str, str] | None = None) -> Callable[[Case, torch.device], dict[str, Any]]:
    rename = rename or {}

    def make(case: Case, device: torch.device) -> dict[str, Any]:
        all_inputs = _inputs(case, device)
        out = {rename.get(n, n): all_inputs[n] for n in names}
        for name in ("scale", "chunk_size"):
            if name in case.params:
                out[name] = case[name]
        if case.get("initial_state"):
            out["initial_state"] = all_inputs["S"]
        return out

    return make


RACE_HINT = ("two programs store to the same output block, each with a partial result (a grid that splits the key "
             "channels, or a value block without its program's offset): the last writer wins — here the "
             "interpreter runs programs in order, on a GPU the answer changes from run to run. Give every output "
             "block exactly one program (split V, not K: the read-out sums over K)")
INPUT_DTYPE_STATE_HINT = ("the state is rounded to the inputs' dtype (bfloat16 here) at every step: in float32 cases "
                          "that changes nothing, in bfloat16 the small updates of a long memory are lost. Keep S in "
                          "float32 between steps/chunks and cast only what you store")
RACE_STATES_HINT = ("two programs store to the same block of the chunk states: a value-block program that loads and "
                    "stores without its own offset (ov = tl.arange(0, BV), not i_v * BV + tl.arange(0, BV)) writes "
                    "value block 0 like every other, and the last writer wins — here the interpreter runs programs in "
                    "order, on a GPU the answer changes from run to run. Each program owns the block of h at its own "
                    "value (and key) offset")
# in a bfloat16 case a state rounded to bfloat16 and one rounded to the inputs' dtype are the same kernel: either hint
STATE_DTYPE_SAYS = ("bfloat16", "Keep S in float32")
BF16_STATE_HINT = ("the state loses precision: it is accumulated in bfloat16. Keep S in float32 "
                   "(tl.zeros(..., dtype=tl.float32)) across steps/chunks and cast only what you store")


def block_beside_expected(failure: Failure, rows: int = 8, cols: int = 5) -> str | None:
    """Triton-Puzzles style: the student's block beside the expected one, around the first wrong entry.

    For a [B, T, H, D] output: the time steps t0..t0+rows-1 (t0 a little before the first wrong step) and the first
    `cols` channels of the first wrong (b, h); a '!' follows every entry off by more than the tolerance."""
    got, exp, first, wrong = failure.got, failure.expected, failure.info.get("first"), failure.info.get("wrong")
    if not isinstance(got, torch.Tensor) or got.dim() != 4 or first is None or wrong is None or got.shape != exp.shape:
        return None
    b, t_first, h = first[0], first[1], first[2]
    T, D = got.shape[1], got.shape[3]
    t0 = max(0, min(t_first - 2, T - rows))
    ts, ds = range(t0, min(T, t0 + rows)), range(min(D, cols))
    g, e, w = got.detach().float().cpu(), exp.detach().float().cpu(), wrong.cpu()

    def entry(x: torch.Tensor, t: int, d: int) -> str:
        return f"{x[b, t, h, d].item():+8.4f}" + ("!" if w[b, t, h, d] else " ")

    more = " …" if D > cols else ""
    width = len(ds) * 10 + len(more)
    lines = [f"your block beside the expected one (b={b}, h={h}, t={ts[0]}..{ts[-1]}, channels 0..{ds[-1]}; "
             "! marks a wrong entry):",
             f"   {'t':>4} | {'yours':<{width}} | expected"]
    for t in ts:
        yours = "".join(entry(g, t, d) + " " for d in ds).rstrip() + more
        theirs = "".join(f"{e[b, t, h, d].item():+8.4f}  " for d in ds).rstrip() + more
        lines.append(f"   {t:>4} | {yours:<{width}} | {theirs}")
    return "\n".join(lines)


def _grid_note(what: str) -> str:
    return (f"the grid misses the ragged last {what}: launch triton.cdiv(n, BLOCK) programs, not n // BLOCK "
            "(the last program handles a partial block, its mask switches off the rest)")


# ================================================================================================ 6.1


@triton.jit
def _decay_kernel(v_ptr, g_ptr, o_ptr, n, V: tl.constexpr, BLOCK: tl.constexpr, MISTAKE: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    if MISTAKE == "mask_off_by_one":
        mask = offs < n - 1
    x = tl.load(v_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    row = offs // V  # the (b, t, h) row of element offs
    if MISTAKE == "gate_per_block":
        row = offs * 0 + pid
    g = tl.load(g_ptr + row, mask=mask, other=0.0).to(tl.float32)
    decay = tl.exp(g)
    if MISTAKE == "no_exp":
        decay = g
    tl.store(o_ptr + offs, (decay * x).to(o_ptr.dtype.element_ty), mask=mask)


def decay_wrong(name: str, mistake: str = "", grid_floor: bool = False) -> Callable[..., torch.Tensor]:
    """decay_values(v, g) launching _decay_kernel with `mistake` (or the grid n // BLOCK)."""

    def wrong(v, g):
        v, g = v.contiguous(), g.contiguous()
        o = torch.zeros_like(v)
        n = v.numel()
        grid = (n // BLOCK_61,) if grid_floor else (triton.cdiv(n, BLOCK_61),)
        _decay_kernel[grid](v, g, o, n, V=v.shape[-1], BLOCK=BLOCK_61, MISTAKE=mistake)
        return o

    wrong.__name__ = name
    return wrong


def _expected_decay(inputs: dict[str, Any], case: Case) -> torch.Tensor:
    v, g = inputs["v"], inputs["g"]
    return (g.float().exp()[..., None] * v.float()).to(v.dtype)


KERNEL_CHECKS = (forbid(), launches_a_kernel)
"""Every kernel exercise: the answer comes from the student's Triton kernel, not PyTorch or a library."""


def _decay_in_pytorch(v, g):
    return torch.exp(g.float())[..., None].to(v.dtype) * v


DECAY = register(Exercise(
    id="6.1",
    fn_name="decay_values",
    signature="decay_values(v, g) -> o",
    cases=lambda device, dtypes: case_list({}, [
        {"B": 1, "T": 8, "H": 2},  # 512 elements: four whole blocks of 128
        {"B": 2, "T": 63, "H": 3},  # 12,096 elements: the last block holds 64
        {"B": 1, "T": 37, "H": 2, "noncontiguous": True},  # 2,368: the last block holds 64
    ], 601, dtypes, half={"B": 2, "T": 21, "H": 2}),
    make_inputs=_pick("v", "g_scalar", rename={"g_scalar": "g"}),
    expected=_expected_decay,
    reference_name="PyTorch: exp(g)[..., None] * v",
    output=TensorOut("o", VO_LAYOUT),
    positional=("v", "g"),
    explain=block_beside_expected,
    input_layouts={"v": VO_LAYOUT, "g": GATE_LAYOUT},
    extra_checks=KERNEL_CHECKS,
    mistakes=(
        Mistake("grid n // BLOCK (ragged last block never runs)", decay_wrong("grid_floor", grid_floor=True),
                _grid_note("block")),
        Mistake("mask off by one (offs < n - 1)", decay_wrong("mask_off_by_one", "mask_off_by_one"),
                "only the very last element is wrong: the mask is off by one — offs < n keeps every element"),
        Mistake("gate indexed by the program id", decay_wrong("gate_per_block", "gate_per_block"),
                "one gate per block: element offs belongs to row offs // V (b, t, h flattened), so its gate is "
                "g[offs // V], not g[program_id]"),
        Mistake("multiplies by g, not exp(g)", decay_wrong("no_exp", "no_exp"),
                "g is a log gate (g <= 0): the decay is exp(g) — tl.exp(g) * v"),
        Mistake("computed in PyTorch, no kernel", _decay_in_pytorch, says=("kernel check",)),
    ),
))


# ================================================================================================ 6.2


@triton.jit
def _read_state_kernel(q_ptr, s_ptr, o_ptr, T, scale, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                       BT: tl.constexpr, MISTAKE: tl.constexpr):
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    b, h = i_bh // H, i_bh % H
    t = i_t * BT + tl.arange(0, BT)
    ok, ov = tl.arange(0, K), tl.arange(0, V)
    mask_t = t < T
    if MISTAKE == "mask_off_by_one":
        mask_t = t < T - 1
    row = (b * T + t) * H + h  # the (b, t, h) row of each time step of the block
    if MISTAKE == "time_stride_K":
        row = b * T * H + h + t
    q = tl.load(q_ptr + row[:, None] * K + ok[None, :], mask=mask_t[:, None], other=0.0)
    s_head = b * H + h
    if MISTAKE == "head_zero_state":
        s_head = b * H
    S = tl.load(s_ptr + s_head * K * V + ok[:, None] * V + ov[None, :])
    o = tl.dot(q.to(tl.float32), S.to(tl.float32), input_precision="ieee")  # [BT, K] @ [K, V] -> [BT, V]
    if MISTAKE != "no_scale":
        o = o * scale
    tl.store(o_ptr + row[:, None] * V + ov[None, :], o.to(o_ptr.dtype.element_ty), mask=mask_t[:, None])


def read_state_wrong(name: str, mistake: str = "", grid_floor: bool = False) -> Callable[..., torch.Tensor]:
    """read_state(q, S, scale=None) launching _read_state_kernel with `mistake` (or the grid T // BT)."""

    def wrong(q, S, scale=None):
        q, S = q.contiguous(), S.contiguous()
        B, T, H, K = q.shape
        V = S.shape[-1]
        o = torch.zeros(B, T, H, V, device=q.device, dtype=q.dtype)
        grid = (T // BLOCK_T if grid_floor else triton.cdiv(T, BLOCK_T), B * H)
        _read_state_kernel[grid](q, S, o, T, resolve_scale(scale, K), H=H, K=K, V=V, BT=BLOCK_T, MISTAKE=mistake)
        return o

    wrong.__name__ = name
    return wrong


def _expected_read(inputs: dict[str, Any], case: Case) -> torch.Tensor:
    q, S = inputs["q"], inputs["S"]
    s = resolve_scale(inputs.get("scale"), q.shape[-1])
    return (s * torch.einsum("bthk,bhkv->bthv", q.float(), S.float())).to(q.dtype)


READ_STATE = register(Exercise(
    id="6.2",
    fn_name="read_state",
    signature="read_state(q, S, scale=None) -> o",
    cases=lambda device, dtypes: case_list({}, [
        {"B": 1, "T": 32, "H": 2},  # two whole blocks of 16 time steps
        {"B": 2, "T": 37, "H": 3},  # the last block holds 5
        {"B": 2, "T": 21, "H": 2, "scale": 0.3, "noncontiguous": True},
    ], 621, dtypes, half={"B": 2, "T": 21, "H": 2}),
    make_inputs=_pick("q", "S"),
    expected=_expected_read,
    reference_name="PyTorch: scale * einsum('bthk,bhkv->bthv', q, S)",
    output=TensorOut("o", VO_LAYOUT),
    positional=("q", "S"),
    explain=block_beside_expected,
    input_layouts={"q": QK_LAYOUT, "S": STATE_LAYOUT},
    extra_checks=KERNEL_CHECKS,
    mistakes=(
        Mistake("grid T // BT (ragged last block of time steps never runs)",
                read_state_wrong("grid_floor", grid_floor=True), _grid_note("block of time steps")),
        Mistake("time mask off by one (t < T - 1)", read_state_wrong("mask_off_by_one", "mask_off_by_one"),
                "only the last time step is wrong: the mask is off by one — t < T keeps every step"),
        Mistake("time stride taken as 1 row (ignores the head axis)",
                read_state_wrong("time_stride_K", "time_stride_K"),
                "rows of q come from the wrong time steps: in [B, T, H, K] step t of head h starts at "
                "((b*T + t)*H + h)*K — consecutive time steps are H*K apart, not K"),
        Mistake("every head reads head 0's state", read_state_wrong("head_zero_state", "head_zero_state"),
                "only head 0 is right: program (b, h) reads S[b, h], at (b*H + h)*K*V"),
        Mistake("scale not applied", read_state_wrong("no_scale", "no_scale"),
                "missing scale: o = scale * q S with scale = K**-0.5 when scale is None"),
    ),
))


# ================================================================================================ 6.3


@triton.jit
def _cumsum_kernel(g_ptr, o_ptr, T, H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, MISTAKE: tl.constexpr):
    i_c, i_bh = tl.program_id(0), tl.program_id(1)
    b, h = i_bh // H, i_bh % H
    ok = tl.arange(0, K)
    if MISTAKE == "not_restarted":  # one program per (b, h) walks every chunk and carries the sum on
        carry = tl.zeros([K], dtype=tl.float32)
        for c in range(0, tl.cdiv(T, BT)):
            t = c * BT + tl.arange(0, BT)
            ptrs = ((b * T + t) * H + h)[:, None] * K + ok[None, :]
            x = tl.load(g_ptr + ptrs, mask=(t < T)[:, None], other=0.0).to(tl.float32)
            G = tl.cumsum(x, axis=0) + carry[None, :]
            tl.store(o_ptr + ptrs, G.to(o_ptr.dtype.element_ty), mask=(t < T)[:, None])
            carry = tl.sum(x, axis=0) + carry
    else:
        t = i_c * BT + tl.arange(0, BT)
        mask_t = t < T
        if MISTAKE == "mask_off_by_one":
            mask_t = t < T - 1
        ptrs = ((b * T + t) * H + h)[:, None] * K + ok[None, :]
        x = tl.load(g_ptr + ptrs, mask=mask_t[:, None], other=0.0).to(tl.float32)
        if MISTAKE == "along_k":
            G = tl.cumsum(x, axis=1)
        else:
            G = tl.cumsum(x, axis=0)
        if MISTAKE == "exclusive":
            G = G - x
        tl.store(o_ptr + ptrs, G.to(o_ptr.dtype.element_ty), mask=mask_t[:, None])


def cumsum_wrong(name: str, mistake: str = "", grid_floor: bool = False) -> Callable[..., torch.Tensor]:
    """chunk_local_cumsum(g, chunk_size) launching _cumsum_kernel with `mistake` (or the grid T // chunk_size)."""

    def wrong(g, chunk_size):
        g = g.contiguous()
        B, T, H, K = g.shape
        o = torch.zeros_like(g)
        n_chunks = 1 if mistake == "not_restarted" else T // chunk_size if grid_floor else triton.cdiv(T, chunk_size)
        _cumsum_kernel[(n_chunks, B * H)](g, o, T, H=H, K=K, BT=chunk_size, MISTAKE=mistake)
        return o

    wrong.__name__ = name
    return wrong


def _expected_cumsum(inputs: dict[str, Any], case: Case) -> torch.Tensor:
    g, C = inputs["g"], inputs["chunk_size"]
    B, T, H, K = g.shape
    n = -(-T // C)
    padded = torch.nn.functional.pad(g.float(), (0, 0, 0, 0, 0, n * C - T))  # [B, n*C, H, K]
    G = padded.view(B, n, C, H, K).cumsum(dim=2).view(B, n * C, H, K)[:, :T]
    return G.to(g.dtype)


CUMSUM = register(Exercise(
    id="6.3",
    fn_name="chunk_local_cumsum",
    signature="chunk_local_cumsum(g, chunk_size) -> G",
    cases=lambda device, dtypes: case_list({}, [
        {"B": 1, "T": 32, "H": 2, "chunk_size": 16},  # two whole chunks
        {"B": 2, "T": 63, "H": 3, "chunk_size": 16},  # the last chunk holds 15
        {"B": 2, "T": 40, "H": 2, "chunk_size": 32, "noncontiguous": True},  # the last chunk holds 8
    ], 631, dtypes, half={"B": 2, "T": 40, "H": 2, "chunk_size": 16}),
    make_inputs=_pick("g"),
    expected=_expected_cumsum,
    reference_name="PyTorch: cumsum within each chunk of chunk_size steps",
    output=TensorOut("G", QK_LAYOUT),
    positional=("g",),
    explain=block_beside_expected,
    input_layouts={"g": QK_LAYOUT},
    extra_checks=KERNEL_CHECKS,
    mistakes=(
        Mistake("grid T // chunk_size (ragged last chunk never runs)", cumsum_wrong("grid_floor", grid_floor=True),
                _grid_note("chunk")),
        Mistake("time mask off by one (t < T - 1)", cumsum_wrong("mask_off_by_one", "mask_off_by_one"),
                "only the last time step is wrong: the mask is off by one — t < T keeps every step"),
        Mistake("cumsum along K, not along time", cumsum_wrong("along_k", "along_k"),
                "the sum runs over the key channels: the block is [chunk_size, K], time is axis 0 — "
                "tl.cumsum(x, axis=0)"),
        Mistake("exclusive cumsum", cumsum_wrong("exclusive", "exclusive"),
                "exclusive: G_t must include g_t itself (G_t = g_c0 + ... + g_t, inclusive)"),
        Mistake("not restarted per chunk (carried over the whole sequence)",
                cumsum_wrong("not_restarted", "not_restarted"),
                "the sum is carried across chunks: it restarts at every chunk's first step (a chunk-local "
                "cumsum; what came before is in the chunk state)"),
    ),
))


# ================================================================================================ 6.3b


@triton.jit
def _first_order(a1, b1, a2, b2):
    """(a1, b1) then (a2, b2): h -> a2 (a1 h + b1) + b2."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _first_order_swapped(a1, b1, a2, b2):
    return a1 * a2, a1 * b2 + b1


@triton.jit
def _first_order_earlier_decay(a1, b1, a2, b2):
    return a1 * a2, a1 * b1 + b2


@triton.jit
def _first_order_decays_input(a1, b1, a2, b2):
    return a1 * a2, a2 * (b1 + b2)


@triton.jit
def _scan_kernel(g_ptr, x_ptr, o_ptr, T, H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr, MISTAKE: tl.constexpr):
    i_c, i_bh = tl.program_id(0), tl.program_id(1)
    b, h = i_bh // H, i_bh % H
    ok = tl.arange(0, K)
    if MISTAKE == "not_restarted":  # one program per (b, h) walks every chunk and carries h on
        carry = tl.zeros([K], dtype=tl.float32)
        for c in range(0, tl.cdiv(T, BT)):
            t = c * BT + tl.arange(0, BT)
            ptrs = ((b * T + t) * H + h)[:, None] * K + ok[None, :]
            a = tl.exp(tl.load(g_ptr + ptrs, mask=(t < T)[:, None], other=0.0).to(tl.float32))
            x = tl.load(x_ptr + ptrs, mask=(t < T)[:, None], other=0.0).to(tl.float32)
            A, Hs = tl.associative_scan((a, x), 0, _first_order)
            Hs = Hs + A * carry[None, :]
            tl.store(o_ptr + ptrs, Hs.to(o_ptr.dtype.element_ty), mask=(t < T)[:, None])
            carry = tl.sum(tl.where((t == tl.minimum(c * BT + BT, T) - 1)[:, None], Hs, 0.0), axis=0)
    else:
        t = i_c * BT + tl.arange(0, BT)
        mask_t = t < T
        if MISTAKE == "mask_off_by_one":
            mask_t = t < T - 1
        ptrs = ((b * T + t) * H + h)[:, None] * K + ok[None, :]
        g = tl.load(g_ptr + ptrs, mask=mask_t[:, None], other=0.0).to(tl.float32)
        x = tl.load(x_ptr + ptrs, mask=mask_t[:, None], other=0.0).to(tl.float32)
        a = tl.exp(g)
        if MISTAKE == "no_exp":
            a = g
        if MISTAKE == "swapped":
            A, Hs = tl.associative_scan((a, x), 0, _first_order_swapped)
        elif MISTAKE == "decays_input":
            A, Hs = tl.associative_scan((a, x), 0, _first_order_decays_input)
        elif MISTAKE == "earlier_decay":
            A, Hs = tl.associative_scan((a, x), 0, _first_order_earlier_decay)
        elif MISTAKE == "along_k":
            A, Hs = tl.associative_scan((a, x), 1, _first_order)
        elif MISTAKE == "no_decay":
            Hs = tl.cumsum(x, axis=0)
        else:
            A, Hs = tl.associative_scan((a, x), 0, _first_order)
        tl.store(o_ptr + ptrs, Hs.to(o_ptr.dtype.element_ty), mask=mask_t[:, None])


def scan_wrong(name: str, mistake: str = "", grid_floor: bool = False) -> Callable[..., torch.Tensor]:
    """chunk_local_linear_scan(g, x, chunk_size) launching _scan_kernel with `mistake` (or the grid
    T // chunk_size)."""

    def wrong(g, x, chunk_size):
        g, x = g.contiguous(), x.contiguous()
        B, T, H, K = x.shape
        o = torch.zeros_like(x)
        n_chunks = 1 if mistake == "not_restarted" else T // chunk_size if grid_floor else triton.cdiv(T, chunk_size)
        _scan_kernel[(n_chunks, B * H)](g, x, o, T, H=H, K=K, BT=chunk_size, MISTAKE=mistake)
        return o

    wrong.__name__ = name
    return wrong


def _expected_scan(inputs: dict[str, Any], case: Case) -> torch.Tensor:
    g, x, C = inputs["g"].float(), inputs["x"].float(), inputs["chunk_size"]
    h = torch.zeros_like(x[:, 0])
    out = []
    for t in range(x.shape[1]):
        h = (0.0 if t % C == 0 else g[:, t].exp() * h) + x[:, t]
        out.append(h)
    return torch.stack(out, 1).to(inputs["x"].dtype)


SCAN = register(Exercise(
    id="6.3b",
    fn_name="chunk_local_linear_scan",
    signature="chunk_local_linear_scan(g, x, chunk_size) -> h",
    cases=lambda device, dtypes: case_list({}, [
        {"B": 1, "T": 32, "H": 2, "chunk_size": 16},  # two whole chunks
        {"B": 2, "T": 63, "H": 3, "chunk_size": 16},  # the last chunk holds 15
        {"B": 2, "T": 40, "H": 2, "chunk_size": 32, "noncontiguous": True},  # the last chunk holds 8
    ], 635, dtypes, half={"B": 2, "T": 40, "H": 2, "chunk_size": 16}),
    make_inputs=_pick("g_log", "k", rename={"g_log": "g", "k": "x"}),
    expected=_expected_scan,
    reference_name="PyTorch: h_t = exp(g_t) h_(t-1) + x_t, restarted at every chunk",
    output=TensorOut("h", QK_LAYOUT),
    positional=("g", "x"),
    explain=block_beside_expected,
    input_layouts={"g": QK_LAYOUT, "x": QK_LAYOUT},
    extra_checks=KERNEL_CHECKS,
    mistakes=(
        Mistake("grid T // chunk_size (ragged last chunk never runs)", scan_wrong("grid_floor", grid_floor=True),
                _grid_note("chunk")),
        Mistake("time mask off by one (t < T - 1)", scan_wrong("mask_off_by_one", "mask_off_by_one"),
                "only the last time step is wrong: the mask is off by one — t < T keeps every step"),
        Mistake("combine in the wrong order", scan_wrong("swapped", "swapped"),
                "the combine is applied in the wrong order: (a1, b1) is the earlier element, so "
                "(a1, b1) ∘ (a2, b2) = (a1·a2, a2·b1 + b2) — the later decay a2 multiplies the earlier sum b1"),
        Mistake("combine decays the earlier sum with the earlier decay", scan_wrong("earlier_decay", "earlier_decay"),
                "the earlier sum b1 is decayed by its own a1: a step's decay applies to what came before it, so "
                "(a1, b1) ∘ (a2, b2) = (a1·a2, a2·b1 + b2) — the later decay a2 multiplies b1"),
        Mistake("scan along K, not along time", scan_wrong("along_k", "along_k"),
                "the scan runs along the channels: the recurrence is along time, axis 0 of the [chunk_size, K] "
                "block — tl.associative_scan((a, x), 0, first_order)"),
        Mistake("combine decays the new input too", scan_wrong("decays_input", "decays_input"),
                "the combine decays the new input too: h_t = a_t h_(t-1) + x_t adds x_t undecayed, so the "
                "second component is a2·b1 + b2, not a2·(b1 + b2)"),
        Mistake("multiplies by g, not exp(g)", scan_wrong("no_exp", "no_exp"),
                "g is a log gate (g <= 0): the decay is a = exp(g) — scan over (tl.exp(g), x)"),
        Mistake("a plain cumsum (no decay)", scan_wrong("no_decay", "no_decay"),
                "no decay: tl.cumsum adds the inputs undecayed; the recurrence needs tl.associative_scan with the "
                "first-order combine over pairs (a, x)"),
        Mistake("not restarted per chunk (carried over the whole sequence)",
                scan_wrong("not_restarted", "not_restarted"),
                "h is carried across chunks: it restarts from 0 at every chunk's first step (what came before is "
                "in the chunk state)"),
    ),
))


# ================================================================================================ 6.4


@triton.jit
def _recurrent_kernel(q_ptr, k_ptr, v_ptr, o_ptr, s0_ptr, sT_ptr, T, scale, H: tl.constexpr, K: tl.constexpr,
                      V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, USE_S0: tl.constexpr,
                      MISTAKE: tl.constexpr):
    i_v, i_bh, i_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)  # i_k > 0 only in the race
    b, h = i_bh // H, i_bh % H
    ok, ov = i_k * BK + tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    state = (b * H + h) * K * V + ok[:, None] * V + ov[None, :]  # this program's [BK, BV] block of S
    S = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_S0:
        if MISTAKE != "ignores_initial_state":
            S += tl.load(s0_ptr + state).to(tl.float32)
    if MISTAKE == "fp16_state":
        S = S.to(tl.float16)
    steps = T
    if MISTAKE == "loop_off_by_one":
        steps = T - 1
    for t in range(0, steps):
        row = (b * T + t) * H + h
        q = tl.load(q_ptr + row * K + ok).to(tl.float32)
        k = tl.load(k_ptr + row * K + ok).to(tl.float32)
        v = tl.load(v_ptr + row * V + ov).to(tl.float32)
        if MISTAKE == "exclusive":
            o = tl.sum(S * q[:, None], axis=0) * scale
            S = S + k[:, None] * v[None, :]
        elif MISTAKE == "no_carry":
            S = k[:, None] * v[None, :]
            o = tl.sum(S * q[:, None], axis=0) * scale
        elif MISTAKE == "fp16_state":
            S = (S + k[:, None] * v[None, :]).to(tl.float16)
            o = tl.sum(S.to(tl.float32) * q[:, None], axis=0) * scale
        elif MISTAKE == "state_in_input_dtype":
            S = (S + k[:, None] * v[None, :]).to(q_ptr.dtype.element_ty).to(tl.float32)
            o = tl.sum(S * q[:, None], axis=0) * scale
        else:
            S = S + k[:, None] * v[None, :]
            o = tl.sum(S * q[:, None], axis=0)
            if MISTAKE != "no_scale":
                o = o * scale
        tl.store(o_ptr + row * V + ov, o.to(o_ptr.dtype.element_ty))
    if MISTAKE != "no_final_state":
        tl.store(sT_ptr + state, S.to(tl.float32))


def recurrent_wrong(name: str, mistake: str = "", one_value_block: bool = False, split_k: int = 1
                    ) -> Callable[..., Any]:
    """fused_recurrent_linear_attention(q, k, v, scale=None, initial_state=None) launching _recurrent_kernel
    with `mistake` (or a grid of one value block, or `split_k` programs over K that all store one o block)."""

    def wrong(q, k, v, scale=None, initial_state=None):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        B, T, H, K = q.shape
        V = v.shape[-1]
        o = torch.zeros_like(v)
        final = torch.zeros(B, H, K, V, device=q.device, dtype=torch.float32)
        s0 = final if initial_state is None else initial_state.contiguous()
        grid = (1 if one_value_block else triton.cdiv(V, BLOCK_V), B * H, split_k)
        _recurrent_kernel[grid](q, k, v, o, s0, final, T, resolve_scale(scale, K), H=H, K=K, V=V, BK=K // split_k,
                                BV=BLOCK_V, USE_S0=initial_state is not None, MISTAKE=mistake)
        return o, final

    wrong.__name__ = name
    return wrong


def _expected_recurrent(inputs: dict[str, Any], case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    from course_utils.refs import linear_attn

    return linear_attn.linear_attention(inputs["q"], inputs["k"], inputs["v"], scale=inputs.get("scale"),
                                        initial_state=inputs.get("initial_state"), mode="recurrent")


def _recurrent_output(case: Case) -> TupleOut:
    return TupleOut("(o, final_state)", (TensorOut("o", VO_LAYOUT),
                                         TensorOut("final_state", STATE_LAYOUT, state=True)))


RECURRENT_KERNEL = register(Exercise(
    id="6.4",
    fn_name="fused_recurrent_linear_attention",
    signature="fused_recurrent_linear_attention(q, k, v, scale=None, initial_state=None) -> (o, final_state)",
    cases=lambda device, dtypes: case_list({"K": K_DIM, "V": V_DIM}, [
        {"B": 1, "T": 24, "H": 2},
        {"B": 2, "T": 33, "H": 2, "initial_state": True},
        {"B": 1, "T": 21, "H": 3, "scale": 0.3, "initial_state": True, "noncontiguous": True},
    ], 641, dtypes, half=[{"B": 1, "T": 24, "H": 2, "initial_state": True}, {"B": 1, "T": 256, "H": 1}]),
    make_inputs=_pick("q", "k", "v"),
    expected=_expected_recurrent,
    output=_recurrent_output,
    positional=("q", "k", "v"),
    input_layouts={"q": QK_LAYOUT, "k": QK_LAYOUT, "v": VO_LAYOUT, "initial_state": STATE_LAYOUT},
    extra_checks=KERNEL_CHECKS,
    mistakes=(
        Mistake("output read before the state update", recurrent_wrong("exclusive", "exclusive"),
                "state updated after reading the output? The state is inclusive: S += k_t v_t^T first, "
                "then o_t = scale * q_t^T S (a token attends to itself)"),
        Mistake("state not carried between steps", recurrent_wrong("no_carry", "no_carry"),
                "the state is not carried from step to step: S = S + k_t v_t^T keeps every earlier token "
                "(only o at t = 0 is right)"),
        Mistake("initial_state ignored", recurrent_wrong("ignores_initial_state", "ignores_initial_state"),
                "ignores initial_state: load this program's [K, BV] block of it into S before the loop"),
        Mistake("final state never stored", recurrent_wrong("no_final_state", "no_final_state"),
                says=("final_state", "all zeros")),
        Mistake("one value block only (grid (1, B*H))", recurrent_wrong("one_value_block", one_value_block=True),
                "only the first BV value channels are right: the grid needs triton.cdiv(V, BV) value blocks, "
                "one program per (value block, batch*head)"),
        Mistake("loop bound off by one (range(T - 1))", recurrent_wrong("loop_off_by_one", "loop_off_by_one"),
                "only the last step is wrong (and the final state misses it): the loop is off by one — "
                "range(0, T) visits every step"),
        Mistake("race: key channels split across programs that store the same o block",
                recurrent_wrong("race_split_k", split_k=2), RACE_HINT),
        Mistake("scale not applied", recurrent_wrong("no_scale", "no_scale"),
                "missing scale? o_t = scale * q_t^T S_t with scale = K**-0.5 when scale=None"),
        Mistake("state rounded to the inputs' dtype every step (bf16 inputs)",
                recurrent_wrong("state_in_input_dtype", "state_in_input_dtype"), INPUT_DTYPE_STATE_HINT,
                says=STATE_DTYPE_SAYS, options=BF16),
        Mistake("state accumulated in float16", recurrent_wrong("fp16_state", "fp16_state"),
                "the state loses precision: keep S in float32 (tl.zeros(..., dtype=tl.float32)) and cast only "
                "what you store; fla's kernels accumulate in float32 too"),
    ),
))


# ================================================================================================ 6.5


@triton.jit
def _chunk_states_kernel(k_ptr, v_ptr, h_ptr, s0_ptr, sT_ptr, T, NT, H: tl.constexpr, K: tl.constexpr,
                         V: tl.constexpr, BT: tl.constexpr, BV: tl.constexpr, USE_S0: tl.constexpr,
                         MISTAKE: tl.constexpr):
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    b, h = i_bh // H, i_bh % H
    ok, ov = tl.arange(0, K), i_v * BV + tl.arange(0, BV)
    if MISTAKE == "race_v_offset":
        ov = tl.arange(0, BV)  # every value-block program reads and writes value block 0
    block = ok[:, None] * V + ov[None, :]  # this program's [K, BV] block of a [K, V] state
    S = tl.zeros([K, BV], dtype=tl.float32)
    if USE_S0:
        if MISTAKE != "ignores_initial_state":
            S += tl.load(s0_ptr + (b * H + h) * K * V + block).to(tl.float32)
    for n in range(0, NT):
        t = n * BT + tl.arange(0, BT)
        mask = (t < T)[:, None]
        row = (b * T + t) * H + h
        kc = tl.load(k_ptr + row[:, None] * K + ok[None, :], mask=mask, other=0.0).to(tl.float32)  # [BT, K]
        vc = tl.load(v_ptr + row[:, None] * V + ov[None, :], mask=mask, other=0.0).to(tl.float32)  # [BT, BV]
        update = tl.dot(tl.trans(kc), vc, input_precision="ieee")  # [K, BV]
        state_n = h_ptr + ((b * H + h) * NT + n) * K * V + block
        if MISTAKE == "states_after_update":
            S += update
            tl.store(state_n, S)
        else:
            tl.store(state_n, S)  # the state entering chunk n
            if MISTAKE == "no_carry":
                S = update
            elif MISTAKE == "bf16_state":
                S = (S + update).to(tl.bfloat16).to(tl.float32)
            elif MISTAKE == "state_in_input_dtype":
                S = (S + update).to(k_ptr.dtype.element_ty).to(tl.float32)
            else:
                S += update
    tl.store(sT_ptr + (b * H + h) * K * V + block, S)


@triton.jit
def _chunk_output_kernel(q_ptr, k_ptr, v_ptr, h_ptr, o_ptr, T, NT, scale, H: tl.constexpr, K: tl.constexpr,
                         V: tl.constexpr, BT: tl.constexpr, MISTAKE: tl.constexpr):
    i_n, i_bh = tl.program_id(0), tl.program_id(1)
    b, h = i_bh // H, i_bh % H
    ok, ov = tl.arange(0, K), tl.arange(0, V)
    t = i_n * BT + tl.arange(0, BT)
    mask = (t < T)[:, None]
    if MISTAKE == "mask_off_by_one":
        mask = (t < T - 1)[:, None]
    row = (b * T + t) * H + h
    q = tl.load(q_ptr + row[:, None] * K + ok[None, :], mask=mask, other=0.0).to(tl.float32)  # [BT, K]
    kc = tl.load(k_ptr + row[:, None] * K + ok[None, :], mask=mask, other=0.0).to(tl.float32)  # [BT, K]
    vc = tl.load(v_ptr + row[:, None] * V + ov[None, :], mask=mask, other=0.0).to(tl.float32)  # [BT, V]
    S = tl.load(h_ptr + ((b * H + h) * NT + i_n) * K * V + ok[:, None] * V + ov[None, :])  # [K, V]
    inter = tl.dot(q, S, input_precision="ieee")  # [BT, V]: what the chunks before left in the state
    A = tl.dot(q, tl.trans(kc), input_precision="ieee")  # [BT, BT]
    i, j = tl.arange(0, BT)[:, None], tl.arange(0, BT)[None, :]
    if MISTAKE == "strict_mask":
        A = tl.where(i > j, A, 0.0)
    elif MISTAKE != "no_causal_mask":
        A = tl.where(i >= j, A, 0.0)
    intra = tl.dot(A, vc, input_precision="ieee")  # [BT, V]
    if MISTAKE == "intra_unscaled":
        o = inter * scale + intra
    else:
        o = (inter + intra) * scale
    tl.store(o_ptr + row[:, None] * V + ov[None, :], o.to(o_ptr.dtype.element_ty), mask=mask)


def chunked_wrong(name: str, states: str = "", output: str = "", grid_floor: bool = False) -> Callable[..., Any]:
    """chunked_linear_attention(q, k, v, scale=None, initial_state=None, chunk_size=16) launching the two
    kernels, the chunk states' with mistake `states`, the output's with `output` (or the grid T // chunk_size)."""

    def wrong(q, k, v, scale=None, initial_state=None, chunk_size=16):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        B, T, H, K = q.shape
        V = v.shape[-1]
        NT = triton.cdiv(T, chunk_size)
        h = torch.zeros(B, H, NT, K, V, device=q.device, dtype=torch.float32)  # the state entering each chunk
        final = torch.zeros(B, H, K, V, device=q.device, dtype=torch.float32)
        o = torch.zeros_like(v)
        s0 = final if initial_state is None else initial_state.contiguous()
        _chunk_states_kernel[(triton.cdiv(V, BLOCK_V), B * H)](
            k, v, h, s0, final, T, NT, H=H, K=K, V=V, BT=chunk_size, BV=BLOCK_V,
            USE_S0=initial_state is not None, MISTAKE=states)
        grid = (T // chunk_size if grid_floor else NT, B * H)
        _chunk_output_kernel[grid](q, k, v, h, o, T, NT, resolve_scale(scale, K), H=H, K=K, V=V,
                                   BT=chunk_size, MISTAKE=output)
        return o, final

    wrong.__name__ = name
    return wrong


def chunked_states_in_pytorch(q, k, v, scale=None, initial_state=None, chunk_size=16):
    """A partial-PyTorch launcher: the chunk states from torch ops (a cumulative sum of K_[n]^T V_[n]), only the
    outputs from a kernel. Right answer, wrong exercise: the kernel check rejects it."""
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    B, T, H, K = q.shape
    V = v.shape[-1]
    NT = triton.cdiv(T, chunk_size)
    pad = NT * chunk_size - T
    kc = torch.nn.functional.pad(k.float(), (0, 0, 0, 0, 0, pad)).view(B, NT, chunk_size, H, K)
    vc = torch.nn.functional.pad(v.float(), (0, 0, 0, 0, 0, pad)).view(B, NT, chunk_size, H, V)
    updates = torch.einsum("bnthk,bnthv->bhnkv", kc, vc)
    S0 = torch.zeros(B, H, 1, K, V, device=q.device) if initial_state is None else initial_state.float()[:, :, None]
    h = (S0 + torch.cat([torch.zeros_like(updates[:, :, :1]), updates.cumsum(2)[:, :, :-1]], 2)).contiguous()
    o = torch.zeros_like(v)
    _chunk_output_kernel[(NT, B * H)](q, k, v, h, o, T, NT, resolve_scale(scale, K), H=H, K=K, V=V, BT=chunk_size,
                                      MISTAKE="")
    return o, h[:, :, -1] + updates[:, :, -1]


def _expected_chunked(inputs: dict[str, Any], case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    from course_utils.refs import linear_attn

    return linear_attn.linear_attention(inputs["q"], inputs["k"], inputs["v"], scale=inputs.get("scale"),
                                        initial_state=inputs.get("initial_state"), mode="chunk")


CHUNKED_KERNELS = register(dataclasses.replace(
    RECURRENT_KERNEL,
    id="6.5",
    fn_name="chunked_linear_attention",
    signature=("chunked_linear_attention(q, k, v, scale=None, initial_state=None, chunk_size=16) "
               "-> (o, final_state)"),
    cases=lambda device, dtypes: case_list({"K": K_DIM, "V": V_DIM}, [
        {"B": 1, "T": 32, "H": 2, "chunk_size": 16},  # two whole chunks
        {"B": 2, "T": 45, "H": 2, "chunk_size": 16, "initial_state": True},  # the last chunk holds 13
        {"B": 1, "T": 40, "H": 3, "chunk_size": 32, "scale": 0.3, "initial_state": True, "noncontiguous": True},
    ], 651, dtypes, half=[{"B": 1, "T": 40, "H": 2, "chunk_size": 16, "initial_state": True},
                          {"B": 1, "T": 1024, "H": 1, "chunk_size": 16}]),  # long: rounding adds up
    make_inputs=_pick("q", "k", "v"),
    expected=_expected_chunked,
    mistakes=(
        Mistake("chunk states not carried (each holds only the chunk before)", chunked_wrong("no_carry", "no_carry"),
                "the state is not carried from chunk to chunk: S_[n+1] = S_[n] + K_[n]^T V_[n] keeps every "
                "earlier chunk (the first two chunks are right)"),
        Mistake("chunk states stored after their own chunk's update",
                chunked_wrong("states_after_update", "states_after_update"),
                "chunk n's state already holds chunk n: store S_[n] (what the chunks before left) before adding "
                "K_[n]^T V_[n] — the intra-chunk block adds chunk n's own tokens"),
        Mistake("initial_state ignored", chunked_wrong("ignores_initial_state", "ignores_initial_state"),
                "ignores initial_state: the first chunk's state is initial_state (zeros only when None)"),
        Mistake("grid T // chunk_size (ragged last chunk never runs)", chunked_wrong("grid_floor", grid_floor=True),
                _grid_note("chunk")),
        Mistake("time mask off by one (t < T - 1)", chunked_wrong("mask_off_by_one", output="mask_off_by_one"),
                "only the last time step is wrong: the mask is off by one — t < T keeps every step"),
        Mistake("intra-chunk mask strictly below the diagonal", chunked_wrong("strict_mask", output="strict_mask"),
                "the intra-chunk block misses the diagonal: token t attends to itself (s <= t: i >= j)"),
        Mistake("no causal mask inside the chunk", chunked_wrong("no_causal_mask", output="no_causal_mask"),
                "non-causal inside the chunk: mask (Q K^T) to s <= t before multiplying by V"),
        Mistake("scale missing on the intra-chunk part", chunked_wrong("intra_unscaled", output="intra_unscaled"),
                "the intra-chunk part misses the scale: o = scale * (Q S_[n] + tril(Q K^T) V)"),
        Mistake("race: every value-block program writes value block 0 of the states",
                chunked_wrong("race_v_offset", "race_v_offset"), RACE_STATES_HINT),
        Mistake("chunk states accumulated in bfloat16", chunked_wrong("bf16_state", "bf16_state"), BF16_STATE_HINT),
        Mistake("chunk states rounded to the inputs' dtype every chunk (bf16 inputs)",
                chunked_wrong("state_in_input_dtype", "state_in_input_dtype"), INPUT_DTYPE_STATE_HINT,
                says=STATE_DTYPE_SAYS, options=BF16),
        Mistake("chunk states computed in PyTorch, only the outputs in a kernel", chunked_states_in_pytorch,
                says=("kernel check", "in PyTorch")),
    ),
))
