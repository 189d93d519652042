"""course_utils.notebook_functions keeps a cell's definitions and drops what would compute or run."""

import ast
import types

import pytest

from course_utils.authoring import SOLUTIONS
from course_utils.notebook_functions import definitions, graded_functions, load_namespace

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


def _globals_read(fn) -> set[str]:
    """The global names a function's code (and the code of functions nested in it) reads: LOAD_GLOBAL only, so
    attribute names (x.is_cuda) and locals are not counted."""
    import dis

    names, codes = set(), [fn.__code__]
    while codes:
        code = codes.pop()
        names |= {ins.argval for ins in dis.get_instructions(code) if ins.opname == "LOAD_GLOBAL"}
        codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return names


@pytest.mark.parametrize("notebook", sorted(p.name for p in SOLUTIONS.glob("*.ipynb")))
def test_every_global_a_graded_function_reads_is_in_the_loaded_namespace(notebook):
    """load_namespace keeps imports, functions, classes and literal constants, and the instructor's gradebook loads
    students' notebooks the same way: a graded function that reads any other global (a dict built from torch and
    tl dtypes, say) works in the notebook but raises NameError when graded from the file — only on the code path
    that reads it, so possibly only on a GPU. Every global read by a graded function, or by the functions and
    kernels it calls, must resolve (the notebook's own plotting helpers may read its variables)."""
    import builtins

    import triton

    namespace = load_namespace(SOLUTIONS / notebook)
    graded = {fn.__name__ for fns in graded_functions(SOLUTIONS / notebook).values() for fn in fns}
    assert graded or notebook.startswith("00"), "no graded functions found"
    todo, seen, missing = sorted(graded), set(), {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        obj = namespace[name]
        fn = obj.fn if isinstance(obj, triton.runtime.jit.JITFunction) else obj
        if not isinstance(fn, types.FunctionType) or fn.__module__ != namespace["__name__"]:
            continue  # a class or an imported function
        for g in _globals_read(fn):
            if g in namespace:
                todo.append(g)
            elif not hasattr(builtins, g):
                missing.setdefault(name, []).append(g)
    assert not missing, f"{notebook}: graded code reads globals that load_namespace does not keep: {missing}"
