"""tests/nbval_sanitize.cfg, read the way nbval reads it, makes a GPU run's graded output equal the CPU output
stored in the solutions (the grader's details line differs by device; a GPU prints compile notices)."""

import re
from pathlib import Path

import pytest
import torch
from nbval.plugin import get_sanitize_patterns

from course_utils.grading.engine import compile_notice

CFG = Path(__file__).parent / "nbval_sanitize.cfg"
CPU_OUTPUT = "✅ Exercise 1.1 passed: softmax_attention\n   details: against fla's naive reference, float32 …\n"


def sanitize(text: str) -> str:
    for regex, replace in get_sanitize_patterns(CFG.read_text()):  # nbval applies them in file order
        text = re.sub(regex, replace, text)
    return text


@pytest.mark.parametrize("dtypes", [(), (torch.float32,), (torch.bfloat16, torch.float32)],
                         ids=["no-notice", "one-notice", "two-notices"])
def test_gpu_output_sanitizes_to_the_cpu_output(dtypes):
    gpu = "".join(compile_notice(d) + "\n" for d in dtypes)
    gpu += CPU_OUTPUT.replace("fla's naive reference", "fla's fused_recurrent kernel")
    assert sanitize(gpu) == sanitize(CPU_OUTPUT) == "✅ Exercise 1.1 passed: softmax_attention\nDETAILS\n"


def test_notice_between_prints_keeps_both_prints():
    gpu = "autograd check ✓\n" + compile_notice(torch.float16) + "\n" + CPU_OUTPUT
    assert sanitize(gpu) == "autograd check ✓\n" + sanitize(CPU_OUTPUT)


def test_a_failing_output_still_differs():
    assert sanitize("compiling: x\n❌ Exercise 1.1 failed\n") != sanitize(CPU_OUTPUT)
