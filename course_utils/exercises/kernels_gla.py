"""Family: Triton kernels for gated linear attention, GLA (Lab 06, second half). Like course_utils.exercises.kernels,
every exercise is a launcher that allocates the outputs and launches the student's `@triton.jit` kernels, and runs
on a CPU in Triton's interpreter.

    6.6  the fused recurrent GLA forward   fused_recurrent_gla(q, k, v, g, scale=None, initial_state=None,
                                                               output_final_state=True) -> (o, final_state)
    6.7  the chunked GLA forward as two    chunk_gla(q, k, v, g, scale=None, initial_state=None,
         kernels (chunk states, outputs)             output_final_state=True, chunk_size=16) -> (o, final_state)

    S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T      o_t = scale * q_t^T S_t      (GLA, Yang et al. 2024, §4)

Expected values from course_utils.refs.gla (fla's `fused_recurrent_gla` / `chunk_gla` on a GPU, its
`naive_recurrent_gla` on a CPU). Shapes follow course_utils.conventions: q, k, g [B, T, H, K] (g log gates <= 0),
v [B, T, H, V], states [B, H, K, V] float32.

Every mistake is a real kernel (a `MISTAKE` constexpr switching one line), launched by a launcher of the exercise's
signature, except one launcher that computes the chunk states in PyTorch and only the outputs with a kernel: the
kernel check (course_utils.grading.how.launches_a_kernel) rejects it. A race — two programs storing to one output
block — is shown wrong deterministically by the interpreter, which runs the programs one after another, so the
last writer's partial result is what stays; on a GPU the result would change from run to run.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from course_utils.conventions import QK_LAYOUT, STATE_LAYOUT, VO_LAYOUT, resolve_scale
from course_utils.exercises.cases import bthd, case_list, generator, randn
from course_utils.exercises.kernels import (
    BF16_STATE_HINT,
    INPUT_DTYPE_STATE_HINT,
    KERNEL_CHECKS,
    RACE_HINT,
    RACE_STATES_HINT,
    STATE_DTYPE_SAYS,
    _grid_note,
)
from course_utils.grading import Case, Exercise, Mistake, TensorOut, TupleOut, register
from course_utils.grading.generic import BF16

K_DIM, V_DIM = 16, 32  # as in kernels.py: powers of two >= 16, K != V so a transposed state shows
BLOCK_V = 16  # value block of the wrong launchers: V_DIM = 32 makes two programs per (batch, head)
SUB_BLOCK = 16  # 6.7's sub-blocks of a chunk (secondary chunking)


# ================================================================================================ inputs


def gla_inputs(case: Case, device: torch.device) -> dict[str, Any]:
    """q, k [B,T,H,K], v [B,T,H,V], g [B,T,H,K] (log gates <= 0; "strong" cases decay by e^-2..e^-8 a step),
    initial_state [B,H,K,V] when the case asks for one; scale / chunk_size when the case sets them."""
    gen = generator(case)
    B, T, H = case["B"], case["T"], case["H"]
    q, k = bthd(gen, case, K_DIM, device), bthd(gen, case, K_DIM, device)
    v = bthd(gen, case, V_DIM, device)
    if case.get("strong_gates"):
        g = -(2.0 + 6.0 * torch.rand(B, T, H, K_DIM, generator=gen))  # over 16 steps: exp(-32) .. exp(-128)
    elif case.get("slow_gates"):
        g = -0.002 * torch.rand(B, T, H, K_DIM, generator=gen)  # half-lives of 350 steps and more
    else:
        g = F.logsigmoid(randn(gen, B, T, H, K_DIM) + 2.0) / 2  # mostly mild: decays near 0.95 a step
    g = g.to(device, case.dtype)
    if case.get("noncontiguous"):
        g = g.transpose(1, 2).contiguous().transpose(1, 2)
    inputs: dict[str, Any] = {"q": q, "k": k, "v": v, "g": g}
    for name in ("scale", "chunk_size"):
        if name in case.params:
            inputs[name] = case[name]
    if case.get("initial_state"):
        inputs["initial_state"] = (0.3 * randn(gen, B, H, K_DIM, V_DIM)).to(device, torch.float32)
    return inputs


def _gla_output(case: Case) -> TupleOut:
    return TupleOut("(o, final_state)", (TensorOut("o", VO_LAYOUT), TensorOut("final_state", STATE_LAYOUT, state=True)))


def _expected(mode: str) -> Callable[[dict[str, Any], Case], Any]:
    def expected(inputs: dict[str, Any], case: Case) -> tuple[torch.Tensor, torch.Tensor]:
        from course_utils.refs.gla import gla

        return gla(inputs["q"], inputs["k"], inputs["v"], inputs["g"], scale=inputs.get("scale"),
                       initial_state=inputs.get("initial_state"), mode=mode)

    expected.__name__ = f"expected_gla_{mode}"
    return expected




# ================================================================================================ 6.6


@triton.jit
def _gla_recurrent_kernel(q_ptr, k_ptr, v_ptr, g_ptr, o_ptr, s0_ptr, sT_ptr, T, scale, H: tl.constexpr,
                          K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                          USE_S0: tl.constexpr, MISTAKE: tl.constexpr):
    i_v, i_k, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = i_bh // H, i_bh % H
    ok, ov = i_k * BK + tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    state = (b * H + h) * K * V + ok[:, None] * V + ov[None, :]
    S = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_S0:
        if MISTAKE != "ignores_initial_state":
            S += tl.load(s0_ptr + state).to(tl.float32)
    steps = T
    if MISTAKE == "loop_off_by_one":
        steps = T - 1
    for t in range(0, steps):
        row = (b * T + t) * H + h
        q = tl.load(q_ptr + row * K + ok).to(tl.float32)
        k = tl.load(k_ptr + row * K + ok).to(tl.float32)
        v = tl.load(v_ptr + row * V + ov).to(tl.float32)
        g = tl.load(g_ptr + row * K + ok).to(tl.float32)
        if MISTAKE == "next_gate":  # a prefetch gone wrong: step t decays with g_(t+1)
            g = tl.load(g_ptr + (row + H) * K + ok, mask=(ok >= 0) & (t + 1 < T), other=0.0).to(tl.float32)
        S_before = S * tl.exp(g)[:, None]  # the decayed state before this step's write
        if MISTAKE == "gate_after_update":
            S = (S + k[:, None] * v[None, :]) * tl.exp(g)[:, None]
        elif MISTAKE == "gate_on_values":  # BK == BV in this launcher, so the shapes agree
            S = S * tl.exp(g)[None, :] + k[:, None] * v[None, :]
        elif MISTAKE == "no_exp":
            S = S * g[:, None] + k[:, None] * v[None, :]
        elif MISTAKE == "no_carry":
            S = k[:, None] * v[None, :]
        elif MISTAKE == "bf16_state":
            S = (S * tl.exp(g)[:, None] + k[:, None] * v[None, :]).to(tl.bfloat16).to(tl.float32)
        elif MISTAKE == "state_in_input_dtype":
            S = (S * tl.exp(g)[:, None] + k[:, None] * v[None, :]).to(q_ptr.dtype.element_ty).to(tl.float32)
        else:
            S = S * tl.exp(g)[:, None] + k[:, None] * v[None, :]
        o = tl.sum(S * q[:, None], axis=0) * scale
        if MISTAKE == "exclusive":
            o = tl.sum(S_before * q[:, None], axis=0) * scale
        tl.store(o_ptr + row * V + ov, o.to(o_ptr.dtype.element_ty))
    if MISTAKE != "no_final_state":
        tl.store(sT_ptr + state, S)


def gla_recurrent_wrong(name: str, mistake: str = "", one_value_block: bool = False, split_k: int = 1
                        ) -> Callable[..., Any]:
    """fused_recurrent_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=True) launching
    _gla_recurrent_kernel with `mistake` (or a grid of one value block, or `split_k` programs over K that all
    store to the same output block)."""

    def wrong(q, k, v, g, scale=None, initial_state=None, output_final_state=True):
        q, k, v, g = q.contiguous(), k.contiguous(), v.contiguous(), g.contiguous()
        B, T, H, K = q.shape
        V = v.shape[-1]
        o = torch.zeros_like(v)
        final = torch.zeros(B, H, K, V, device=q.device, dtype=torch.float32)
        s0 = final if initial_state is None else initial_state.contiguous()
        grid = (1 if one_value_block else triton.cdiv(V, BLOCK_V), split_k, B * H)
        _gla_recurrent_kernel[grid](q, k, v, g, o, s0, final, T, resolve_scale(scale, K), H=H, K=K, V=V,
                                    BK=K // split_k, BV=BLOCK_V, USE_S0=initial_state is not None, MISTAKE=mistake)
        return o, final

    wrong.__name__ = name
    return wrong


GLA_RECURRENT = register(Exercise(
    id="6.6",
    fn_name="fused_recurrent_gla",
    signature=("fused_recurrent_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=True) "
               "-> (o, final_state)"),
    cases=lambda device, dtypes: case_list({"K": K_DIM, "V": V_DIM}, [
        {"B": 1, "T": 24, "H": 2},
        {"B": 2, "T": 33, "H": 2, "initial_state": True},
        {"B": 1, "T": 21, "H": 3, "scale": 0.3, "initial_state": True, "noncontiguous": True},
        {"B": 1, "T": 20, "H": 2, "strong_gates": True, "initial_state": True},
    ], 661, dtypes, half=[{"B": 1, "T": 24, "H": 2, "initial_state": True},
                          {"B": 1, "T": 256, "H": 1, "slow_gates": True}]),  # long memory: rounding adds up
    make_inputs=gla_inputs,
    expected=_expected("recurrent"),
    output=_gla_output,
    positional=("q", "k", "v", "g"),
    input_layouts={"q": QK_LAYOUT, "k": QK_LAYOUT, "v": VO_LAYOUT, "g": QK_LAYOUT, "initial_state": STATE_LAYOUT},
    extra_checks=KERNEL_CHECKS,
    mistakes=(
        Mistake("gate applied after the write (decays k_t v_t^T too)",
                gla_recurrent_wrong("gate_after_update", "gate_after_update"),
                "the current token is decayed too: decay the old state first, then add k_t v_t^T — "
                "S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T"),
        Mistake("gate applied along the value axis", gla_recurrent_wrong("gate_on_values", "gate_on_values"),
                "the gate decays the wrong axis: g_t has one entry per key channel, so it scales the rows of "
                "the [K, BV] state, exp(g)[:, None] * S"),
        Mistake("multiplies by g, not exp(g)", gla_recurrent_wrong("no_exp", "no_exp"),
                "g is a log gate (g <= 0): the decay is exp(g) — S * tl.exp(g)[:, None]"),
        Mistake("state not carried between steps", gla_recurrent_wrong("no_carry", "no_carry"),
                "the state is not carried from step to step: S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T keeps the "
                "decayed past (only o at t = 0 is right)"),
        Mistake("initial_state ignored", gla_recurrent_wrong("ignores_initial_state", "ignores_initial_state"),
                "ignores initial_state: load this program's block of it into S before the loop"),
        Mistake("final state never stored", gla_recurrent_wrong("no_final_state", "no_final_state"),
                says=("final_state", "all zeros")),
        Mistake("output read before the state update", gla_recurrent_wrong("exclusive", "exclusive"),
                "o_t is read from the state before k_t v_t^T is added: the read-out is inclusive, "
                "o_t = scale * q_t^T S_t with S_t already holding step t"),
        Mistake("step t decayed with the next step's gate (a prefetch gone wrong)",
                gla_recurrent_wrong("next_gate", "next_gate"),
                "step t decays the state with g_(t+1): with a prefetch, compute step t with the q, k, v, g loaded for "
                "step t and only then swap in the prefetched ones — S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T"),
        Mistake("loop bound off by one (range(T - 1))", gla_recurrent_wrong("loop_off_by_one", "loop_off_by_one"),
                "only the last step is wrong (and the final state misses it): the loop is off by one — "
                "range(0, T) visits every step"),
        Mistake("one value block only (grid (1, B*H))", gla_recurrent_wrong("one_value_block", one_value_block=True),
                "only the first BV value channels are right: the grid needs triton.cdiv(V, BV) value blocks, "
                "one program per (value block, batch*head)"),
        Mistake("race: key channels split across programs that store the same o block",
                gla_recurrent_wrong("race_split_k", split_k=2), RACE_HINT),
        Mistake("state accumulated in bfloat16", gla_recurrent_wrong("bf16_state", "bf16_state"), BF16_STATE_HINT),
        Mistake("state rounded to the inputs' dtype every step (bf16 inputs)",
                gla_recurrent_wrong("state_in_input_dtype", "state_in_input_dtype"), INPUT_DTYPE_STATE_HINT,
                says=STATE_DTYPE_SAYS, options=BF16),
    ),
))


# ================================================================================================ 6.7


@triton.jit
def _gla_states_kernel(k_ptr, v_ptr, g_ptr, h_ptr, s0_ptr, sT_ptr, T, NT, H: tl.constexpr, K: tl.constexpr,
                       V: tl.constexpr, BT: tl.constexpr, BV: tl.constexpr, USE_S0: tl.constexpr,
                       MISTAKE: tl.constexpr):
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    b, h = i_bh // H, i_bh % H
    ok, ov = tl.arange(0, K), i_v * BV + tl.arange(0, BV)
    if MISTAKE == "race_v_offset":
        ov = tl.arange(0, BV)  # every value-block program reads and writes block 0
    block = ok[:, None] * V + ov[None, :]
    S = tl.zeros([K, BV], dtype=tl.float32)
    if USE_S0:
        if MISTAKE != "ignores_initial_state":
            S += tl.load(s0_ptr + (b * H + h) * K * V + block).to(tl.float32)
    for n in range(0, NT):
        t = n * BT + tl.arange(0, BT)
        mask = (t < T)[:, None]
        row = (b * T + t) * H + h
        k = tl.load(k_ptr + row[:, None] * K + ok[None, :], mask=mask, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + row[:, None] * V + ov[None, :], mask=mask, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + row[:, None] * K + ok[None, :], mask=mask, other=0.0).to(tl.float32)
        G = tl.cumsum(g, axis=0)
        G_last = tl.sum(g, axis=0)
        k_dec = k * tl.exp(G_last[None, :] - G)
        if MISTAKE == "k_not_decayed":
            k_dec = k
        elif MISTAKE == "k_decayed_from_start":
            k_dec = k * tl.exp(G)
        update = tl.dot(tl.trans(k_dec), v, input_precision="ieee")
        decay = tl.exp(G_last)[:, None]
        if MISTAKE == "no_state_decay":
            decay = 1.0 + 0.0 * decay
        state_n = h_ptr + ((b * H + h) * NT + n) * K * V + block
        if MISTAKE == "states_after_update":
            S = S * decay + update
            tl.store(state_n, S)
        else:
            tl.store(state_n, S)
            if MISTAKE == "no_carry":
                S = update
            elif MISTAKE == "bf16_state":
                S = (S * decay + update).to(tl.bfloat16).to(tl.float32)
            elif MISTAKE == "state_in_input_dtype":
                S = (S * decay + update).to(k_ptr.dtype.element_ty).to(tl.float32)
            else:
                S = S * decay + update
    tl.store(sT_ptr + (b * H + h) * K * V + block, S)


@triton.jit
def _gla_output_kernel(q_ptr, k_ptr, v_ptr, g_ptr, h_ptr, o_ptr, T, NT, scale, H: tl.constexpr, K: tl.constexpr,
                       V: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, MISTAKE: tl.constexpr):
    i_n, i_bh = tl.program_id(0), tl.program_id(1)
    b, h = i_bh // H, i_bh % H
    ok, ov = tl.arange(0, K), tl.arange(0, V)
    S = tl.load(h_ptr + ((b * H + h) * NT + i_n) * K * V + ok[:, None] * V + ov[None, :])
    rows, cols = tl.arange(0, BC)[:, None], tl.arange(0, BC)[None, :]
    prefix = tl.zeros([K], dtype=tl.float32)
    for i in tl.static_range(BT // BC):
        t = i_n * BT + i * BC + tl.arange(0, BC)
        mask = (t < T)[:, None]
        if MISTAKE == "mask_off_by_one":
            mask = (t < T - 1)[:, None]
        row = (b * T + t) * H + h
        q = tl.load(q_ptr + row[:, None] * K + ok[None, :], mask=mask, other=0.0).to(tl.float32)
        k = tl.load(k_ptr + row[:, None] * K + ok[None, :], mask=mask, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + row[:, None] * V + ov[None, :], mask=mask, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + row[:, None] * K + ok[None, :], mask=mask, other=0.0).to(tl.float32)
        Gi = tl.cumsum(g, axis=0)
        q_inter = q * tl.exp(prefix[None, :] + Gi)
        if MISTAKE == "inter_not_gated":
            q_inter = q
        elif MISTAKE == "inter_from_sub_block":
            q_inter = q * tl.exp(Gi)
        o = tl.dot(q_inter, S, input_precision="ieee")
        q_ref = q * tl.exp(Gi)
        if MISTAKE == "unstable":  # one reference for the whole chunk, its start: exp(G_t) * exp(-G_s)
            q_ref = q * tl.exp(prefix[None, :] + Gi)
        prefix_j = tl.zeros([K], dtype=tl.float32)
        for j in tl.static_range(i):
            tj = i_n * BT + j * BC + tl.arange(0, BC)
            mj = (tj < T)[:, None]
            row_j = (b * T + tj) * H + h
            kj = tl.load(k_ptr + row_j[:, None] * K + ok[None, :], mask=mj, other=0.0).to(tl.float32)
            vj = tl.load(v_ptr + row_j[:, None] * V + ov[None, :], mask=mj, other=0.0).to(tl.float32)
            gj = tl.load(g_ptr + row_j[:, None] * K + ok[None, :], mask=mj, other=0.0).to(tl.float32)
            Gj = prefix_j[None, :] + tl.cumsum(gj, axis=0)
            prefix_j += tl.sum(gj, axis=0)
            k_ref = kj * tl.exp(prefix[None, :] - Gj)
            if MISTAKE == "earlier_keys_not_decayed":
                k_ref = kj
            if MISTAKE == "unstable":
                k_ref = kj * tl.exp(-Gj)
            A = tl.dot(q_ref, tl.trans(k_ref), input_precision="ieee")
            o += tl.dot(A, vj, input_precision="ieee")
        if MISTAKE == "unstable":
            A = tl.dot(q_ref, tl.trans(k * tl.exp(-(prefix[None, :] + Gi))), input_precision="ieee")
        else:
            decay = tl.exp(tl.minimum(Gi[:, None, :] - Gi[None, :, :], 0.0))
            A = tl.sum(q[:, None, :] * k[None, :, :] * decay, axis=2)
        if MISTAKE == "strict_mask":
            A = tl.where(rows > cols, A, 0.0)
        elif MISTAKE != "no_causal_mask":
            A = tl.where(rows >= cols, A, 0.0)
        o += tl.dot(A, v, input_precision="ieee")
        if MISTAKE == "intra_unscaled":
            o = tl.dot(q_inter, S, input_precision="ieee") * scale + (o - tl.dot(q_inter, S, input_precision="ieee"))
        else:
            o = o * scale
        tl.store(o_ptr + row[:, None] * V + ov[None, :], o.to(o_ptr.dtype.element_ty), mask=mask)
        if MISTAKE != "prefix_not_advanced":
            prefix += tl.sum(g, axis=0)


def chunk_gla_wrong(name: str, states: str = "", output: str = "", grid_floor: bool = False,
                    nt_floor: bool = False) -> Callable[..., Any]:
    """chunk_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=True, chunk_size=16) launching the
    two kernels, the chunk states' with mistake `states`, the output's with `output`; or the output grid
    T // chunk_size (`grid_floor`), or the states kernel walking only T // chunk_size chunks (`nt_floor`)."""

    def wrong(q, k, v, g, scale=None, initial_state=None, output_final_state=True, chunk_size=16):
        q, k, v, g = q.contiguous(), k.contiguous(), v.contiguous(), g.contiguous()
        B, T, H, K = q.shape
        V = v.shape[-1]
        NT = triton.cdiv(T, chunk_size)
        h = torch.zeros(B, H, NT, K, V, device=q.device, dtype=torch.float32)
        final = torch.zeros(B, H, K, V, device=q.device, dtype=torch.float32)
        o = torch.zeros_like(v)
        s0 = final if initial_state is None else initial_state.contiguous()
        _gla_states_kernel[(triton.cdiv(V, BLOCK_V), B * H)](
            k, v, g, h, s0, final, T, T // chunk_size if nt_floor else NT, H=H, K=K, V=V, BT=chunk_size,
            BV=BLOCK_V, USE_S0=initial_state is not None, MISTAKE=states)
        grid = (T // chunk_size if grid_floor else NT, B * H)
        _gla_output_kernel[grid](q, k, v, g, h, o, T, NT, resolve_scale(scale, K), H=H, K=K, V=V, BT=chunk_size,
                                 BC=min(SUB_BLOCK, chunk_size), MISTAKE=output)
        return o, final

    wrong.__name__ = name
    return wrong


def chunk_gla_states_in_pytorch(q, k, v, g, scale=None, initial_state=None, output_final_state=True, chunk_size=16):
    """A partial-PyTorch launcher: the chunk states from torch ops (cumsum, exp, einsum over the chunks), only
    the outputs from a kernel. Right answer, wrong exercise: the kernel check rejects it."""
    q, k, v, g = q.contiguous(), k.contiguous(), v.contiguous(), g.contiguous()
    B, T, H, K = q.shape
    V = v.shape[-1]
    NT = triton.cdiv(T, chunk_size)
    S = torch.zeros(B, H, K, V, device=q.device) if initial_state is None else initial_state.float()
    states = []
    for n in range(NT):
        kc, vc, gc = (x[:, n * chunk_size:(n + 1) * chunk_size].float() for x in (k, v, g))
        G = gc.cumsum(1)
        states.append(S)
        S = S * G[:, -1, :, :, None].exp() + torch.einsum("bthk,bthv->bhkv", kc * (G[:, -1:] - G).exp(), vc)
    h = torch.stack(states, 2).contiguous()  # [B, H, NT, K, V]
    o = torch.zeros_like(v)
    _gla_output_kernel[(NT, B * H)](q, k, v, g, h, o, T, NT, resolve_scale(scale, K), H=H, K=K, V=V, BT=chunk_size,
                                    BC=min(SUB_BLOCK, chunk_size), MISTAKE="")
    return o, S


UNSTABLE_HINT = ("exp(-G) of a cumulative gate overflows when the gates are strong: write exp(G_t - G_s) as a "
                 "product of two factors <= 1 around a reference inside the chunk — sub-blocks, the reference the "
                 "cumulative gate just before the query's sub-block — and take the diagonal sub-block entry by "
                 "entry, exp(G_t - G_s) for s <= t")

CHUNK_GLA = register(dataclasses.replace(
    GLA_RECURRENT,
    id="6.7",
    fn_name="chunk_gla",
    signature=("chunk_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=True, chunk_size=16) "
               "-> (o, final_state)"),
    cases=lambda device, dtypes: case_list({"K": K_DIM, "V": V_DIM}, [
        {"B": 1, "T": 32, "H": 2, "chunk_size": 16},  # two whole chunks
        {"B": 2, "T": 45, "H": 2, "chunk_size": 16, "initial_state": True},  # the last chunk holds 13
        {"B": 1, "T": 40, "H": 3, "chunk_size": 32, "scale": 0.3, "initial_state": True, "noncontiguous": True},
        {"B": 1, "T": 50, "H": 2, "chunk_size": 32, "strong_gates": True, "initial_state": True},
    ], 671, dtypes, half=[{"B": 1, "T": 40, "H": 2, "chunk_size": 32, "initial_state": True},
                          {"B": 1, "T": 1024, "H": 1, "chunk_size": 16, "slow_gates": True}]),
    # fla's fused recurrent kernel, as for 6.6: exact in float32 and compiled in about a second. fla's chunk_gla
    # autotunes for a minute per dtype on first use, and on an H200 (torch 2.11 / triton 3.6) its first call at
    # these small sizes (K=16, V=32) stopped the notebook with "CUDA error: misaligned address". The chunked
    # kernel is compared with fla's chunk_gla at K=V=128 in the lab's GPU section.
    expected=_expected("recurrent"),
    nan_hint=UNSTABLE_HINT,
    mistakes=(
        Mistake("chunk states not carried (each holds only the chunk before)", chunk_gla_wrong("no_carry", "no_carry"),
                "the state is not carried from chunk to chunk: S_[n+1] = diag(exp(G_last)) S_[n] + "
                "(K_[n] * exp(G_last - G))^T V_[n] keeps every earlier chunk, decayed"),
        Mistake("chunk states stored after their own chunk's update",
                chunk_gla_wrong("states_after_update", "states_after_update"),
                "chunk n's state already holds chunk n: store S_[n] (what the chunks before left) before the "
                "update — the intra-chunk part adds chunk n's own tokens"),
        Mistake("state not decayed across a chunk", chunk_gla_wrong("no_state_decay", "no_state_decay"),
                "the state entering a chunk must decay over the whole chunk: S_[n+1] = diag(exp(G_last)) S_[n] + "
                "..., G_last the chunk's summed gate per key channel"),
        Mistake("keys not decayed to the chunk's end", chunk_gla_wrong("k_not_decayed", "k_not_decayed"),
                "each key of the chunk decays from its step to the chunk's last: the update is "
                "(K_[n] * exp(G_last - G))^T V_[n], not K_[n]^T V_[n]"),
        Mistake("keys decayed from the chunk's start, not to its end",
                chunk_gla_wrong("k_decayed_from_start", "k_decayed_from_start"),
                "each key of the chunk decays from its step to the chunk's last, exp(G_last - G), not exp(G): the "
                "update is (K_[n] * exp(G_last - G))^T V_[n]"),
        Mistake("initial_state ignored", chunk_gla_wrong("ignores_initial_state", "ignores_initial_state"),
                "ignores initial_state: the first chunk's state is initial_state (zeros only when None)"),
        Mistake("state accumulated in bfloat16", chunk_gla_wrong("bf16_state", "bf16_state"), BF16_STATE_HINT),
        Mistake("chunk states rounded to the inputs' dtype every chunk (bf16 inputs)",
                chunk_gla_wrong("state_in_input_dtype", "state_in_input_dtype"), INPUT_DTYPE_STATE_HINT,
                says=STATE_DTYPE_SAYS, options=BF16),
        Mistake("race: every value-block program writes value block 0 of the states",
                chunk_gla_wrong("race_v_offset", "race_v_offset"), RACE_STATES_HINT),
        Mistake("states kernel walks T // chunk_size chunks (ragged last chunk left out)",
                chunk_gla_wrong("nt_floor", nt_floor=True),
                "the ragged last chunk is left out of the states: walk NT = triton.cdiv(T, chunk_size) chunks "
                "(its missing rows load as zeros, with gate 0)"),
        Mistake("output grid T // chunk_size (ragged last chunk never runs)", chunk_gla_wrong("grid_floor",
                grid_floor=True), _grid_note("chunk")),
        Mistake("time mask off by one (t < T - 1)", chunk_gla_wrong("mask_off_by_one", output="mask_off_by_one"),
                "only the last time step is wrong: the mask is off by one — t < T keeps every step"),
        Mistake("inter-chunk term not gated", chunk_gla_wrong("inter_not_gated", output="inter_not_gated"),
                "the state entering the chunk decays up to step t: (Q * exp(G)) S_[n], G the chunk-local "
                "cumulative gate, not Q S_[n]"),
        Mistake("inter-chunk term decayed from the sub-block's start, not the chunk's",
                chunk_gla_wrong("inter_from_sub_block", output="inter_from_sub_block"),
                "from the second sub-block on, the state entering the chunk is not decayed enough: it decays from "
                "the chunk's start, exp(P_i + G^(i)) with P_i the gate summed over the sub-blocks before, not "
                "exp(G^(i))"),
        Mistake("sub-block reference P_i never advanced (stays 0)",
                chunk_gla_wrong("prefix_not_advanced", output="prefix_not_advanced"),
                "only the sub-blocks after the first are wrong: P_i, the cumulative gate before sub-block i, must grow "
                "by each sub-block's summed gate as the loop moves on"),
        Mistake("earlier sub-blocks' keys not decayed", chunk_gla_wrong("earlier_keys_not_decayed",
                output="earlier_keys_not_decayed"),
                "from the second sub-block on, the earlier sub-blocks' keys miss their decay: "
                "exp(G_t - G_s) = exp(G_t - P_i) * exp(P_i - G_s), so each key of sub-block j < i is scaled by "
                "exp(P_i - G_s)"),
        Mistake("intra-chunk mask strictly below the diagonal", chunk_gla_wrong("strict_mask", output="strict_mask"),
                "the intra-chunk part misses the diagonal: token t attends to itself (s <= t: rows >= cols)"),
        Mistake("no causal mask inside the diagonal sub-block",
                chunk_gla_wrong("no_causal_mask", output="no_causal_mask"),
                "non-causal inside the chunk: keep A_ts only for s <= t (tl.where(rows >= cols, A, 0))"),
        Mistake("scale missing on the intra-chunk part", chunk_gla_wrong("intra_unscaled", output="intra_unscaled"),
                "the intra-chunk part misses the scale: o = scale * ((Q * exp(G)) S_[n] + A V_[n])"),
        Mistake("exp(G) and exp(-G) from the chunk's start (overflows with strong gates)",
                chunk_gla_wrong("unstable", output="unstable"), says=("not finite", UNSTABLE_HINT)),
        Mistake("chunk states computed in PyTorch, only the outputs in a kernel", chunk_gla_states_in_pytorch,
                says=("kernel check", "in PyTorch")),
    ),
))
