"""Seeded inputs for the notebooks' own checks and figures, kept once for every notebook after the one that
teaches them.

d2l's "#@save" idea: each function here is written out in the notebook that teaches it (its docstring says
where), and tests/test_taught_helpers.py checks that the notebook's copy and this one agree. Later
notebooks import it from here instead of re-defining it. (The graders build their cases' inputs in
`course_utils.exercises.inputs`; this module is what a notebook cell calls.)
"""

from __future__ import annotations

from typing import Callable

import torch

from course_utils.env import get_env
from course_utils.feature_maps import phi


def make_inputs(
    B: int,
    T: int,
    H: int,
    K: int,
    V: int,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    feature_map: Callable[[torch.Tensor], torch.Tensor] | None = phi,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded q, k [B, T, H, K] and v [B, T, H, V]: standard normal, q and k passed through `feature_map`.

    Taught in 02_causal_rnn (the cell after the setup cell). The draws are made on the CPU from a generator
    seeded with `seed` (the same numbers on every machine), in the order q, k, v, then mapped, then moved to
    `device` (None: the notebook's device, `course_utils.get_env().device`) in `dtype`.
    feature_map: phi = elu + 1 by default (the course's linear attention takes q, k already mapped); None
    leaves them as drawn.
    """
    device = get_env().device if device is None else device
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(B, T, H, K, generator=g), torch.randn(B, T, H, K, generator=g)
    v = torch.randn(B, T, H, V, generator=g)
    if feature_map is not None:
        q, k = feature_map(q), feature_map(k)
    return tuple(x.to(device, dtype) for x in (q, k, v))
