"""generic.py makes only the mistakes that apply to an exercise, decided from its declared output layout and its
first argument: each made mistake is rejected by the grader with what its `says` promises, and the ones left out
would have crashed inside generic.py's own helper or been correct code."""

from __future__ import annotations

import pytest
import torch

from course_utils.grading import Exercise, TensorOut, TupleOut, grade
from course_utils.grading.generic import CPU, generic_mistakes
from course_utils.grading.spec import Case

ALWAYS = ["zeros", "output + 0.1% noise", "returns None", "returns float64", "casts bf16 input to fp32",
          "wrong device"]
ON_A_TENSOR = ["mutates its input", "raises inside"]


def _cases(*shapes: tuple[int, ...], noncontiguous: bool = False):
    def cases(device, dtypes):
        out = [Case({"shape": s, "dtype": torch.float32}, seed=i) for i, s in enumerate(shapes)]
        if noncontiguous:
            out.append(Case({"shape": shapes[0], "dtype": torch.float32, "noncontiguous": True}, seed=99))
        return out + [Case({"shape": shapes[0], "dtype": d}, seed=50) for d in dtypes if d != torch.float32]

    return cases


def _inputs(case, device):
    gen = torch.Generator().manual_seed(case.seed)
    shape = case["shape"]
    if case.get("noncontiguous") and len(shape) >= 2:
        x = torch.randn(*reversed(shape), generator=gen).to(device, case.dtype).permute(*reversed(range(len(shape))))
    else:
        x = torch.randn(*shape, generator=gen).to(device, case.dtype)
    return {"x": x}


def _exercise(ex_id: str, layout: str, *shapes: tuple[int, ...], output=None, **kwargs) -> Exercise:
    return Exercise(
        id=ex_id, fn_name="double", signature="double(x) -> y", cases=kwargs.pop("cases", _cases(*shapes, **kwargs)),
        make_inputs=kwargs.pop("make_inputs", _inputs), expected=lambda inputs, case: 2 * inputs["x"],
        output=output or TensorOut("y", layout), positional=("x",), mistakes=())


def double(x):
    return 2 * x


def _names(ex: Exercise, fn=double) -> list[str]:
    return [m.name for m in generic_mistakes(ex, fn)]


def test_a_bthv_output_gets_every_mistake():
    ex = _exercise("g.1", "BTHV", (2, 8, 3, 4), noncontiguous=True)
    assert _names(ex) == ALWAYS + ON_A_TENSOR + ["fails on non-contiguous inputs", "returns a tuple, tensor expected",
                                                 "head-first [B,H,T,D]", "NaN", "output reversed in time"]


def test_a_matrix_output_gets_no_layout_mistakes():
    """[N, N]: no B, T or H axis to swap, no (0, 5, 1) to put a NaN at, no time to reverse; a .view() of a 2-D
    argument to its own shape works on any strides (correct code, not a mistake)."""
    ex = _exercise("g.2", "NN", (6, 6), noncontiguous=True)
    assert _names(ex) == ALWAYS + ON_A_TENSOR + ["returns a tuple, tensor expected"]


def test_a_kernel_output_keeps_its_time_reversal():
    assert _names(_exercise("g.3", "T", (40,)))[-1] == "output reversed in time"
    assert _names(_exercise("g.4", "HT", (3, 40)))[-1] == "output reversed in time"


def test_a_non_tensor_first_argument_gets_no_argument_mistakes():
    def inputs(case, device):
        return {"x": case["shape"][0]}

    ex = Exercise(id="g.5", fn_name="eye", signature="eye(n) -> y", cases=_cases((5, 5)), make_inputs=inputs,
                  expected=lambda inputs, case: torch.eye(inputs["x"]), output=TensorOut("y", "NN"),
                  positional=("x",))
    names = _names(ex, lambda n: torch.eye(n))
    assert not set(names) & {"mutates its input", "raises inside", "fails on non-contiguous inputs"}, names


def test_mamba_layout_reverses_time_along_l():
    """[B, D, L]: time is last, so the reversal flips L (dim 2), not the channels."""
    ex = _exercise("g.6", "BDL", (2, 8, 16))
    flipped = next(m for m in generic_mistakes(ex, double) if m.name == "output reversed in time")
    x = torch.randn(2, 8, 16)
    assert torch.equal(flipped.wrong_fn(x), (2 * x).flip(2))


def test_the_main_output_of_a_tuple_decides():
    ex = _exercise("g.7", None, (6, 6), output=TupleOut("(y, s)", (TensorOut("y", "NN"), TensorOut("s", "BTHV"))))
    assert "NaN" not in _names(ex, lambda x: (2 * x, 2 * x))


@pytest.mark.parametrize("layout, shape", [("BTHV", (2, 8, 3, 4)), ("BTH", (2, 8, 3)), ("NN", (6, 6)),
                                           ("T", (40,)), ("HT", (4, 100)), ("BDL", (2, 8, 16)), ("BLD", (2, 16, 8))],
                         ids=lambda x: x if isinstance(x, str) else "")
def test_every_made_mistake_is_rejected_with_what_it_says(layout, shape):
    ex = _exercise(f"g.{layout}", layout, shape, noncontiguous=len(shape) >= 3)
    for m in generic_mistakes(ex, double):
        with pytest.raises(AssertionError) as failure:
            grade(ex, m.wrong_fn, quiet=True, **(m.options or CPU))
        message = str(failure.value)
        if m.name not in ("raises inside", "fails on non-contiguous inputs"):  # these raise there on purpose
            assert "generic.py" not in message, (m.name, message)  # not a crash in the helper that made it
        assert all(piece in message for piece in m.expected_message()), (m.name, m.expected_message(), message)
