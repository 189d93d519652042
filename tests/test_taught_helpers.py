"""Helpers taught once, kept once (d2l's "#@save"): a helper that a notebook teaches is written out in that
solution notebook and kept in course_utils for the later notebooks, which import it.

For each kept helper: the notebook's definition (found with `ast` in the solution's code cells and run on its
own, in a namespace with torch, F, math, phi and DEVICE) and the module's have the same signature (names,
kinds, defaults; type hints are not compared) and give the same outputs on seeded inputs of a few shapes;
the module's docstring names the notebook; no later notebook defines it again, and every later notebook
that uses it imports it from the module.
"""

import ast
import inspect
import math
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F

from course_utils import feature_maps, get_env, inputs

SOLUTIONS = Path(__file__).resolve().parents[1] / "solutions"


def _x(*shape, seed=0, dtype=torch.float32):
    """Seeded values spread over both branches of elu (large negatives included)."""
    return (4 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))).to(dtype)


# helper, the notebook that teaches it, calls as (args, kwargs): a few shapes, dtypes and options
TAUGHT = {
    "phi": (feature_maps.phi, "01_kernel_trick", [
        ((_x(7),), {}),
        ((_x(2, 5, 3, 4, seed=1),), {}),
        ((_x(3, 2, seed=2, dtype=torch.float64),), {}),
        ((torch.tensor([-200.0, -1.0, 0.0, 1e-8, 30.0]),), {}),
        ((_x(0, 4),), {}),
    ]),
    "make_inputs": (inputs.make_inputs, "02_causal_rnn", [
        ((2, 50, 3, 16, 24), {}),
        ((1, 7, 1, 4, 5), {"seed": 3}),
        ((1, 9, 2, 8, 8), {"seed": 1, "dtype": torch.float64}),
        ((2, 3, 1, 4, 6), {"feature_map": None, "device": "cpu"}),
        ((1, 5, 2, 3, 3), {"feature_map": torch.tanh, "seed": 2}),
    ]),
}


def _trees(notebook: str) -> list[ast.Module]:
    nb = nbformat.read(SOLUTIONS / f"{notebook}.ipynb", as_version=4)
    return [ast.parse(c.source) for c in nb.cells if c.cell_type == "code"]


def _defines(tree: ast.Module, name: str) -> bool:
    """A top-level def of `name`, or an assignment to it."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return True
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return True
    return False


def notebook_definition(notebook: str, name: str):
    """The function `name` as the solution notebook writes it, executed on its own."""
    nb = nbformat.read(SOLUTIONS / f"{notebook}.ipynb", as_version=4)
    found = [ast.get_source_segment(c.source, node) for c in nb.cells if c.cell_type == "code"
             for node in ast.parse(c.source).body if isinstance(node, ast.FunctionDef) and node.name == name]
    assert len(found) == 1, f"{notebook} should define {name} exactly once; found {len(found)} definitions"
    namespace = {"torch": torch, "F": F, "math": math, "phi": feature_maps.phi, "DEVICE": get_env().device}
    exec(compile(found[0], f"{notebook}.ipynb:{name}", "exec"), namespace)
    return namespace[name]


def _same(a, b) -> bool:
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)


def _signature(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", list(TAUGHT))
def test_the_notebook_and_the_module_agree(name):
    kept, notebook, calls = TAUGHT[name]
    taught = notebook_definition(notebook, name)
    assert _signature(taught) == _signature(kept), f"{name}: {notebook} and {kept.__module__} differ in signature"
    for args, kwargs in calls:
        got, want = taught(*args, **kwargs), kept(*args, **kwargs)
        assert _same(got, want), f"{name}{tuple(getattr(a, 'shape', a) for a in args)} {kwargs}: the copies differ"


@pytest.mark.parametrize("name", list(TAUGHT))
def test_the_module_says_where_it_was_taught(name):
    kept, notebook, _ = TAUGHT[name]
    assert f"Taught in {notebook}" in inspect.getdoc(kept)


@pytest.mark.parametrize("name", list(TAUGHT))
def test_later_notebooks_import_it_instead_of_redefining_it(name):
    kept, notebook, _ = TAUGHT[name]
    later = sorted(p.stem for p in SOLUTIONS.glob("*.ipynb") if p.stem > notebook)
    assert later, f"no notebook after {notebook}"
    for other in later:
        trees = _trees(other)
        again = any(_defines(t, name) for t in trees)
        assert not again, f"{other} defines {name} again: import it from {kept.__module__}"
        used = any(isinstance(n, ast.Name) and n.id == name for t in trees for n in ast.walk(t))
        imported = any(isinstance(n, ast.ImportFrom) and n.module == kept.__module__ and
                       any(a.name == name and a.asname is None for a in n.names) for t in trees for n in ast.walk(t))
        assert imported or not used, f"{other} uses {name} without importing it from {kept.__module__}"


def test_no_notebook_defines_its_own_relative_error():
    """One relative error in the course: course_utils.conventions.relative_rms_error."""
    for path in sorted(SOLUTIONS.glob("*.ipynb")):
        for tree in _trees(path.stem):
            names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
            assert not [n for n in names if "rel" in n and "err" in n], f"{path.name} defines {names}"
