"""A notebook's functions without running the notebook: what each graded cell grades.

Tests take the correct implementation of every exercise from its solution notebook (so a solution and its
test never drift apart), and an instructor's tools read students' notebooks the same way. Running the whole
notebook would also run its benchmarks and figures; instead every code cell's *definitions* — imports,
functions, classes and UPPER_CASE literal constants (also as `tl.constexpr(literal)`, the only globals a Triton
kernel compiled for a GPU may read) — are executed in one fresh namespace, in notebook order, and
each `grade("N.M", fn)` call names the function it grades.
"""

from __future__ import annotations

import ast
import linecache
from pathlib import Path
from typing import Any, Callable

import nbformat

_KEPT = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)
_CONSTEXPR_CALLS = ("tl.constexpr", "triton.language.constexpr")


def _is_constant_assignment(node: ast.stmt) -> bool:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    if not targets or not all(isinstance(t, ast.Name) and t.id.isupper() for t in targets):
        return False
    value = node.value
    if (isinstance(value, ast.Call) and ast.unparse(value.func) in _CONSTEXPR_CALLS and len(value.args) == 1
            and not value.keywords):
        value = value.args[0]  # PRECISION = tl.constexpr("ieee"): a literal that Triton kernels may read as a global
    try:  # a constant (a literal, or a container of literals), not a computation
        ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def definitions(source: str) -> ast.Module:
    """The definitions of one cell's source (IPython magics and shell lines are dropped)."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    tree = ast.parse("\n".join(lines))
    tree.body = [n for n in tree.body if isinstance(n, _KEPT) or _is_constant_assignment(n)]
    return tree


def grade_calls(source: str) -> list[tuple[str, str]]:
    """(exercise id, function name) of every grade("N.M", fn, ...) call in a cell."""
    calls = []
    for node in ast.walk(ast.parse("\n".join(ln for ln in source.splitlines() if not ln.lstrip().startswith("%")))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "grade"
                and len(node.args) >= 2 and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[1], ast.Name)):
            calls.append((str(node.args[0].value), node.args[1].id))
    return calls


def load_namespace(path: str | Path) -> dict[str, Any]:
    """Execute the definitions of every code cell of a notebook in one fresh namespace.

    Each cell's source is registered in linecache under the name its code is compiled with (as IPython does), so
    that inspect.getsource works on what it defines: Triton's @triton.jit reads its function's source when it is
    applied (and refuses a function without one when kernels compile for a GPU).
    """
    nb = nbformat.read(str(path), as_version=4)
    namespace: dict[str, Any] = {"__name__": f"notebook:{Path(path).stem}"}
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        filename = f"{path}#cell{i}"
        text = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        linecache.cache[filename] = (len(text), None, [line + "\n" for line in text.splitlines()], filename)
        code = compile(definitions(cell.source), filename, "exec")
        exec(code, namespace)  # noqa: S102 — the course's own notebooks, or a submission in a sandboxed worker
    return namespace


def graded_functions(path: str | Path) -> dict[str, list[Callable[..., Any]]]:
    """{exercise id: [the functions its graded cells grade]} for one notebook."""
    nb = nbformat.read(str(path), as_version=4)
    namespace = load_namespace(path)
    graded: dict[str, list[Callable[..., Any]]] = {}
    for cell in nb.cells:
        if cell.cell_type == "code":
            for ex_id, name in grade_calls(cell.source):
                if name not in namespace:
                    raise LookupError(f"{path}: grade({ex_id!r}, {name}) names no function the notebook defines")
                graded.setdefault(ex_id, []).append(namespace[name])
    return graded
