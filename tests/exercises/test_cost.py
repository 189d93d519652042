"""The cost family (3.2): the solution passes, every catalogued mistake is rejected, and the reference
count (FlopCounterMode on meta tensors) equals the closed form."""

from __future__ import annotations

import pytest
from conftest import assert_rejected, assert_solution_passes, solution

from course_utils.exercises.cost import count_chunkwise_flops

IDS = ["3.2"]


def test_solution_passes(ex_id, capsys):  # one test per id in IDS (conftest.pytest_generate_tests)
    assert_solution_passes(ex_id, capsys)


def test_mistake_is_rejected(ex_id, mistake):  # one test per catalogued mistake
    assert_rejected(ex_id, mistake)


@pytest.mark.parametrize("T, C, K, V", [(64, 16, 16, 16), (96, 8, 32, 16), (1024, 32, 128, 64)],
                         ids=lambda x: str(x))
def test_flop_counter_matches_the_closed_form(T, C, K, V):
    assert count_chunkwise_flops(T, C, K, V) == solution("3.2")(T, C, K, V)
    assert count_chunkwise_flops(T, C, K, V) == (T // C) * (2 * C * C * (K + V) + 4 * C * K * V)
