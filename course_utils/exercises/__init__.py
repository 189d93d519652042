"""The course's exercises, one module per operation family; importing this package registers all of them.

| module            | family                                                             | exercises        |
|-------------------|--------------------------------------------------------------------|------------------|
| attention         | softmax attention, linear attention with a feature map, random     | 1.1 1.2a 1.2b    |
|                   | features (FAVOR+, RFA)                                             | 1.3a 1.3b        |
| linear_attention  | causal linear attention: parallel, recurrent, step, backward,      | 2.1-2.4 3.1 3.3  |
|                   | chunkwise (loop, all chunks at once, normalised)                   | 3.4              |
| cost              | FLOP (and byte) models of the forms, the best chunk size           | 3.2 3.5          |
| gated             | gated forms: GLA's recurrence, parallel form (naive, log space),   | 4.1-4.4          |
|                   | chunkwise form with sub-chunks, the GLA layer                      |                  |
| retention         | retention (RetNet): the D decay mask, recurrent, chunkwise; simple | 5.1a 5.1b 5.1c   |
|                   | GLA with g = log gamma_h (to merge with gated)                     |                  |
| delta_rule        | the delta rule: recurrence, chunkwise WY / UT form, gated          | 5.2 5.3 5.4      |
| kernels           | Triton kernels: grids and masks, tl.dot, tl.cumsum, a first-order  | 6.1-6.3 6.3b     |
|                   | scan (tl.associative_scan), the fused recurrent and the chunked    | 6.4 6.5          |
|                   | (two kernels) linear-attention forward;                            |                  |
|                   | on a CPU in Triton's interpreter                                   |                  |
| kernels_gla       | Triton kernels for GLA: the fused recurrent forward, the chunked   | 6.6 6.7          |
|                   | forward as two kernels (chunk states, outputs in sub-blocks)       |                  |
| ssm               | state-space models (S4): continuous SSMs, discretisation (ZOH,     | 7.1a 7.1b 7.2    |
|                   | bilinear), HiPPO-LegS, the convolution kernel and its FFT          | 7.3a 7.3b 7.4    |
|                   | convolution, the diagonal (S4D) kernel as a Vandermonde product    |                  |
| selective_scan    | Mamba's selective scan: selection and discretisation, the          | 8.1a 8.1b 8.2    |
|                   | sequential scan, the scan operator and a log-depth scan, a Triton  | 8.3a-8.3c 8.4    |
|                   | kernel, the Mamba block and one decoding step (vs mamba-ssm)       | 8.5a 8.5b        |
| cases             | seeded inputs and case lists shared by the families                | —                |

A family owns its inputs, its reference (through course_utils.refs), its output structure and its
catalogue of mistakes; a new exercise in a family is a `dataclasses.replace(FAMILY_SPEC, id=..., ...)`
registration. `grade("2.2", fn)` is what notebooks call; each call's outcome is recorded by
course_utils.progress (passed, failed, not attempted) for `progress()` and `make check-mine`.
"""

from __future__ import annotations

from typing import Any, Callable

from course_utils.exercises import (  # noqa: F401  (importing a family registers its exercises)
    attention,
    cost,
    delta_rule,
    gated,
    kernels,
    kernels_gla,
    linear_attention,
    retention,
    selective_scan,
    ssm,
)
from course_utils.grading import REGISTRY, Exercise, Result
from course_utils.grading import engine as _engine
from course_utils.progress import FAILED, NOT_ATTEMPTED, PASSED, record

EXERCISES = REGISTRY


def get(exercise_id: str) -> Exercise:
    """The Exercise registered under `exercise_id` (ValueError naming the known ids otherwise)."""
    if exercise_id not in REGISTRY:
        raise ValueError(f"unknown exercise {exercise_id!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[exercise_id]


def grade(exercise_id: str, fn: Callable[..., Any], **options: Any) -> Result:
    """Check `fn` against the reference on the exercise's seeded cases; print two lines on success.

    options: device (str | torch.device) and dtypes (list of torch dtypes) override the environment's;
    quiet=True prints nothing on success.
    Raises AssertionError with a diagnosis on the first failing case; re-raises NotImplementedError.
    Either way the outcome is recorded locally (course_utils.progress; never in the way of grading).
    """
    ex = get(exercise_id)
    unknown = set(options) - {"device", "dtypes", "quiet"}
    if unknown:
        raise TypeError(f"grade() got unknown options {sorted(unknown)}; allowed: device, dtypes, quiet")
    fn_name = getattr(fn, "__name__", type(fn).__name__)
    try:
        result = _engine.grade(ex, fn, **options)
    except NotImplementedError:  # the exercise is still the stub
        record(ex.id, NOT_ATTEMPTED, function=fn_name)
        raise
    except AssertionError as failure:
        record(ex.id, FAILED, str(failure), fn_name)
        raise
    record(ex.id, PASSED, function=fn_name)
    return result
