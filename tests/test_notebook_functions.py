"""course_utils.notebook_functions keeps a cell's definitions and drops what would compute or run."""

import ast

from course_utils.notebook_functions import definitions

CELL = '''
import torch
PRECISION = tl.constexpr("ieee")
BLOCK = 128
SIZES = (16, 32)
DEVICE = torch.device("cpu")
SCALE = tl.constexpr(compute())
lower = 3
def f(x):
    return x
print("runs")
'''


def test_definitions_keep_imports_functions_and_literal_constants():
    kept = [ast.unparse(n).splitlines()[0] for n in definitions(CELL).body]
    assert kept == ["import torch", "PRECISION = tl.constexpr('ieee')", "BLOCK = 128", "SIZES = (16, 32)",
                    "def f(x):"]
