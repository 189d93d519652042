"""The cost family (3.2, 3.5): the solutions pass, every catalogued mistake is rejected, the reference count
(FlopCounterMode on meta tensors) equals the closed form, and the closed-form C* minimises the model."""

from __future__ import annotations

import pytest
from conftest import solution
from family_tests import (  # noqa: F401  (collected here, parametrized by IDS)
    test_mistake_is_rejected,
    test_solution_passes,
)

from course_utils.exercises.cost import count_chunkwise_flops

IDS = ["3.2", "3.5"]


@pytest.mark.parametrize("T, C, K, V", [(64, 16, 16, 16), (96, 8, 32, 16), (1024, 32, 128, 64)],
                         ids=lambda x: str(x))
def test_flop_counter_matches_the_closed_form(T, C, K, V):
    assert count_chunkwise_flops(T, C, K, V) == solution("3.2")(T, C, K, V)
    assert count_chunkwise_flops(T, C, K, V) == (T // C) * (2 * C * C * (K + V) + 4 * C * K * V)


# ------------------------------------------------------------------ 3.5: the best chunk size, derived


def test_the_closed_form_minimises_the_model():
    """C* from the closed form is where the model t(C) (a real C, T / C chunks) is smallest: a golden-section
    search over C finds the same point, to 1e-6."""
    from course_utils.exercises.cost import _c_star_cases, _c_star_inputs, best_chunk_size_closed_form, model_time

    for case in _c_star_cases(None, None):
        inputs = _c_star_inputs(case, None)
        f = lambda C: model_time(C, inputs["T"], inputs["K"], inputs["V"], inputs["hardware"])  # noqa: E731
        lo, hi = 1e-3, 1e6
        for _ in range(200):
            m1, m2 = lo + (hi - lo) * 0.382, lo + (hi - lo) * 0.618
            lo, hi = (lo, m2) if f(m1) < f(m2) else (m1, hi)
        assert abs(lo / best_chunk_size_closed_form(**inputs) - 1) < 1e-6, case.label()


def test_cases_are_far_from_a_rounding_boundary():
    """The grader compares round(100 C*): every case's C* is at least 0.05 hundredths from a .5 boundary, so
    that a correct formula written in another order (other rounding errors) cannot land on the other side."""
    from course_utils.exercises.cost import _c_star_cases, _c_star_inputs, best_chunk_size_closed_form

    for case in _c_star_cases(None, None):
        x = 100 * best_chunk_size_closed_form(**_c_star_inputs(case, None))
        assert abs(x % 1 - 0.5) > 0.05, case.label()


def test_the_first_case_tells_every_wrong_derivation_apart():
    """On the first case every catalogued derivation gives its own number (or one shared only with mistakes of
    the same hint), so the grader names the right one at the first failure."""
    from course_utils.exercises import EXERCISES
    from course_utils.exercises.cost import _c_star_cases, _c_star_inputs, _hundredths, best_chunk_size_closed_form

    ex = EXERCISES["3.5"]
    inputs = _c_star_inputs(_c_star_cases(None, None)[0], None)
    right = _hundredths(best_chunk_size_closed_form(**inputs))
    seen = {}
    for m in ex.mistakes:
        value = _hundredths(m.wrong_fn(**inputs))
        assert value != right, m.name
        assert seen.setdefault(value, m.hint) == m.hint, f"{m.name} collides with another hint at {value}"


@pytest.mark.parametrize("variant", ["sqrt_b_over_a", "torch_scalar", "numpy", "balance_first"])
def test_best_chunk_size_written_otherwise_passes(variant):
    """Correct answers in other forms: sqrt(b / a) with T kept, a 0-d tensor, a numpy float, balance first."""
    import math

    import numpy as np
    import torch

    from course_utils.exercises import grade

    def best_chunk_size(T, K, V, hardware):
        P, W = hardware
        if variant == "sqrt_b_over_a":
            a, b = 2 * T * (K + V) / P, 2 * 2 * T * K * V / W
            return math.sqrt(b / a)
        if variant == "torch_scalar":
            return torch.sqrt(torch.tensor(2.0 * K * V / (K + V) * P / W, dtype=torch.float64))
        if variant == "numpy":
            return np.sqrt(np.float64(2) * K * V / (K + V) * P / W)
        return (P / W) ** 0.5 * (2 * K * V / (K + V)) ** 0.5

    grade("3.5", best_chunk_size, quiet=True, device="cpu")
