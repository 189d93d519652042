"""Feature maps φ of linear attention, kept once for every notebook after the one that teaches them.

d2l's "#@save" idea: each function here is written out in the notebook that teaches it (its docstring says
where), and tests/test_taught_helpers.py checks that the notebook's copy and this one agree. Later
notebooks import it from here instead of re-defining it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def phi(x: torch.Tensor) -> torch.Tensor:
    """elu(x) + 1: the positive feature map of Katharopoulos et al. 2020 (§3.2.1).

    Taught in 01_kernel_trick (§ "The kernel trick"). x: any shape; returns the same shape, every entry > 0.
    """
    return F.elu(x) + 1
