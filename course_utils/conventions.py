"""The one set of conventions every notebook, reference adapter and grader follows.

fla and mamba-ssm disagree with each other (and with themselves) on layout, gate names, scale and
normalisation defaults. The course never exposes those differences: students write functions in the
convention below, and `course_utils.refs` converts to and from each library.

| quantity            | convention                                                                   |
|---------------------|------------------------------------------------------------------------------|
| q, k                | [B, T, H, K]  (batch, time, head, key dim) — sequence first, as fla kernels  |
| v, o                | [B, T, H, V]                                                                 |
| scale               | explicit argument, default K ** -0.5, multiplies q (q·k * scale)             |
| feature map φ       | applied by the caller; adapters take q, k already mapped                     |
| gates g             | log space, g <= 0, decay = exp(g); GLA g: [B, T, H, K]; scalar g: [B, T, H]  |
| beta (delta rule)   | [B, T, H], in (0, 1)                                                         |
| recurrent state S   | [B, H, K, V]  (S_t = decay * S_{t-1} + k_t v_t^T, o_t = scale * q_t^T S_t)     |
| normaliser state z  | [B, H, K]     (z_t = z_{t-1} + k_t)                                           |
| returns             | (output, final_state) wherever a state exists; final_state is never None     |
| dtype               | float32 by default; fp16/bf16 only on GPUs that support them                 |
| selective scan      | mamba-ssm's shapes: u, delta: [B, D, L]; A: [D, N]; B, C: [B, N, L]; D: [D]  |
|                     | state [B, D, N]; A is discretised exactly (exp(delta*A)), B as delta*B        |
| SSD (Mamba-2)       | x: [B, L, H, P]; dt: [B, L, H]; A: [H]; B, C: [B, L, G, N]; state [B, H, P, N] |
| continuous SSM      | A: [N, N], B: [N, 1], C: [1, N], step dt; discretisations return (Ab, Bb)     |

The state is *inclusive*: o_t reads S_t, which already contains k_t v_t^T (Katharopoulos et al. 2020,
Eq. 8), so a token attends to itself.
"""

from __future__ import annotations

import math

import torch

# ---------------------------------------------------------------------------------------------- layouts
# One notation: a layout is a string of one letter per dimension ("BTHK"); messages and docstrings show
# it as "[B, T, H, K]" (layout_str). Graders use the letters to name positions ("b=0, t=5, h=1").
QK_LAYOUT = "BTHK"  # q, k (and GLA's per-channel gate g)
VO_LAYOUT = "BTHV"  # v, o
STATE_LAYOUT = "BHKV"  # the recurrent state S
NORMALIZER_LAYOUT = "BHK"  # the normaliser state z
GATE_LAYOUT = "BTH"  # a scalar-per-head gate or beta

TENSOR_LAYOUTS = {"q": QK_LAYOUT, "k": QK_LAYOUT, "v": VO_LAYOUT, "o": VO_LAYOUT, "g": QK_LAYOUT,
                  "beta": GATE_LAYOUT, "initial_state": STATE_LAYOUT, "state": STATE_LAYOUT,
                  "final_state": STATE_LAYOUT, "z": NORMALIZER_LAYOUT}
"""The layout of every tensor argument the course's functions take, by argument name."""


def layout_str(layout: str) -> str:
    """"BTHK" -> "[B, T, H, K]": how layouts read in messages and docstrings."""
    return "[" + ", ".join(layout) + "]"


# ---------------------------------------------------------------------------------------------- scale, eps


def default_scale(head_dim: int) -> float:
    """The scale used when a function is called with scale=None: 1 / sqrt(K)."""
    return 1.0 / math.sqrt(head_dim)


def resolve_scale(scale: float | None, head_dim: int) -> float:
    """`scale` if given, else the default K ** -0.5."""
    return default_scale(head_dim) if scale is None else scale


EPS = 1e-10
"""The guard added to a linear-attention normaliser (o / (scale q.z + EPS)): fla's value, in its naive and
kernel forms alike, so references and graders agree to the last bit."""


# ---------------------------------------------------------------------------------------------- errors


def relative_rms_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want||_2 / ||want||_2 over all entries, in float64 (absolute RMS when want is all zeros).

    The one "relative error" of the course: graders, notebooks, tests and reports all quote this number.
    """
    g, w = got.detach().double().cpu(), want.detach().double().cpu()
    denom = w.norm().item()
    diff = (g - w).norm().item()
    return diff / denom if denom > 0 else diff / math.sqrt(max(w.numel(), 1))


def max_row_relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """The worst row's relative RMS error (rows = every index but the last dimension).

    Beside relative_rms_error: a bug confined to a few rows (one head, one time step) can hide in an RMS
    over the whole tensor, never in its worst row. A row's error is relative to the tensor's RMS row norm,
    so rows whose expected value is near zero do not blow it up.
    """
    g, w = got.detach().double().cpu(), want.detach().double().cpu()
    if w.dim() == 0:
        return relative_rms_error(g, w)
    rows_diff = (g - w).reshape(-1, w.shape[-1]).norm(dim=-1)
    rms_row = w.reshape(-1, w.shape[-1]).norm(dim=-1).pow(2).mean().sqrt().item()
    worst = rows_diff.max().item() if rows_diff.numel() else 0.0
    return worst / rms_row if rms_row > 0 else worst


CONVENTIONS_TABLE = __doc__.split("\n\n")[2]
"""The table above, kept equal to the README's (tests/test_conventions.py)."""
