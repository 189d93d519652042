"""What an exercise is, as data: its cases, its output structure, its catalogue of mistakes.

An `Exercise` says how to build the inputs of a seeded `Case`, where the expected values come from
(course_utils.refs), what the student's function returns (`TensorOut` / `IntOut` / `TupleOut`), and the
`Mistake`s students make. A mistake is an implementation with that mistake: the grader runs it on the
failing case to recognise the student's output ("your output equals what a missing scale gives") and the
tests grade it to prove it is rejected with its hint. One list, two uses.

Exercises of one operation family share almost everything: a family module builds one spec and registers
each exercise with `dataclasses.replace(family_spec, id=..., fn_name=..., ...)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Union

import torch

if TYPE_CHECKING:
    from course_utils.grading.trial import Trial


@dataclass(frozen=True)
class TensorOut:
    """A tensor in what the function returns. layout: one letter per dim ("BTHV"), None if the rank varies."""

    name: str
    layout: str | None = None
    state: bool = False  # a recurrent state: float32 (as the kernels keep it) or the inputs' dtype


@dataclass(frozen=True)
class IntOut:
    """A Python int in what the function returns (e.g. a FLOP count)."""

    name: str


@dataclass(frozen=True)
class TupleOut:
    """A tuple in what the function returns; items are TensorOut / IntOut / TupleOut."""

    name: str
    items: tuple[Any, ...]


Output = Union[TensorOut, IntOut, TupleOut]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


@dataclass(frozen=True)
class Case:
    """One seeded test case. params are what make_inputs reads (B, T, H, dtype, flags, ...)."""

    params: dict[str, Any]
    seed: int = 0
    grad: bool = False  # also compare gradients of Exercise.grad_inputs in this case

    def __getitem__(self, key: str) -> Any:
        return self.params[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.params.get(key, default)

    @property
    def dtype(self) -> torch.dtype:
        return self.params.get("dtype", torch.float32)

    def label(self) -> str:
        """For people: "B=2 T=63 H=3 float32 non-contiguous inputs gradients"."""
        parts = []
        for key, value in self.params.items():
            if key == "dtype":
                parts.append(dtype_name(value))
            elif key == "noncontiguous":
                if value:
                    parts.append("non-contiguous inputs")
            else:
                parts.append(f"{key}={value}")
        if self.grad:
            parts.append("gradients")
        return " ".join(parts)


Hint = Union[str, Callable[[Case], str]]


@dataclass(frozen=True)
class Mistake:
    """One mistake students make, as an implementation that makes it.

    name      what the student did ("reads the state before updating it")
    wrong_fn  a function with the exercise's signature that makes exactly this mistake
    hint      what the grader says when a student's output matches wrong_fn's on the failing case (str, or
              case -> str); None for mistakes recognised another way (a shape, an exception, a gradient,
              an extra check), whose message the tests check through `says`
    says      the pieces the grader's message must contain when it rejects wrong_fn (default: the hint)
    options   grade() options the tests use for it (e.g. a bf16 dtype for a dtype mistake)
    """

    name: str
    wrong_fn: Callable[..., Any]
    hint: Hint | None = None
    says: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)

    def hint_for(self, case: Case) -> str | None:
        return self.hint(case) if callable(self.hint) else self.hint

    def expected_message(self) -> tuple[str, ...]:
        """What the tests look for in the grader's message."""
        if self.says:
            return self.says
        if isinstance(self.hint, str):
            return (self.hint,)
        raise ValueError(f"mistake {self.name!r}: a callable hint needs `says`")


@dataclass
class Failure:
    """What a spec's diagnose hook sees. kind: "shape", "value", "nan", "grad"."""

    kind: str
    name: str
    got: Any
    expected: Any
    trial: Trial
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def case(self) -> Case:
        return self.trial.case

    @property
    def inputs(self) -> dict[str, Any]:
        return self.trial.inputs


@dataclass(frozen=True)
class Exercise:
    """Everything the engine needs to know about one exercise.

    cases(device, dtypes) -> list[Case]         the seeded cases, cheapest and most telling first
    make_inputs(case, device) -> dict            every argument by name, built from torch.Generator(seed)
    expected(inputs, case) -> result             computed with course_utils.refs (differentiable if
                                                 grad_inputs is set); same structure as `output`
    output: Output | (case -> Output)            the structure and names of what the function returns
    positional: names passed positionally; the other entries of inputs go as keywords.
    mistakes: the catalogue (see Mistake); the diagnosis runs those with a hint on a failing case.
    run(trial, fn) -> result: a custom driver (e.g. call a step function token by token); the same driver
        runs the student's function and the catalogue's wrong ones.
    extra_checks: (trial, fn) -> None hooks run after all cases pass (how the function computes: a cost
        or loop check); they report through grading.fail().
    explain: failure -> str | None, the exercise's own picture of a wrong value (e.g. the student's block beside
        the expected one), added to every value failure's message whatever the hint.
    """

    id: str
    fn_name: str
    signature: str
    cases: Callable[[torch.device, list[torch.dtype]], list[Case]]
    make_inputs: Callable[[Case, torch.device], dict[str, Any]]
    expected: Callable[[dict[str, Any], Case], Any]
    output: Any
    positional: tuple[str, ...] = ()
    input_layouts: dict[str, str] = field(default_factory=dict)
    grad_inputs: tuple[str, ...] = ()
    run: Callable[..., Any] | None = None
    mistakes: tuple[Mistake, ...] = ()
    diagnose: Callable[[Failure], str | None] | None = None
    nan_hint: str = "overflow (exp of a large number?) or a division by zero?"
    extra_checks: tuple[Callable[..., None], ...] = ()
    exception_hint: Callable[[Case], str | None] | None = None
    # where the expected values come from when it is not a course_utils.refs call (else what refs ran)
    reference_name: str | None = None
    # prepended to value failures in gradient cases (e.g. "the forward pass is already wrong: fix 2.2")
    forward_note: str = ""
    explain: Callable[[Failure], str | None] | None = None

    def output_for(self, case: Case) -> Any:
        return self.output(case) if callable(self.output) else self.output


REGISTRY: dict[str, Exercise] = {}


def register(exercise: Exercise) -> Exercise:
    """Add an exercise to the registry (family modules call this at import)."""
    if exercise.id in REGISTRY and REGISTRY[exercise.id] is not exercise:
        raise ValueError(f"exercise {exercise.id} is registered twice")
    REGISTRY[exercise.id] = exercise
    return exercise
