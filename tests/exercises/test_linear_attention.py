"""The linear-attention family (2.1-2.4, 3.1, 3.3): solutions pass, every catalogued mistake is rejected
with its hint, and correct code written differently passes too."""

from __future__ import annotations

import torch
from conftest import assert_rejected, assert_solution_passes, solution

from course_utils.exercises import grade
from course_utils.grading.generic import BF16, CPU

IDS = ["2.1", "2.2", "2.3", "2.4", "3.1", "3.3"]


def test_solution_passes(ex_id, capsys):  # one test per id in IDS (conftest.pytest_generate_tests)
    assert_solution_passes(ex_id, capsys)


def test_solution_passes_in_bf16(ex_id, capsys):
    grade(ex_id, solution(ex_id), **BF16)
    assert "bfloat16" in capsys.readouterr().out


def test_mistake_is_rejected(ex_id, mistake):  # one test per catalogued mistake
    assert_rejected(ex_id, mistake)


def _bf16_everywhere(q, k, v, scale=None, initial_state=None, normalize=False):
    """A loop that keeps everything, the state too, in the input dtype."""
    S = q.new_zeros(q.shape[0], q.shape[2], q.shape[3], v.shape[-1]) if initial_state is None else initial_state
    s = q.shape[-1] ** -0.5 if scale is None else scale
    outs = []
    for t in range(q.shape[1]):
        S = S + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(s * torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    return torch.stack(outs, 1), S


def test_a_plain_bf16_loop_passes():
    """A student who keeps everything in bf16 (state too) is within the bf16 tolerance at T=100."""
    grade("2.4", _bf16_everywhere, quiet=True, **BF16)


def test_the_recurrent_solution_passes_the_backward_exercise_and_back():
    """2.2 and 2.4 grade the same function: the solution of either passes the other."""
    for fn in [solution("2.2")] + [f for f in solution_functions_of("2.4")]:
        grade("2.2", fn, quiet=True, **CPU)
        grade("2.4", fn, quiet=True, **CPU)


def solution_functions_of(ex_id):
    from conftest import solution_functions

    return solution_functions()[ex_id]
