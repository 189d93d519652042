"""Where a fresh GPU's wait in graded cells goes: every grade(...) call of the given solution notebooks, in
order, with each Triton compile and each autotuning run that takes over half a second, timed.

Usage (on a GPU machine with the course installed, or after `source .whl/gpu_env.sh`):
    python3 scripts/profile_first_grades.py [solutions/01_kernel_trick.ipynb ...]   (default: Labs 01-03)
Run it on a fresh machine (empty Triton cache) to see what a student's first graded cells wait for. Found
this way on an H200: fla's normalize=True autotunes a cumsum kernel over 48 configurations, ~14 s per shape.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import triton.runtime.autotuner as autotuner
import triton.runtime.jit as jit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT = ["solutions/01_kernel_trick.ipynb", "solutions/02_causal_rnn.ipynb", "solutions/03_chunkwise.ipynb"]


def log_compiles_and_autotuning() -> None:
    """Wrap Triton's compile and autotuner entry points so that each prints how long it took."""
    compile_once, tune = jit.JITFunction._do_compile, autotuner.Autotuner.run

    def timed_compile(self, *args, **kwargs):
        start = time.perf_counter()
        kernel = compile_once(self, *args, **kwargs)
        print(f"   compile {self.fn.__module__}.{self.fn.__name__}: {time.perf_counter() - start:.2f} s", flush=True)
        return kernel

    def timed_tune(self, *args, **kwargs):
        start = time.perf_counter()
        out = tune(self, *args, **kwargs)
        took = time.perf_counter() - start
        if took > 0.5:
            print(f"   autotune + run {self.base_fn.__name__}: {took:.2f} s", flush=True)
        return out

    jit.JITFunction._do_compile = timed_compile
    autotuner.Autotuner.run = timed_tune


def main(notebooks: list[str]) -> None:
    start = time.perf_counter()
    if torch.cuda.is_available():
        torch.zeros(1, device="cuda")
    print(f"torch + CUDA context: {time.perf_counter() - start:.1f} s", flush=True)
    log_compiles_and_autotuning()
    t = time.perf_counter()
    import fla  # noqa: F401  (fla imports its layers and models: part of every notebook's first fla call)
    print(f"import fla: {time.perf_counter() - t:.1f} s", flush=True)
    from course_utils import grade
    from course_utils.notebook_functions import graded_functions

    for path in notebooks:
        for exercise, fns in graded_functions(ROOT / path).items():  # in notebook order
            for fn in fns:
                t = time.perf_counter()
                print(f"== grade({exercise!r}, {fn.__name__})", flush=True)
                grade(exercise, fn)
                print(f"== grade({exercise!r}): {time.perf_counter() - t:.1f} s", flush=True)
    print(f"total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT)
