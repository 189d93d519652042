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

LAYOUT = "[B, T, H, D]"
STATE_LAYOUT = "[B, H, K, V]"


def default_scale(head_dim: int) -> float:
    """The scale used when a function is called with scale=None: 1 / sqrt(K)."""
    return 1.0 / math.sqrt(head_dim)


CONVENTIONS_TABLE = __doc__.split("\n\n")[2]
