"""Family: Mamba's selective scan (Lab 08; Gu & Dao 2023, §3.2 Algorithm 2, §3.3, §3.4), in mamba-ssm's shapes:
u, delta, z [B, D, L]; A [D, N]; B, C [B, N, L]; D, delta_bias [D]; the state [B, D, N] (course_utils.conventions).

    8.1a selection: Δ, B, C from the input        selection(x, x_proj_weight, dt_proj_weight, dt_proj_bias)
    8.1b discretisation as mamba-ssm does it      discretize(u, delta, A, B) -> (deltaA, deltaB_u)
    8.2  the sequential selective scan            selective_scan(u, delta, A, B, C, D=None, z=None,
                                                                 delta_bias=None, delta_softplus=False)
    8.3a the operator of h_t = a_t h_{t-1} + b_t  combine(a_left, b_left, a_right, b_right) -> (a, b)
    8.3b a log-depth scan of h_t = a_t h_{t-1} + b_t   parallel_scan(a, b) -> h   (along the last dim)
    8.3c the selective scan through 8.3b          selective_scan_parallel(...)   (8.2's signature)
    8.4  the selective scan as a Triton kernel    selective_scan_triton(...)     (8.2's signature)
    8.5a the Mamba block                          mamba_block(x, params)         (mamba_ssm.Mamba's weights)
    8.5b one step of recurrent decoding           ssm_step(state, x, dt, A, B, C, D=None, z=None,
                                                           dt_bias=None, dt_softplus=False)

Expected values: 8.2, 8.3c, 8.4 from course_utils.refs.selective_scan (mamba-ssm's CUDA `selective_scan_fn`
where `make gpu-setup` built it, else its `selective_scan_ref`); 8.5a from mamba-ssm's `Mamba` module loaded with
the same weights (course_utils.refs.ssm.mamba_block); 8.5b from refs.selective_state_update; 8.1a, 8.1b in
PyTorch as mamba-ssm's Mamba.forward and selective_scan_ref write them; 8.3a, 8.3b in float64.

Every mistake is an implementation that makes it: `scan_core` runs the recurrence step by step with the
mistakes asked for (8.2, 8.3c, and the block's scan), `parallel_wrong` the Hillis-Steele scan, `triton_wrong`
launches `_scan_kernel` with one wrong line switched on by its MISTAKE constexpr (a real kernel per mistake),
`block_wrong` the Mamba block, `step_wrong` the decoding step.

Where a half dtype is graded (a GPU), 8.2, 8.3c and 8.4 add a long "slow" case (small Δ, a steady input: see
SLOW_DELTA): the only case where a state kept in bf16/fp16 instead of float32 is off by more than the tolerance.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from course_utils.exercises.cases import case_list, generator, randn
from course_utils.grading import Case, Exercise, Failure, Mistake, TensorOut, Trial, TupleOut, fail, register
from course_utils.grading.generic import BF16
from course_utils.grading.how import TorchCalls, forbid, launches_a_kernel

U_LAYOUT = "BDL"  # u, delta, z, out
BC_LAYOUT = "BNL"  # B, C
STATE_LAYOUT = "BDN"  # the scan's state
DL_LAYOUT = "BDLN"  # deltaA, deltaB_u
PAPER = "Mamba paper §3.2, Algorithm 2"
# The "slow" cases (the half-precision cases that catch a state kept in bf16/fp16): a channel with a long memory
# (Δ A ~ 1e-4 .. 1e-3 a step, as where a trained A is near 0) integrating a sustained signal (u and B ~ 1 ± 0.25).
SLOW_DELTA = (3e-5, 3e-4)  # Δ, log-uniform
SLOW_U = (0.25, 1.0)  # u and B: scale, shift
LAYOUTS = {"u": U_LAYOUT, "delta": U_LAYOUT, "z": U_LAYOUT, "B": BC_LAYOUT, "C": BC_LAYOUT}

# ================================================================================================ inputs


def s4d_real_A(D: int, N: int) -> torch.Tensor:
    """Mamba's initial A [D, N]: A[d, n] = -(n + 1) for every channel (S4D-real; mamba_simple.py)."""
    return -torch.arange(1, N + 1, dtype=torch.float32).repeat(D, 1)


def scan_inputs(case: Case, device: torch.device) -> dict[str, Any]:
    """Seeded scan inputs: u, delta, A, B, C and what the case's flags ask for (skip: D, gate: z, bias:
    delta_bias, softplus: delta_softplus=True). Without softplus delta is already a positive step size."""
    gen = generator(case)
    Bsz, Dm, L, N = case["B"], case["D"], case["L"], case["N"]
    dt = case.dtype

    def bdl(scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
        if case.get("noncontiguous"):  # a [B, L, D] buffer seen as [B, D, L]
            return (scale * randn(gen, Bsz, L, Dm) + shift).to(device, dt).transpose(1, 2)
        return (scale * randn(gen, Bsz, Dm, L) + shift).to(device, dt)

    u = bdl(*SLOW_U) if case.get("slow") else bdl()
    raw = 0.7 * randn(gen, Bsz, Dm, L) - 1.0
    if case.get("softplus"):
        delta = raw
    else:
        delta = F.softplus(raw)  # a step size >= 0, as mamba-ssm takes it without delta_softplus
    if case.get("slow"):  # small steps, as Mamba initialises Δ: the state remembers hundreds of steps
        lo, hi = SLOW_DELTA
        delta = torch.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * torch.rand(Bsz, Dm, L, generator=gen))
    if case.get("noncontiguous"):
        delta = delta.transpose(1, 2).contiguous().transpose(1, 2)
    delta = delta.to(device, dt)
    A = (s4d_real_A(Dm, N) * torch.exp(0.3 * randn(gen, Dm, N))).to(device)  # float32, as mamba-ssm keeps A
    Bm = randn(gen, Bsz, N, L)
    if case.get("slow"):
        Bm = SLOW_U[0] * Bm + SLOW_U[1]
    Bm = Bm.to(device, dt)
    Cm = randn(gen, Bsz, N, L).to(device, dt)
    inputs: dict[str, Any] = {"u": u, "delta": delta, "A": A, "B": Bm, "C": Cm}
    if case.get("skip"):
        inputs["D"] = randn(gen, Dm).to(device)
    if case.get("gate"):
        inputs["z"] = bdl()
    if case.get("bias"):
        bias = 0.5 * randn(gen, Dm) - 0.5 if case.get("softplus") else 0.2 * torch.rand(Dm, generator=gen)
        inputs["delta_bias"] = bias.to(device)
    if case.get("softplus"):
        inputs["delta_softplus"] = True
    return inputs


def scan_output(case: Case) -> TupleOut:
    return TupleOut("(out, last_state)", (TensorOut("out", U_LAYOUT),
                                          TensorOut("last_state", STATE_LAYOUT, state=True)))


def _reference_scan(inputs: dict[str, Any], case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    from course_utils.refs import selective_scan

    return selective_scan(inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"], D=inputs.get("D"),
                          z=inputs.get("z"), delta_bias=inputs.get("delta_bias"),
                          delta_softplus=inputs.get("delta_softplus", False))


# ================================================================================================ hints

OFF_BY_ONE = ("the output reads the state before this step's update: y_t = C_t · h_t with h_t = Ā_t h_{t-1} + "
              "B̄_t u_t already holding u_t (update first, then read; " + PAPER + ")")
NO_SKIP = "missing the D skip: out_t = C_t · h_t + D * u_t (D is a per-channel residual, added before the gate)"
GATE_SIGMOID = ("the gate is SiLU, not a sigmoid: out *= silu(z) = z * sigmoid(z) (Mamba's gate branch, §3.4, "
                "Figure 3)")
NO_GATE = "ignores z: when z is given, out_t is multiplied by silu(z_t)"
SKIP_AFTER_GATE = ("the D skip is added after the gate: it is part of the SSM's output, which the gate multiplies — "
                   "out_t = (C_t · h_t + D u_t) * silu(z_t) (selective_scan_ref)")
NO_SOFTPLUS = ("Δ without softplus: with delta_softplus=True the step size is softplus(delta + delta_bias), "
               "which keeps it positive (§3.2: s_Δ then τ_Δ = softplus)")
SOFTPLUS_TWICE = ("softplus applied twice, or when delta_softplus=False: the step size is softplus(delta + "
                  "delta_bias) exactly once when delta_softplus=True, and delta + delta_bias as it is otherwise")
NO_BIAS = ("missing delta_bias: the step size is delta + delta_bias[d], put through softplus when delta_softplus=True "
           "(the bias is added first, with or without softplus)")
BIAS_AFTER = "delta_bias added after softplus: mamba-ssm adds it first, softplus(delta + delta_bias)"
ZOH_B = ("B̄ by exact zero-order hold, (exp(ΔA) − 1)/A · B: mamba-ssm discretises A exactly but B with the "
         "simpler Euler step, B̄ = Δ B (selective_scan_ref's deltaB_u = Δ B u; state-spaces/mamba issue #114)")
A_NO_DELTA = "Ā = exp(Δ A): the step size multiplies A inside the exponential, not exp(A)"
EULER_A = "Ā = exp(Δ A) exactly, not its first-order approximation 1 + Δ A"
NO_CARRY = ("the state is not carried from step to step: h_t = Ā_t h_{t-1} + B̄_t u_t keeps every earlier input "
            "(only t = 0 is right)")
LAST_STATE = "last_state misses the last step: return h after the update with u_{L-1}"
B_NO_U = "B̄ u: the input enters the state as Δ_t B_t u_t (u multiplies it)"
NAN_HINT = "overflow? Ā = exp(Δ A) <= 1 for A < 0 and Δ >= 0: the state should never grow without bound"
REVERSED = "reversed: the scan runs forward in time, h_t depends on u_s for s <= t only"
STATE_IN_INPUT_DTYPE = ("the state is kept in the inputs' dtype (bfloat16/float16) instead of float32: rounded at "
                        "every step, a slowly decaying state loses its small updates (and an Ā = exp(Δ A) this close "
                        "to 1 rounds to 1). mamba-ssm's scan keeps the state in float32 whatever the inputs' dtype: "
                        "compute in float32 and cast only the output")
STATE_IN_INPUT_DTYPE_KERNEL = ("the state is kept in the inputs' dtype (bfloat16/float16) instead of float32: the "
                               "scanned (Ā, B̄ u) blocks and the state carried from chunk to chunk are rounded, and "
                               "a slowly decaying state loses its small updates. Load with .to(tl.float32), scan "
                               "and carry h in float32, cast only what you store")
# Triton's interpreter computes bfloat16 arithmetic wrongly (NaN; Lab 06 found the same for tl.dot): 8.4's wrong
# kernel, which scans in the inputs' dtype, is tested in float16 (a T4's half dtype), which the interpreter computes
FP16 = {"device": "cpu", "dtypes": [torch.float32, torch.float16]}



def nonfinite_match(f: Failure) -> str | None:
    """An output with NaN or Inf: the hint of the catalogued mistake whose output is non-finite at exactly the same
    entries (a step size that is not positive makes Ā = exp(Δ A) > 1, and the state overflows)."""
    if f.kind != "nan" or not isinstance(f.got, torch.Tensor):
        return None
    from course_utils.grading.diagnosis import mistake_outputs

    bad = ~torch.isfinite(f.got.detach())
    for mistake, values in mistake_outputs(f.trial):
        a = values.get(f.name)
        if isinstance(a, torch.Tensor) and a.shape == bad.shape and torch.equal(~torch.isfinite(a.detach()), bad):
            return mistake.hint_for(f.case)
    return None


# ============================================================================================ the scan, with mistakes


def _step_size(delta: torch.Tensor, delta_bias: torch.Tensor | None, delta_softplus: bool, softplus: str,
               bias: str) -> torch.Tensor:
    """Δ as a mistake computes it (float32). softplus: "right", "none", "twice", "twice_biased" (bias and softplus
    applied once more); bias: "right", "none", "after"."""
    d = delta.float()
    if delta_bias is not None and bias == "right":
        d = d + delta_bias.float()[:, None]
    if delta_softplus and softplus != "none":
        d = F.softplus(d)
    if softplus == "twice":
        d = F.softplus(d)
    if softplus == "twice_biased":  # softplus(delta + bias) once more: the bias and softplus applied twice
        d = F.softplus(d + (0.0 if delta_bias is None else delta_bias.float()[:, None]))
    if delta_bias is not None and bias == "after":
        d = d + delta_bias.float()[:, None]
    return d


def _discretized(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, disc: str = "right"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(deltaA, deltaB_u) [B, D, L, N] in float32. disc: "right", "zoh_b", "a_no_delta", "euler_a", "b_no_u"."""
    dA = torch.einsum("bdl,dn->bdln", delta, A.float())
    deltaA = {"a_no_delta": A.float().exp()[None, :, None, :].expand_as(dA), "euler_a": 1 + dA}.get(disc, dA.exp())
    Bf, uf = B.float(), u.float()
    if disc == "zoh_b":  # (exp(ΔA) - 1) / A · B u
        deltaB_u = torch.einsum("bdln,dn,bnl,bdl->bdln", torch.expm1(dA), 1 / A.float(), Bf, uf)
    elif disc == "b_no_u":
        deltaB_u = torch.einsum("bdl,bnl->bdln", delta, Bf)
    else:
        deltaB_u = torch.einsum("bdl,bnl,bdl->bdln", delta, Bf, uf)
    return deltaA, deltaB_u


Scan = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def scan_core(*, disc: str = "right", softplus: str = "right", bias: str = "right", off_by_one: bool = False,
              skip: bool | str = True, gate: str = "silu", carry: bool = True, last: str = "right",
              reverse: bool = False, state_in_input_dtype: bool = False) -> Scan:
    """selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus) -> (out, last_state) step by step in
    float32, with at most the mistakes asked for.

    disc: see _discretized; softplus, bias: see _step_size; off_by_one: y_t reads h_{t-1}; skip=False: no D,
    skip="after_gate": D u added after the gate;
    gate: "silu", "sigmoid", "none"; carry=False: h_t forgets h_{t-1}; last: "right", "before_last";
    reverse: runs t = L-1 .. 0; state_in_input_dtype: h rounded to u's dtype after every step.
    """

    def run(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
        d = _step_size(delta, delta_bias, delta_softplus, softplus, bias)
        uf, Cf = u.float(), C.float()
        deltaA, deltaB_u = _discretized(uf, d, A, B, disc)
        Bsz, Dm, L, N = deltaA.shape
        h = uf.new_zeros(Bsz, Dm, N)
        ys, h_before = [], h
        steps = range(L - 1, -1, -1) if reverse else range(L)
        for t in steps:
            h_before = h
            h = deltaA[:, :, t] * (h if carry else 0.0) + deltaB_u[:, :, t]
            if state_in_input_dtype:
                h = h.to(u.dtype).float()
            read = h_before if off_by_one else h
            ys.append(torch.einsum("bdn,bn->bd", read, Cf[:, :, t]))
        if reverse:
            ys = ys[::-1]
        out = torch.stack(ys, dim=2)
        if D is not None and skip is True:
            out = out + D.float()[:, None] * uf
        if z is not None and gate != "none":
            zf = z.float()
            out = out * (torch.sigmoid(zf) if gate == "sigmoid" else F.silu(zf))
        if D is not None and skip == "after_gate":
            out = out + D.float()[:, None] * uf
        return out.to(u.dtype), (h_before if last == "before_last" else h)

    return run


def _named(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    fn.__name__ = name
    return fn


def scan_mistakes() -> tuple[Mistake, ...]:
    """The selective scan's formula mistakes (8.2, 8.3c)."""
    m = lambda name, hint, **kw: Mistake(name, _named(scan_core(**kw), name.replace(" ", "_")), hint)  # noqa: E731
    return (
        m("output from h_{t-1} (off by one)", OFF_BY_ONE, off_by_one=True),
        m("missing D skip", NO_SKIP, skip=False),
        m("D skip added after the gate", SKIP_AFTER_GATE, skip="after_gate"),
        m("z gate with sigmoid", GATE_SIGMOID, gate="sigmoid"),
        m("z ignored", NO_GATE, gate="none"),
        m("delta without softplus", NO_SOFTPLUS, softplus="none"),
        m("softplus applied twice", SOFTPLUS_TWICE, softplus="twice"),
        m("missing delta_bias", NO_BIAS, bias="none"),
        m("delta_bias after softplus", BIAS_AFTER, bias="after"),
        m("exact ZOH for B", ZOH_B, disc="zoh_b"),
        m("A without delta", A_NO_DELTA, disc="a_no_delta"),
        m("Euler step for A", EULER_A, disc="euler_a"),
        m("u missing from the input term", B_NO_U, disc="b_no_u"),
        m("state not carried", NO_CARRY, carry=False),
        m("last_state before the last step", LAST_STATE, last="before_last"),
        m("reversed in time", REVERSED, reverse=True),
        Mistake("state kept in the inputs' dtype (bf16 inputs)",
                _named(scan_core(state_in_input_dtype=True), "state_in_input_dtype"), STATE_IN_INPUT_DTYPE,
                options=BF16),
    )


def _calls_refs(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    from course_utils.refs import selective_scan

    return selective_scan(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus)


SCAN_CASES = [
    {"B": 2, "D": 8, "L": 40, "N": 16, "skip": True, "gate": True, "bias": True, "softplus": True},
    {"B": 1, "D": 8, "L": 33, "N": 16, "bias": True},  # delta_bias without softplus: still added
    {"B": 2, "D": 12, "L": 64, "N": 8, "softplus": True},
    {"B": 2, "D": 6, "L": 50, "N": 16, "skip": True, "gate": True, "bias": True, "softplus": True,
     "noncontiguous": True},
]
SCAN_HALF = [
    {"B": 2, "D": 8, "L": 40, "N": 16, "skip": True, "gate": True, "bias": True, "softplus": True},
    # A state kept in the inputs' dtype shows only over a long memory: on the short case above it passes (3e-3 in
    # bf16). Relative RMS error of `out` on this case, measured on the CPU (tolerance bf16 3e-2, fp16 1e-2), 8.2's
    # case / 8.3c's: the state rounded every step (the catalogue's) bf16 1.7e-1 / 1.8e-1, fp16 2.2e-2 / 2.3e-2
    # (last_state ~6e-1 bf16, ~1e-1 fp16); 8.3c's Hillis-Steele scan rounded to the dtype at every combine bf16
    # 2.0e-1, fp16 3.1e-2; the solutions (float32 state) bf16 2.8e-3 / 2.9e-3, fp16 3.5e-4 / 3.5e-4 (the output's
    # own rounding). At L = 1024 the fp16 loop stays near 3e-3. B=1, small D and N: 8.2's loop runs L steps.
    {"B": 1, "D": 8, "L": 4096, "N": 4, "skip": True, "gate": True, "slow": True},
]

SCAN_SPEC = register(Exercise(
    id="8.2",
    fn_name="selective_scan",
    signature=("selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False) "
               "-> (out, last_state)"),
    cases=lambda device, dtypes: case_list({}, SCAN_CASES, 821, dtypes, half=SCAN_HALF),
    make_inputs=scan_inputs,
    expected=_reference_scan,
    output=scan_output,
    positional=("u", "delta", "A", "B", "C"),
    input_layouts=LAYOUTS,
    diagnose=nonfinite_match,
    nan_hint=NAN_HINT,
    extra_checks=(forbid(),),
    mistakes=scan_mistakes() + (
        Mistake("calls mamba-ssm through course_utils.refs", _calls_refs, says=("how check", "course_utils.refs")),
    ),
))
"""The family's spec: 8.2 as registered; 8.3c and 8.4 are `dataclasses.replace`s of it."""


# ================================================================================================ 8.1a selection


def selection_inputs(case: Case, device: torch.device) -> dict[str, Any]:
    """x [B, D, L] (the conv branch's output), x_proj_weight [R + 2N, D], dt_proj_weight [D, R],
    dt_proj_bias [D] (Mamba's init: softplus(bias) between 0.001 and 0.1)."""
    gen = generator(case)
    Bsz, Dm, L, N, R = case["B"], case["D"], case["L"], case["N"], case["R"]
    dt = case.dtype
    if case.get("noncontiguous"):
        x = randn(gen, Bsz, L, Dm).to(device, dt).transpose(1, 2)
    else:
        x = randn(gen, Bsz, Dm, L).to(device, dt)
    step = torch.exp(torch.rand(Dm, generator=gen) * (math.log(0.1) - math.log(0.001)) + math.log(0.001))
    return {
        "x": x,
        "x_proj_weight": (randn(gen, R + 2 * N, Dm) / Dm ** 0.5).to(device, dt),
        "dt_proj_weight": (randn(gen, Dm, R) * 2 / R ** 0.5).to(device, dt),  # larger than init: Δ varies
        "dt_proj_bias": (step + torch.log(-torch.expm1(-step))).to(device, dt),  # inverse softplus
    }


def selection_core(*, softplus: str = "right", bias: str = "right", order: str = "dt_B_C", act: str = "softplus"
                   ) -> Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """selection(x, x_proj_weight, dt_proj_weight, dt_proj_bias) -> (delta, B, C) with at most the mistakes
    asked for. softplus: "right", "none"; bias: "right", "none", "after"; order: how x_proj's output is split
    ("dt_B_C" right, "dt_C_B", "B_C_dt"); act: "softplus", "exp" (Δ = exp(...))."""

    def run(x, x_proj_weight, dt_proj_weight, dt_proj_bias):
        R, N = dt_proj_weight.shape[1], (x_proj_weight.shape[0] - dt_proj_weight.shape[1]) // 2
        xf = x.float()
        x_dbl = torch.einsum("ed,bdl->bel", x_proj_weight.float(), xf)  # [B, R + 2N, L]
        if order == "B_C_dt":
            B, C, dt = x_dbl.split([N, N, R], dim=1)
        else:
            dt, B, C = x_dbl.split([R, N, N], dim=1)
            if order == "dt_C_B":
                B, C = C, B
        d = torch.einsum("dr,brl->bdl", dt_proj_weight.float(), dt)
        if bias == "right":
            d = d + dt_proj_bias.float()[:, None]
        if softplus == "right":
            d = d.exp() if act == "exp" else F.softplus(d)
        if bias == "after":
            d = d + dt_proj_bias.float()[:, None]
        return d.to(x.dtype), B.to(x.dtype), C.to(x.dtype)

    return run


register(Exercise(
    id="8.1a",
    fn_name="selection",
    signature="selection(x, x_proj_weight, dt_proj_weight, dt_proj_bias) -> (delta, B, C)",
    cases=lambda device, dtypes: case_list({}, [
        {"B": 2, "D": 16, "L": 24, "N": 8, "R": 2},
        {"B": 1, "D": 32, "L": 17, "N": 16, "R": 4},
        {"B": 2, "D": 12, "L": 20, "N": 4, "R": 1, "noncontiguous": True},
    ], 811, dtypes, half={"B": 2, "D": 16, "L": 24, "N": 8, "R": 2}),
    make_inputs=selection_inputs,
    expected=lambda inputs, case: selection_core()(**inputs),
    reference_name="PyTorch: mamba-ssm's Mamba.forward (x_proj, split [dt, B, C], dt_proj, softplus(· + bias))",
    output=TupleOut("(delta, B, C)", (TensorOut("delta", U_LAYOUT), TensorOut("B", BC_LAYOUT),
                                      TensorOut("C", BC_LAYOUT))),
    positional=("x", "x_proj_weight", "dt_proj_weight", "dt_proj_bias"),
    input_layouts={"x": U_LAYOUT},
    extra_checks=(forbid(),),
    mistakes=(
        Mistake("delta without softplus", _named(selection_core(softplus="none"), "no_softplus"),
                "Δ without softplus: Δ = softplus(W_dt (x_proj x)_dt + b_dt), which keeps the step size positive "
                "(§3.2: τ_Δ = softplus)"),
        Mistake("exp instead of softplus", _named(selection_core(act="exp"), "exp_delta"),
                "Δ = softplus(·) = log(1 + exp(·)), not exp(·): softplus grows linearly for large inputs"),
        Mistake("missing dt bias", _named(selection_core(bias="none"), "no_bias"),
                "missing dt_proj_bias: Δ = softplus(dt_proj_weight @ dt + dt_proj_bias)"),
        Mistake("dt bias after softplus", _named(selection_core(bias="after"), "bias_after"),
                "dt_proj_bias is added before softplus (it is the Linear layer's bias, dt_proj's output goes "
                "through softplus)"),
        Mistake("B and C swapped", _named(selection_core(order="dt_C_B"), "b_c_swapped"),
                "delta is right but B and C are swapped: x_proj's output splits as [dt (R rows), B (N), C (N)]"),
        Mistake("split as [B, C, dt]", _named(selection_core(order="B_C_dt"), "split_b_c_dt"),
                "x_proj's output splits as [dt, B, C]: the first R = dt_proj_weight.shape[1] rows are the "
                "low-rank dt, then N rows of B, then N of C"),
    ),
))

# ================================================================================================ 8.1b discretisation


def discretize_inputs(case: Case, device: torch.device) -> dict[str, Any]:
    inputs = scan_inputs(case, device)
    return {n: inputs[n] for n in ("u", "delta", "A", "B")}


def discretize_wrong(disc: str, name: str) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    def wrong(u, delta, A, B):
        deltaA, deltaB_u = _discretized(u, delta.float(), A, B, disc)
        return deltaA.to(u.dtype), deltaB_u.to(u.dtype)

    return _named(wrong, name)


def _neg_a(u, delta, A, B):
    deltaA, deltaB_u = _discretized(u, delta.float(), -A, B)
    return deltaA.to(u.dtype), _discretized(u, delta.float(), A, B)[1].to(u.dtype)


register(Exercise(
    id="8.1b",
    fn_name="discretize",
    signature="discretize(u, delta, A, B) -> (deltaA, deltaB_u)",
    cases=lambda device, dtypes: case_list({}, [
        {"B": 2, "D": 8, "L": 20, "N": 16},
        {"B": 2, "D": 6, "L": 33, "N": 8, "noncontiguous": True},
    ], 812, dtypes, half={"B": 2, "D": 8, "L": 20, "N": 16}),
    make_inputs=discretize_inputs,
    expected=lambda inputs, case: discretize_wrong("right", "discretize")(**inputs),
    reference_name="PyTorch: mamba-ssm's selective_scan_ref (deltaA = exp(Δ A), deltaB_u = Δ B u)",
    output=TupleOut("(deltaA, deltaB_u)", (TensorOut("deltaA", DL_LAYOUT), TensorOut("deltaB_u", DL_LAYOUT))),
    positional=("u", "delta", "A", "B"),
    input_layouts=LAYOUTS,
    extra_checks=(forbid(),),
    mistakes=(
        Mistake("exact ZOH for B", discretize_wrong("zoh_b", "zoh_b"), ZOH_B),
        Mistake("A without delta", discretize_wrong("a_no_delta", "a_no_delta"), A_NO_DELTA),
        Mistake("Euler step for A", discretize_wrong("euler_a", "euler_a"), EULER_A),
        Mistake("u missing from B̄ u", discretize_wrong("b_no_u", "b_no_u"), B_NO_U),
        Mistake("exp(-Δ A)", _named(_neg_a, "neg_a"),
                "A is already negative (A = -exp(A_log)): Ā = exp(Δ A) <= 1; exp(-Δ A) > 1 makes the state grow"),
    ),
))

# ================================================================================================ 8.3a the operator


def combine_inputs(case: Case, device: torch.device) -> dict[str, Any]:
    gen = generator(case)
    Bsz, Dm, L = case["B"], case["D"], case["L"]

    def put(t: torch.Tensor) -> torch.Tensor:  # [B, L, D] -> [B, D, L], a strided view when non-contiguous
        t = t.to(device, case.dtype).transpose(1, 2)
        return t if case.get("noncontiguous") else t.contiguous()

    a = lambda: put(torch.rand(Bsz, L, Dm, generator=gen))  # noqa: E731  decays in (0, 1)
    b = lambda: put(randn(gen, Bsz, L, Dm))  # noqa: E731
    return {"a_left": a(), "b_left": b(), "a_right": a(), "b_right": b()}


def combine_wrong(kind: str) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """(a_l, b_l) ∘ (a_r, b_r) computed in float32: "right" (a_l a_r, a_r b_l + b_r), "swapped"
    (a_l a_r, a_l b_r + b_l), "no_decay" (a_l a_r, b_l + b_r), "sum_a" (a_l + a_r, a_r b_l + b_r),
    "left_decay" (a_l a_r, a_l b_l + b_r)."""

    def combine(a_left, b_left, a_right, b_right):
        al, bl, ar, br = (x.float() for x in (a_left, b_left, a_right, b_right))
        a = al + ar if kind == "sum_a" else al * ar
        b = {"swapped": al * br + bl, "no_decay": bl + br, "left_decay": al * bl + br}.get(kind, ar * bl + br)
        return a.to(a_left.dtype), b.to(b_left.dtype)

    return _named(combine, f"combine_{kind}")


register(Exercise(
    id="8.3a",
    fn_name="combine",
    signature="combine(a_left, b_left, a_right, b_right) -> (a, b)",
    cases=lambda device, dtypes: case_list({}, [
        {"B": 2, "D": 8, "L": 16},
        {"B": 2, "D": 6, "L": 7, "noncontiguous": True},
    ], 831, dtypes, half={"B": 2, "D": 8, "L": 16}),
    make_inputs=combine_inputs,
    expected=lambda inputs, case: combine_wrong("right")(**inputs),
    reference_name="PyTorch: (a_l a_r, a_r b_l + b_r)",
    output=TupleOut("(a, b)", (TensorOut("a", U_LAYOUT), TensorOut("b", U_LAYOUT))),
    positional=("a_left", "b_left", "a_right", "b_right"),
    mistakes=(
        Mistake("left and right swapped", combine_wrong("swapped"),
                "left and right swapped: (a_l, b_l) is the EARLIER segment, so its b is decayed by the later "
                "segment's a: b = a_r b_l + b_r (apply h -> a_l h + b_l first, then h -> a_r h + b_r)"),
        Mistake("b not decayed", combine_wrong("no_decay"),
                "the earlier segment's b is not decayed: it passes through the later segment's decay, "
                "b = a_r b_l + b_r"),
        Mistake("a's added", combine_wrong("sum_a"),
                "decays compose by multiplication: applying h -> a_l h then h -> a_r h gives a = a_l a_r"),
        Mistake("b decayed by its own a", combine_wrong("left_decay"),
                "b_l is decayed by the later segment's a_r, not by its own a_l: b = a_r b_l + b_r"),
    ),
))

# ============================================================================================ 8.3b the parallel scan


def scan_ab_inputs(case: Case, device: torch.device) -> dict[str, Any]:
    """a [B, D, L] decays in (0.9, 1) (long memories: 32 steps keep ~20%), b [B, D, L] ~ N(0, 1)."""
    gen = generator(case)
    Bsz, Dm, L = case["B"], case["D"], case["L"]
    a = 1.0 - 0.1 * torch.rand(Bsz, Dm, L, generator=gen)
    b = randn(gen, Bsz, Dm, L)
    if case.get("noncontiguous"):
        a, b = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (a, b))
    return {"a": a.to(device, case.dtype), "b": b.to(device, case.dtype)}


def linear_recurrence_f64(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """h_t = a_t h_{t-1} + b_t along the last dim from h_{-1} = 0, a loop in float64, returned in b's dtype:
    the reference of 8.3b."""
    af, bf = a.double(), b.double()
    h, hs = torch.zeros_like(bf[..., 0]), []
    for t in range(bf.shape[-1]):
        h = af[..., t] * h + bf[..., t]
        hs.append(h)
    return torch.stack(hs, dim=-1).to(b.dtype)


def parallel_wrong(name: str, *, op: str = "right", rounds: str = "all", exclusive: bool = False,
                   reverse: bool = False) -> Callable[..., torch.Tensor]:
    """parallel_scan(a, b) -> h by Hillis-Steele (log2 L rounds; round k combines t with t - 2^k) in float32,
    with at most the mistakes asked for. op: "right", "swapped" (left and right exchanged), "a_fixed" (the a's
    never composed); rounds: "all", "one_short"; exclusive: h_t from the steps before t; reverse: suffix scan."""

    def scan(a, b):
        A, Bv = a.float(), b.float()
        if reverse:
            A, Bv = A.flip(-1), Bv.flip(-1)
        L = Bv.shape[-1]
        n_rounds = max(math.ceil(math.log2(L)), 0) if L > 1 else 0
        if rounds == "one_short":
            n_rounds = max(n_rounds - 1, 0)
        for k in range(n_rounds):
            s = 2 ** k
            a_prev = F.pad(A[..., :-s], (s, 0), value=1.0)  # the segment ending s steps earlier (identity pad)
            b_prev = F.pad(Bv[..., :-s], (s, 0), value=0.0)
            if op == "swapped":
                A, Bv = a_prev * A, a_prev * Bv + b_prev
            else:
                Bv = A * b_prev + Bv
                A = A if op == "a_fixed" else a_prev * A
        h = F.pad(Bv[..., :-1], (1, 0)) if exclusive else Bv
        if reverse:
            h = h.flip(-1)
        return h.to(b.dtype)

    return _named(scan, name)


def _loop_scan(a, b):
    """The recurrence as a loop over t: right values, L sequential steps."""
    h, hs = torch.zeros_like(b[..., 0]).float(), []
    for t in range(b.shape[-1]):
        h = a[..., t].float() * h + b[..., t].float()
        hs.append(h)
    return torch.stack(hs, dim=-1).to(b.dtype)


def _closed_form_scan(a, b):
    """h_t = P_t Σ_{s<=t} b_s / P_s with P = cumprod(a): right for short L, one pass, no scan."""
    P = a.double().cumprod(-1)
    return (P * (b.double() / P).cumsum(-1)).to(b.dtype)


def log_depth(small: int = 64, large: int = 1024, what: str = "scan",
              probe: Callable[[int, torch.device], tuple[tuple, dict]] | None = None
              ) -> Callable[[Trial, Callable[..., Any]], None]:
    """A check that fn is log-depth in L: its torch calls grow at most like log L (they may not grow at all),
    never in proportion to L. Measured at L = `small` and `large` (16× longer): a log-depth scan makes
    ~log(large)/log(small) = 1.7× the calls (Hillis–Steele, Blelloch, odd-even recursion alike), a loop over t ~16×,
    a loop over chunks of a fixed size c ~large/c chunks of log c rounds each (c = 256: 7×). Passes below 2.5× (plus
    8 calls of slack); what a loop over chunks of c >= large / 2 does cannot be told from a log-depth scan here."""

    def default_probe(L: int, device: torch.device) -> tuple[tuple, dict]:
        gen = torch.Generator().manual_seed(8300 + L)
        a = (0.5 + 0.5 * torch.rand(1, 2, L, generator=gen)).to(device)
        return (a, torch.randn(1, 2, L, generator=gen).to(device)), {}

    make = probe or default_probe

    def calls(trial: Trial, fn: Callable[..., Any], L: int) -> int:
        args, kwargs = make(L, trial.device)
        with torch.no_grad(), TorchCalls() as counted:
            trial.call(fn, args, kwargs, f"{trial.fn_name}(... L={L} ...)", where=f"(depth check, L={L})")
        return counted.calls

    def check(trial: Trial, fn: Callable[..., Any]) -> None:
        a, b = calls(trial, fn, small), calls(trial, fn, large)
        bound = 2.5 * max(a, 1) + 8  # log-depth: ~1.7×; a loop over t 16×, over chunks of c <= large / 4: >= 5×
        if b > bound:
            fail(f"depth check: your {what} makes {a} torch calls at L={small} and {b} at L={large} "
                 f"({b / max(a, 1):.1f}× for 16× the length): its number of sequential steps grows with L — a "
                 "Python loop over t (or over chunks of t) is the sequential scan of Exercise 8.2",
                 "a log-depth scan does ceil(log2 L) rounds, each combining every position with the one 2^k "
                 "steps earlier through the operator of 8.3a, all positions at once (Hillis–Steele), or an "
                 "up-sweep and a down-sweep (Blelloch 1990)")

    return check


SCAN_AB_CHECKS = (forbid("cumprod", "cumsum", "logcumsumexp", "associative_scan"), log_depth())

register(Exercise(
    id="8.3b",
    fn_name="parallel_scan",
    signature="parallel_scan(a, b) -> h",
    cases=lambda device, dtypes: case_list({}, [
        {"B": 1, "D": 8, "L": 64},
        {"B": 2, "D": 6, "L": 37},
        {"B": 1, "D": 6, "L": 1},
        {"B": 2, "D": 8, "L": 100, "noncontiguous": True},
    ], 832, dtypes, half={"B": 2, "D": 8, "L": 64}),
    make_inputs=scan_ab_inputs,
    expected=lambda inputs, case: linear_recurrence_f64(inputs["a"], inputs["b"]),
    reference_name="a float64 loop: h_t = a_t h_{t-1} + b_t",
    output=TensorOut("h", U_LAYOUT),
    positional=("a", "b"),
    input_layouts={"a": U_LAYOUT, "b": U_LAYOUT},
    extra_checks=SCAN_AB_CHECKS,
    mistakes=(
        Mistake("exclusive (off by one)", parallel_wrong("exclusive", exclusive=True),
                "off by one: h_t includes step t itself (h_t = a_t h_{t-1} + b_t); your h_t is the previous "
                "h — an exclusive scan"),
        Mistake("operator order swapped", parallel_wrong("swapped", op="swapped"),
                "the operator is applied with left and right exchanged: the segment s steps earlier is the LEFT "
                "operand, (a_prev, b_prev) ∘ (a_t, b_t) = (a_prev a_t, a_t b_prev + b_t)"),
        Mistake("a's never composed", parallel_wrong("a_fixed", op="a_fixed"),
                "after each round a position stands for a whole segment: its a must become the product of the "
                "segment's decays (a <- a_prev * a), or later rounds decay with a single step's a"),
        Mistake("one round short", parallel_wrong("one_short", rounds="one_short"),
                "too few rounds: ceil(log2 L) rounds are needed so that the last position reaches step 0 "
                "(the first 2^(rounds) steps are right)"),
        Mistake("reversed (suffix scan)", parallel_wrong("reversed", reverse=True),
                "reversed: h_t depends on steps s <= t; combine each position with the one 2^k steps EARLIER"),
        Mistake("loop over t", _loop_scan, says=("depth check", "8.2")),
        Mistake("closed form with cumprod", _closed_form_scan, says=("how check", "cumprod")),
    ),
))

# ================================================================================================ 8.3c through the scan


def _scan_probe(L: int, device: torch.device) -> tuple[tuple, dict]:
    case = Case({"B": 1, "D": 2, "L": L, "N": 4, "dtype": torch.float32}, seed=8330 + L)
    inputs = scan_inputs(case, device)
    return tuple(inputs[n] for n in ("u", "delta", "A", "B", "C")), {}


def _loop_as_parallel(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    return scan_core()(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


def _scanned_along_n(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """8.3b's scan applied to [B, D, L, N] as it is: along N, not along time."""
    deltaA, deltaB_u = _discretized(u, _step_size(delta, delta_bias, delta_softplus, "right", "right"), A, B)
    h = parallel_wrong("scan")(deltaA, deltaB_u)  # [B, D, L, N], scanned over its last dim
    out = torch.einsum("bdln,bnl->bdl", h, C.float())
    if D is not None:
        out = out + D.float()[:, None] * u.float()
    if z is not None:
        out = out * F.silu(z.float())
    return out.to(u.dtype), h[:, :, -1]


register(dataclasses.replace(
    SCAN_SPEC,
    id="8.3c",
    fn_name="selective_scan_parallel",
    signature=("selective_scan_parallel(u, delta, A, B, C, D=None, z=None, delta_bias=None, "
               "delta_softplus=False) -> (out, last_state)"),
    cases=lambda device, dtypes: case_list({}, SCAN_CASES, 833, dtypes, half=SCAN_HALF),
    extra_checks=(forbid("cumprod", "cumsum", "logcumsumexp", "associative_scan"),
                  log_depth(probe=_scan_probe, what="selective scan")),
    mistakes=scan_mistakes() + (
        Mistake("loops over t (Exercise 8.2)", _named(_loop_as_parallel, "loop_over_t"), says=("depth check",)),
        Mistake("scanned along N instead of L", _named(_scanned_along_n, "scanned_along_n"),
                "parallel_scan runs along the LAST dim, and deltaA, deltaB_u are [B, D, L, N]: scanned as they are, "
                "the recurrence runs over the state index n instead of time. Move L last ([B, D, N, L], "
                "transpose(2, 3)) before the scan"),
    ),
))

# ================================================================================================ 8.4 the Triton kernel

TRITON_BLOCK_D, TRITON_BLOCK_L = 8, 32  # the catalogue's kernels: L = 80 makes three chunks, the last ragged


@triton.jit
def _combine(a_left, b_left, a_right, b_right):
    return a_left * a_right, a_right * b_left + b_right


@triton.jit
def _scan_kernel(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, last_ptr, Dm, L,
                 N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, HAS_D: tl.constexpr,
                 HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, MISTAKE: tl.constexpr):
    i_d, b = tl.program_id(0), tl.program_id(1)
    d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, N)
    mask_d = d < Dm
    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=mask_d[:, None], other=0.0)
    bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d, mask=mask_d, other=0.0)
    Dskip = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_D:
        Dskip = tl.load(D_ptr + d, mask=mask_d, other=0.0)
    h = tl.zeros([BLOCK_D, N], dtype=tl.float32)
    for l0 in range(0, L, BLOCK_L):
        ll = l0 + tl.arange(0, BLOCK_L)
        mask_l = ll < L
        mask = mask_d[:, None] & mask_l[None, :]
        offs = (b * Dm + d)[:, None] * L + ll[None, :]
        u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dt = tl.load(dt_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if MISTAKE != "no_bias":
            dt = dt + bias[:, None]
        if SOFTPLUS:
            if MISTAKE != "no_softplus":
                dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)
        if MISTAKE != "tail_not_neutral":
            dt = tl.where(mask, dt, 0.0)  # steps past L: Ā = 1, B̄ u = 0 leave the state as it is
        bc = (b * N + n)[:, None] * L + ll[None, :]
        Bt = tl.load(B_ptr + bc, mask=mask_l[None, :], other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + bc, mask=mask_l[None, :], other=0.0).to(tl.float32)
        dA = tl.exp(dt[:, None, :] * A[:, :, None])  # [BLOCK_D, N, BLOCK_L]
        if MISTAKE == "tail_not_neutral":
            dA = tl.where(mask_l[None, None, :], dA, 0.5)
        dBu = (dt * u)[:, None, :] * Bt[None, :, :]
        if MISTAKE == "zoh_b":
            dBu = (dA - 1.0) / A[:, :, None] * (u[:, None, :] * Bt[None, :, :])
        if MISTAKE == "state_in_input_dtype":  # the scan's partial states in the inputs' dtype
            a_cum, b_cum = tl.associative_scan((dA.to(u_ptr.dtype.element_ty), dBu.to(u_ptr.dtype.element_ty)),
                                               axis=2, combine_fn=_combine)
            a_cum, b_cum = a_cum.to(tl.float32), b_cum.to(tl.float32)
        else:
            a_cum, b_cum = tl.associative_scan((dA, dBu), axis=2, combine_fn=_combine)
        if MISTAKE == "no_carry":
            hs = b_cum
        elif MISTAKE == "carry_undecayed":
            hs = h[:, :, None] + b_cum
        else:
            hs = a_cum * h[:, :, None] + b_cum
        if MISTAKE == "state_in_input_dtype":  # ... and the state carried from chunk to chunk too
            hs = hs.to(u_ptr.dtype.element_ty).to(tl.float32)
        y = tl.sum(hs * Ct[None, :, :], axis=1)
        if MISTAKE == "off_by_one":  # y_t = C_t · h_{t-1}: the same scan over the inputs shifted by one step
            prev = mask & (ll[None, :] > l0)
            u_p = tl.load(u_ptr + offs - 1, mask=prev, other=0.0).to(tl.float32)
            dt_p = tl.load(dt_ptr + offs - 1, mask=prev, other=0.0).to(tl.float32) + bias[:, None]
            if SOFTPLUS:
                dt_p = tl.where(dt_p <= 20.0, tl.log(1.0 + tl.exp(dt_p)), dt_p)
            dt_p = tl.where(prev, dt_p, 0.0)
            B_p = tl.load(B_ptr + bc - 1, mask=(mask_l & (ll > l0))[None, :], other=0.0).to(tl.float32)
            pa, pb = tl.associative_scan((tl.exp(dt_p[:, None, :] * A[:, :, None]),
                                          (dt_p * u_p)[:, None, :] * B_p[None, :, :]), axis=2, combine_fn=_combine)
            y = tl.sum((pa * h[:, :, None] + pb) * Ct[None, :, :], axis=1)
        is_last = (tl.arange(0, BLOCK_L) == BLOCK_L - 1)[None, None, :]
        h = tl.sum(tl.where(is_last, hs, 0.0), axis=2)
        if HAS_D:
            if MISTAKE != "no_skip":
                y += Dskip[:, None] * u
        if HAS_Z:
            z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            if MISTAKE == "sigmoid_gate":
                y = y * tl.sigmoid(z)
            else:
                y = y * z * tl.sigmoid(z)
        tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(last_ptr + (b * Dm + d)[:, None] * N + n[None, :], h, mask=mask_d[:, None])


def triton_wrong(name: str, mistake: str = "") -> Scan:
    """selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False) launching
    _scan_kernel with `mistake`: "no_carry", "carry_undecayed" (h added without the chunk's decay), "off_by_one",
    "no_skip", "sigmoid_gate", "no_softplus", "no_bias", "zoh_b", "tail_not_neutral" (steps past L change the
    state), "" (right)."""

    def wrong(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
        u, delta, B, C = u.contiguous(), delta.contiguous(), B.contiguous(), C.contiguous()
        Bsz, Dm, L = u.shape
        N = A.shape[1]
        out = torch.empty_like(u)
        last = torch.empty(Bsz, Dm, N, device=u.device, dtype=torch.float32)
        dummy = A.new_zeros(Dm)
        grid = (triton.cdiv(Dm, TRITON_BLOCK_D), Bsz)
        _scan_kernel[grid](u, delta, A.float().contiguous(), B, C, dummy if D is None else D.float().contiguous(),
                           u if z is None else z.contiguous(),
                           dummy if delta_bias is None else delta_bias.float().contiguous(), out, last, Dm, L, N=N,
                           BLOCK_D=TRITON_BLOCK_D, BLOCK_L=TRITON_BLOCK_L, HAS_D=D is not None, HAS_Z=z is not None,
                           HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus), MISTAKE=mistake)
        return out, last

    return _named(wrong, name)


def _scan_in_pytorch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    return scan_core()(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


def _jit_python_function(obj: Any) -> Any:
    """The Python function behind a @triton.jit object (compiled or interpreted), else None."""
    fn = getattr(obj, "fn", None)
    return fn if isinstance(obj, triton.runtime.jit.KernelInterface) and callable(fn) else None


def kernel_names(fn: Callable[..., Any], depth: int = 4) -> set[str]:
    """The names used by every @triton.jit function that fn can reach through names in its code (its
    launcher's globals and closure, the kernels, the @triton.jit helpers they call), depth levels deep."""
    names: set[str] = set()
    seen: set[int] = set()

    def code_names(code: Any) -> set[str]:
        out = set(code.co_names)
        for const in code.co_consts:
            if hasattr(const, "co_names"):
                out |= code_names(const)
        return out

    def visit(f: Any, in_kernel: bool, level: int) -> None:
        f = getattr(f, "__func__", f)
        if id(f) in seen or level > depth or not hasattr(f, "__code__"):
            return
        seen.add(id(f))
        used = code_names(f.__code__)
        if in_kernel:
            names.update(used)
        scope = dict(getattr(f, "__globals__", {}))
        for cell_name, cell in zip(f.__code__.co_freevars, f.__closure__ or ()):
            try:
                scope[cell_name] = cell.cell_contents
            except ValueError:  # an empty cell
                pass
        for name in used | set(f.__code__.co_freevars):
            obj = scope.get(name)
            if in_kernel and obj is tl.associative_scan:  # imported under another name
                names.add("associative_scan")
            jit_fn = _jit_python_function(obj)
            if jit_fn is not None:
                visit(jit_fn, True, level + 1)
            elif callable(obj) and hasattr(getattr(obj, "__func__", obj), "__code__"):
                visit(obj, in_kernel, level + 1)

    visit(fn, False, 0)
    return names


def uses_associative_scan(trial: Trial, fn: Callable[..., Any]) -> None:
    """A check that the kernels fn launches scan with tl.associative_scan (read from their code, not run)."""
    if "associative_scan" not in kernel_names(fn):
        fail("scan check: none of the @triton.jit functions your function launches calls tl.associative_scan — "
             "Exercise 8.4 is the chunked associative scan of §3.3; a loop over the steps inside the kernel gives "
             "the right values, but it is 8.2's sequential loop moved onto the GPU",
             "load a chunk of BLOCK_L steps, build Ā and B̄u for it as [BLOCK_D, N, BLOCK_L] blocks and scan them "
             "along the chunk: tl.associative_scan((dA, dBu), axis=2, combine_fn=first_order); then carry the "
             "state into the next chunk")


@triton.jit
def _stepwise_kernel(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, last_ptr, Dm, L,
                     N: tl.constexpr, BD: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
                     HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """Right values without a scan: one step after another, the state [BD, N] in registers."""
    i_d, b = tl.program_id(0), tl.program_id(1)
    d = i_d * BD + tl.arange(0, BD)
    n = tl.arange(0, N)
    md = d < Dm
    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=md[:, None], other=0.0)
    h = tl.zeros([BD, N], dtype=tl.float32)
    for t in range(0, L):
        off = (b * Dm + d) * L + t
        u = tl.load(u_ptr + off, mask=md, other=0.0).to(tl.float32)
        dt = tl.load(dt_ptr + off, mask=md, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt += tl.load(bias_ptr + d, mask=md, other=0.0)
        if SOFTPLUS:
            dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)
        Bt = tl.load(B_ptr + (b * N + n) * L + t).to(tl.float32)
        Ct = tl.load(C_ptr + (b * N + n) * L + t).to(tl.float32)
        h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * Bt[None, :]
        y = tl.sum(h * Ct[None, :], axis=1)
        if HAS_D:
            y += tl.load(D_ptr + d, mask=md, other=0.0) * u
        if HAS_Z:
            zz = tl.load(z_ptr + off, mask=md, other=0.0).to(tl.float32)
            y = y * zz / (1.0 + tl.exp(-zz))
        tl.store(out_ptr + off, y.to(out_ptr.dtype.element_ty), mask=md)
    tl.store(last_ptr + (b * Dm + d)[:, None] * N + n[None, :], h, mask=md[:, None])


def stepwise_kernel_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """selective_scan_triton's values from _stepwise_kernel: a kernel, but no associative scan."""
    u, delta, B, C = u.contiguous(), delta.contiguous(), B.contiguous(), C.contiguous()
    Bsz, Dm, L = u.shape
    out = torch.empty_like(u)
    last = torch.empty(Bsz, Dm, A.shape[1], device=u.device, dtype=torch.float32)
    dummy = A.new_zeros(Dm)
    _stepwise_kernel[(triton.cdiv(Dm, 4), Bsz)](
        u, delta, A.float().contiguous(), B, C, dummy if D is None else D.float().contiguous(),
        u if z is None else z.contiguous(), dummy if delta_bias is None else delta_bias.float().contiguous(), out,
        last, Dm, L, N=A.shape[1], BD=4, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
        SOFTPLUS=bool(delta_softplus))
    return out, last


register(dataclasses.replace(
    SCAN_SPEC,
    id="8.4",
    fn_name="selective_scan_triton",
    signature=("selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False) "
               "-> (out, last_state)"),
    # small D and N: Triton's interpreter runs a custom-operator scan one element at a time (~0.05 ms each)
    cases=lambda device, dtypes: case_list({}, [
        {"B": 1, "D": 8, "L": 80, "N": 4, "skip": True, "gate": True, "bias": True, "softplus": True},
        {"B": 2, "D": 12, "L": 45, "N": 8, "bias": True},
        {"B": 2, "D": 6, "L": 200, "N": 4, "skip": True, "gate": True, "bias": True, "softplus": True,
         "noncontiguous": True},
    ], 841, dtypes, half=[{"B": 1, "D": 8, "L": 64, "N": 4, "skip": True, "gate": True, "bias": True,
                           "softplus": True},
                          # 8.2's "slow" case at L = 1024 (the interpreter takes ~2 s a call there). A state kept
                          # in the inputs' dtype (the catalogue's kernel), relative RMS error of last_state: fp16
                          # 2.4e-2 (tolerance 1e-2; `out` 1.7e-3 passes), measured in the interpreter; bf16 1.8e-1
                          # (tolerance 3e-2) by a PyTorch emulation of its arithmetic (Hillis-Steele within chunks of
                          # 32, every combine rounded), which gives 2.5e-2 in fp16: the interpreter computes bf16
                          # wrongly (Inf). The solution: fp16 3.8e-4, bf16 3.8e-3
                          {"B": 1, "D": 8, "L": 1024, "N": 4, "skip": True, "gate": True, "slow": True}]),
    extra_checks=(forbid(), launches_a_kernel, uses_associative_scan),
    mistakes=(
        Mistake("state not carried across chunks", triton_wrong("no_carry", "no_carry"),
                "the state is not carried from chunk to chunk: each chunk's scan starts from the state the "
                "chunks before left, h_t = (Π Ā) h_chunk_start + (scanned B̄ u) — keep h in registers across the "
                "loop over L (the first chunk is right)"),
        Mistake("carried state not decayed", triton_wrong("carry_undecayed", "carry_undecayed"),
                "the state carried into a chunk is added without decay: step t of the chunk sees it through every "
                "Ā since the chunk's start, h_t = (Π_{s<=t} Ā_s) h_start + (scanned B̄ u)_t — that product is the "
                "first output of the scan (the first chunk is right)"),
        Mistake("output from h_{t-1} (off by one)", triton_wrong("off_by_one", "off_by_one"), OFF_BY_ONE),
        Mistake("missing D skip", triton_wrong("no_skip", "no_skip"), NO_SKIP),
        Mistake("z gate with sigmoid", triton_wrong("sigmoid_gate", "sigmoid_gate"), GATE_SIGMOID),
        Mistake("delta without softplus", triton_wrong("no_softplus", "no_softplus"), NO_SOFTPLUS),
        Mistake("missing delta_bias", triton_wrong("no_bias", "no_bias"), NO_BIAS),
        Mistake("exact ZOH for B", triton_wrong("zoh_b", "zoh_b"), ZOH_B),
        Mistake("state kept in the inputs' dtype (fp16 inputs)",
                triton_wrong("state_in_input_dtype", "state_in_input_dtype"), STATE_IN_INPUT_DTYPE_KERNEL,
                options=FP16),
        Mistake("masked steps change the state", triton_wrong("tail_not_neutral", "tail_not_neutral"),
                "only last_state is wrong, when L is not a multiple of BLOCK_L: the masked steps past L of the last "
                "chunk must leave the state as it is — Ā = 1 and B̄ u = 0 there (Δ = 0 does both)"),
        Mistake("computed in PyTorch, no kernel", _named(_scan_in_pytorch, "scan_in_pytorch"),
                says=("kernel check",)),
        Mistake("a step-by-step loop in the kernel", stepwise_kernel_scan, says=("scan check", "tl.associative_scan")),
    ),
))

# ================================================================================================ 8.5a the block


class Params(dict):
    """A Mamba layer's weights by name, as `mamba_ssm.Mamba.state_dict()` names them (shown as `params`)."""

    def __repr__(self) -> str:
        return "params"


def block_params(gen: torch.Generator, d_model: int, d_state: int = 8, d_conv: int = 4, expand: int = 2
                 ) -> Params:
    """Seeded weights of mamba_ssm.Mamba(d_model, d_state, d_conv, expand) under its names: projections
    ~ N(0, 1/fan_in), dt_proj's bias as Mamba initialises it (softplus(bias) in [0.001, 0.1]) but larger dt
    weights (so Δ varies along the sequence), A_log = log of S4D-real's 1..N with noise, D ~ 1."""
    Di, R = expand * d_model, math.ceil(d_model / 16)

    def w(out: int, fan_in: int) -> torch.Tensor:
        return randn(gen, out, fan_in) / fan_in ** 0.5

    step = torch.exp(torch.rand(Di, generator=gen) * (math.log(0.1) - math.log(0.001)) + math.log(0.001))
    return Params({
        "A_log": (torch.log(-s4d_real_A(Di, d_state)) + 0.2 * randn(gen, Di, d_state)),
        "D": 1.0 + 0.2 * randn(gen, Di),
        "in_proj.weight": w(2 * Di, d_model),
        "conv1d.weight": randn(gen, Di, 1, d_conv) / d_conv ** 0.5,
        "conv1d.bias": 0.1 * randn(gen, Di),
        "x_proj.weight": w(R + 2 * d_state, Di),
        "dt_proj.weight": 2 * randn(gen, Di, R),
        "dt_proj.bias": step + torch.log(-torch.expm1(-step)),
        "out_proj.weight": w(d_model, Di),
    })


def mamba_layer(params: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> Any:
    """mamba_ssm.Mamba holding `params` (its state_dict, float32), its sizes read from the weights' shapes."""
    from course_utils.mamba_import import import_mamba

    import_mamba()
    from mamba_ssm import Mamba

    Di, d_model = params["in_proj.weight"].shape[0] // 2, params["in_proj.weight"].shape[1]
    N, K = params["A_log"].shape[1], params["conv1d.weight"].shape[-1]
    layer = Mamba(d_model, d_state=N, d_conv=K, expand=Di // d_model, dt_rank=params["dt_proj.weight"].shape[1],
                  device=device)
    layer.load_state_dict({n: p.float().to(device) for n, p in params.items()}, strict=True)
    return layer


def block_inputs(case: Case, device: torch.device) -> dict[str, Any]:
    gen = generator(case)
    Bsz, L, Dm = case["B"], case["L"], case["d_model"]
    if case.get("noncontiguous"):
        x = randn(gen, L, Bsz, Dm).to(device, case.dtype).transpose(0, 1)
    else:
        x = randn(gen, Bsz, L, Dm).to(device, case.dtype)
    params = Params({n: p.to(device) for n, p in block_params(gen, Dm, case["N"]).items()})
    return {"x": x, "params": params}


def _reference_block(inputs: dict[str, Any], case: Case) -> torch.Tensor:
    from course_utils.refs.ssm import mamba_block as run_layer

    x = inputs["x"]
    layer = mamba_layer(inputs["params"], x.device)
    with torch.no_grad():
        return run_layer(layer, x.float()).to(x.dtype)


BLOCK_TWICE = ("Δ went through softplus(· + dt_proj.bias) twice: once in the selection and again in the scan "
               "(delta_softplus=True; with delta_bias, the bias twice too). Apply them once — in the selection "
               "(then scan with delta_softplus=False, no delta_bias), or in the scan (pass dt_proj.weight @ dt as "
               "it is)")


def block_wrong(name: str, *, conv: str = "causal", conv_act: bool = True, gate: str = "silu", A_from: str = "right",
                softplus: str = "right", bias: str = "right", skip: bool = True, order: str = "dt_B_C",
                off_by_one: bool = False) -> Callable[..., torch.Tensor]:
    """mamba_block(x, params) in float32 with at most the mistakes asked for. conv: "causal", "same"
    (padding='same': reads the future), "right" (no left padding: pads the end), "flipped" (the kernel reversed);
    conv_act=False: no SiLU after the conv; gate: as scan_core; A_from: "right" (-exp(A_log)), "log" (A_log
    itself), "positive" (exp(A_log)); softplus, bias: as _step_size; order: as selection_core."""

    def block(x, params):
        P = {n: p.float() for n, p in params.items()}
        L = x.shape[1]
        xz = torch.einsum("ed,bld->bel", P["in_proj.weight"], x.float())  # [B, 2 Di, L]
        xs, z = xz.chunk(2, dim=1)
        w, K = P["conv1d.weight"], P["conv1d.weight"].shape[-1]
        if conv == "flipped":
            w = w.flip(-1)
        if conv == "same":
            xc = F.conv1d(F.pad(xs, ((K - 1) // 2, K // 2)), w, P["conv1d.bias"], groups=xs.shape[1])  # 'same'
        elif conv == "right":
            xc = F.conv1d(F.pad(xs, (0, K - 1)), w, P["conv1d.bias"], groups=xs.shape[1])
        else:
            xc = F.conv1d(F.pad(xs, (K - 1, 0)), w, P["conv1d.bias"], groups=xs.shape[1])
        xc = F.silu(xc) if conv_act else xc
        R = P["dt_proj.weight"].shape[1]
        N = P["A_log"].shape[1]
        x_dbl = torch.einsum("ed,bdl->bel", P["x_proj.weight"], xc)
        dt, Bm, Cm = x_dbl.split([R, N, N], dim=1)
        if order == "dt_C_B":
            Bm, Cm = Cm, Bm
        dt = torch.einsum("dr,brl->bdl", P["dt_proj.weight"], dt)
        A = {"log": P["A_log"], "positive": P["A_log"].exp()}.get(A_from, -P["A_log"].exp())
        y, _ = scan_core(softplus=softplus, bias=bias, skip=skip, gate=gate, off_by_one=off_by_one)(
            xc, dt, A, Bm, Cm, P["D"], z, P["dt_proj.bias"], True)
        assert y.shape[-1] == L
        return torch.einsum("md,bdl->blm", P["out_proj.weight"], y).to(x.dtype)

    return _named(block, name)


register(Exercise(
    id="8.5a",
    fn_name="mamba_block",
    signature="mamba_block(x, params) -> y",
    cases=lambda device, dtypes: case_list({}, [
        {"B": 2, "L": 24, "d_model": 16, "N": 8},
        {"B": 1, "L": 37, "d_model": 32, "N": 16},
        {"B": 2, "L": 20, "d_model": 16, "N": 4, "noncontiguous": True},
    ], 851, dtypes, half={"B": 2, "L": 24, "d_model": 16, "N": 8}),
    make_inputs=block_inputs,
    expected=_reference_block,
    output=TensorOut("y", "BLD"),
    positional=("x", "params"),
    input_layouts={"x": "BLD"},
    diagnose=nonfinite_match,
    nan_hint=NAN_HINT,
    extra_checks=(forbid(),),
    mistakes=(
        Mistake("conv padding='same' (non-causal)", block_wrong("conv_same", conv="same"),
                "the convolution reads future tokens: pad d_conv − 1 zeros on the LEFT only (causal), so step t "
                "sees x_{t-3..t}; padding='same' pads both sides"),
        Mistake("conv without left padding", block_wrong("conv_right", conv="right"),
                "the convolution is shifted into the future: without left padding step t sees x_{t..t+3}. "
                "Pad d_conv − 1 zeros on the left (F.pad(x, (d_conv − 1, 0))), or take the first L outputs of "
                "nn.Conv1d(padding=d_conv − 1)"),
        Mistake("conv kernel flipped", block_wrong("conv_flipped", conv="flipped"),
                "the conv kernel is reversed: PyTorch's conv1d is a cross-correlation, out_t = Σ_k w[k] x_{t-K+1+k} "
                "with left padding — w[K−1] multiplies the current token"),
        Mistake("no SiLU after the conv", block_wrong("no_conv_act", conv_act=False),
                "missing the SiLU after the convolution (Figure 3: conv → σ → SSM)"),
        Mistake("gate with sigmoid", block_wrong("gate_sigmoid", gate="sigmoid"), GATE_SIGMOID),
        Mistake("no gate", block_wrong("no_gate", gate="none"),
                "the SSM's output is multiplied by silu(z), z the second half of in_proj's output (Figure 3)"),
        Mistake("A = A_log", block_wrong("a_log", A_from="log"),
                "A = −exp(A_log): the layer stores the log of −A, which keeps A negative (the state decays)"),
        Mistake("A = exp(A_log)", block_wrong("a_positive", A_from="positive"),
                "A = −exp(A_log) < 0: a positive A makes Ā = exp(Δ A) > 1 and the state grows"),
        Mistake("softplus applied twice", block_wrong("softplus_twice", softplus="twice"), BLOCK_TWICE),
        Mistake("dt bias and softplus applied twice", block_wrong("bias_twice", softplus="twice_biased"),
                BLOCK_TWICE),
        Mistake("dt without softplus", block_wrong("no_softplus", softplus="none"),
                "Δ without softplus: Δ = softplus(dt_proj.weight @ dt + dt_proj.bias), which keeps the step size "
                "positive (§3.2: τ_Δ = softplus); the scan's delta_softplus=True does it"),
        Mistake("missing dt bias", block_wrong("no_bias", bias="none"),
                "missing dt_proj.bias: Δ = softplus(dt_proj.weight @ dt + dt_proj.bias) — the bias is added before "
                "softplus (in the selection, or as the scan's delta_bias)"),
        Mistake("missing D skip", block_wrong("no_skip", skip=False), NO_SKIP),
        Mistake("B and C swapped", block_wrong("b_c_swapped", order="dt_C_B"),
                "x_proj's output splits as [dt (R rows), B (N), C (N)]; B writes the state, C reads it"),
        Mistake("scan off by one", block_wrong("scan_off_by_one", off_by_one=True), OFF_BY_ONE),
    ),
))

# ================================================================================================ 8.5b decoding step


def step_inputs(case: Case, device: torch.device) -> dict[str, Any]:
    gen = generator(case)
    Bsz, Dm, N = case["B"], case["D"], case["N"]
    dt = case.dtype
    state = randn(gen, Bsz, N, Dm).to(device).transpose(1, 2)  # float32, as mamba-ssm keeps it
    inputs: dict[str, Any] = {
        "state": state if case.get("noncontiguous") else state.contiguous(),
        "x": randn(gen, Bsz, Dm).to(device, dt),
        "dt": (0.7 * randn(gen, Bsz, Dm) - 1.0).to(device, dt),
        "A": (s4d_real_A(Dm, N) * torch.exp(0.3 * randn(gen, Dm, N))).to(device),
        "B": randn(gen, Bsz, N).to(device, dt),
        "C": randn(gen, Bsz, N).to(device, dt),
    }
    if case.get("skip"):
        inputs["D"] = randn(gen, Dm).to(device)
    if case.get("gate"):
        inputs["z"] = randn(gen, Bsz, Dm).to(device, dt)
    if case.get("bias"):
        inputs["dt_bias"] = (0.5 * randn(gen, Dm) - 0.5).to(device)
    if case.get("softplus"):
        inputs["dt_softplus"] = True
    else:
        inputs["dt"] = F.softplus(inputs["dt"].float()).to(dt)
    return inputs


def step_wrong(name: str, **mistakes: Any) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """ssm_step(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus) -> (out, new_state): one step of scan_core's
    scan from `state` (mistakes as scan_core's; off_by_one: out reads the old state)."""
    disc = mistakes.pop("disc", "right")
    off_by_one = mistakes.pop("off_by_one", False)
    undecayed = mistakes.pop("undecayed", False)

    def step(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
        d = _step_size(dt[..., None], dt_bias, dt_softplus, mistakes.get("softplus", "right"),
                       mistakes.get("bias", "right"))  # [B, D, 1]
        deltaA, deltaB_u = _discretized(x[..., None], d, A, B[..., None], disc)  # [B, D, 1, N]
        old = state.float()
        new = (old if undecayed else deltaA[:, :, 0] * old) + deltaB_u[:, :, 0]
        out = torch.einsum("bdn,bn->bd", old if off_by_one else new, C.float())
        if D is not None and mistakes.get("skip", True):
            out = out + D.float() * x.float()
        if z is not None and mistakes.get("gate", "silu") != "none":
            zf = z.float()
            out = out * (torch.sigmoid(zf) if mistakes.get("gate") == "sigmoid" else F.silu(zf))
        return out.to(x.dtype), new

    return _named(step, name)


# No "state kept in the inputs' dtype" mistake here: mamba-ssm's selective_state_update stores the new state in the
# state tensor's own dtype, and Mamba.allocate_inference_cache makes that the model's dtype (bf16 for a bf16 model);
# one step rounded to bf16 is also 2^-9 off, far inside any tolerance. The grader accepts new_state in float32 or
# the inputs' dtype (TensorOut(state=True)).


def _reference_step(inputs: dict[str, Any], case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    from course_utils.refs import selective_state_update

    i = inputs
    return selective_state_update(i["state"], i["x"], i["dt"], i["A"], i["B"], i["C"], D=i.get("D"), z=i.get("z"),
                                  dt_bias=i.get("dt_bias"), dt_softplus=i.get("dt_softplus", False))


register(Exercise(
    id="8.5b",
    fn_name="ssm_step",
    signature="ssm_step(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False) -> (out, new_state)",
    cases=lambda device, dtypes: case_list({}, [
        {"B": 2, "D": 16, "N": 16, "skip": True, "gate": True, "bias": True, "softplus": True},
        {"B": 1, "D": 8, "N": 8},
        {"B": 3, "D": 12, "N": 16, "softplus": True, "noncontiguous": True},
    ], 852, dtypes, half={"B": 2, "D": 16, "N": 16, "skip": True, "gate": True, "bias": True, "softplus": True}),
    make_inputs=step_inputs,
    expected=_reference_step,
    output=TupleOut("(out, new_state)", (TensorOut("out", "BD"), TensorOut("new_state", STATE_LAYOUT, state=True))),
    positional=("state", "x", "dt", "A", "B", "C"),
    input_layouts={"state": STATE_LAYOUT, "x": "BD", "dt": "BD", "z": "BD"},
    diagnose=nonfinite_match,
    nan_hint=NAN_HINT,
    extra_checks=(forbid(),),
    mistakes=(
        Mistake("output from the old state", step_wrong("old_state", off_by_one=True),
                "the output reads the state before this step's update: update first (h = Ā h + B̄ x), then "
                "out = C · h"),
        Mistake("state not decayed", step_wrong("undecayed", undecayed=True),
                "the old state is not decayed: h = exp(Δ A) ⊙ h + Δ B x"),
        Mistake("missing D skip", step_wrong("no_skip", skip=False), NO_SKIP),
        Mistake("z gate with sigmoid", step_wrong("gate_sigmoid", gate="sigmoid"), GATE_SIGMOID),
        Mistake("dt without softplus", step_wrong("no_softplus", softplus="none"),
                "Δ without softplus: with dt_softplus=True the step size is softplus(dt + dt_bias), which keeps it "
                "positive (§3.2: τ_Δ = softplus)"),
        Mistake("missing dt_bias", step_wrong("no_bias", bias="none"),
                "missing dt_bias: the step size is dt + dt_bias[d], put through softplus when dt_softplus=True "
                "(the bias is added first)"),
        Mistake("exact ZOH for B", step_wrong("zoh_b", disc="zoh_b"), ZOH_B),
    ),
))

