"""Seeded grading inputs and case lists in the course's layout, shared by every exercise family.

Expected values come from course_utils.refs; this module only builds what goes in.
"""

from __future__ import annotations

from typing import Any

import torch

from course_utils.grading import Case


def generator(case: Case, salt: int = 0) -> torch.Generator:
    """The case's own random stream (so a case's inputs never depend on the cases before it)."""
    return torch.Generator().manual_seed(1000 * case.seed + salt)


def randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    """Seeded standard normal on the CPU (move it with .to(device, dtype) afterwards)."""
    return torch.randn(*shape, generator=gen)


def bthd(gen: torch.Generator, case: Case, D: int, device: torch.device) -> torch.Tensor:
    """A seeded [B, T, H, D] tensor; a transposed view of [B, H, T, D] when the case is non-contiguous."""
    B, T, H = case["B"], case["T"], case["H"]
    if case.get("noncontiguous"):
        return randn(gen, B, H, T, D).to(device, case.dtype).transpose(1, 2)
    return randn(gen, B, T, H, D).to(device, case.dtype)


def case_list(base: dict[str, Any], rows: list[dict[str, Any]], seed: int, dtypes: list[torch.dtype],
              half: dict[str, Any] | list[dict[str, Any]] | None = None) -> list[Case]:
    """Cases {**base, **row} seeded seed, seed+1, ... (a row's "grad": True makes a gradient case), then for
    each `half` row one case {**base, **half} per reduced-precision dtype the environment supports (GPU only)."""
    def make(row: dict[str, Any], dtype: torch.dtype, seed: int) -> Case:
        row = dict(row)
        grad = bool(row.pop("grad", False))
        dims = {n: row.pop(n) for n in ("B", "T", "H") if n in row}  # labels read "B=2 T=63 H=3 ..."
        return Case({**dims, **base, "dtype": dtype, **row}, seed=seed, grad=grad)

    cases = [make(row, torch.float32, seed + i) for i, row in enumerate(rows)]
    reduced = [d for d in dtypes if d != torch.float32]
    halves = [] if half is None else [half] if isinstance(half, dict) else half
    for row in halves:
        for dt in reduced:
            cases.append(make(row, dt, seed + len(cases)))
    return cases
