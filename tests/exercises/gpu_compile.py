"""Compile a solution notebook's Triton kernels for a GPU without a GPU: Triton's CUDA backend for a target
architecture, then ptxas for the registers and spills. The interpreter lets a kernel do what a compiled one may
not (read a plain global, for one), and register pressure only shows in a real compile.

`compile_kernels(notebook, arch, dtype, kernels)` runs the compile in a fresh process (TRITON_INTERPRET must be 0
before Triton is imported, and the test process has it set to 1 on a CPU) and returns
{kernel name: (registers, bytes spilled)}. In `kernels`, each entry is (name, num_warps, argument types,
constexprs); the type "P" stands for a pointer to `dtype`, the constexpr value "DOT" for `dtype` as a tl dtype.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import triton

PTXAS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"

_SCRIPT = r"""
import json, os, re, subprocess, sys, tempfile
os.environ["TRITON_INTERPRET"] = "0"
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from course_utils.authoring import SOLUTIONS
from course_utils.notebook_functions import load_namespace

notebook, arch, dtype, ptxas, kernels = json.loads(sys.argv[1])
ns = load_namespace(SOLUTIONS / notebook)
dot = {"bf16": tl.bfloat16, "fp16": tl.float16, "fp32": tl.float32}[dtype]
report = {}
for name, warps, types, consts in kernels:
    kernel = ns[name]
    consts = {a: dot if v == "DOT" else v for a, v in consts.items()}
    types = {a: f"*{dtype}" if t == "P" else t for a, t in types.items()}
    signature = {a: ("constexpr" if a in consts else types[a]) for a in kernel.arg_names}
    source = ASTSource(kernel, signature, constexprs={(kernel.arg_names.index(a),): v for a, v in consts.items()})
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": warps})
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(compiled.asm["ptx"])
        f.flush()
        out = subprocess.run([ptxas, "-v", f"--gpu-name=sm_{arch}{'a' if arch == 90 else ''}", f.name,
                              "-o", "/dev/null"], capture_output=True, text=True, check=True)
    text = out.stdout + out.stderr
    spill = re.search(r"(\d+) bytes spill stores", text)
    report[name] = (int(re.search(r"Used (\d+) registers", text).group(1)), int(spill.group(1)) if spill else 0)
print(json.dumps(report))
"""


def compile_kernels(notebook: str, arch: int, dtype: str, kernels: list) -> dict[str, tuple[int, int]]:
    """{name: (registers, bytes spilled)} of each kernel compiled for sm_`arch`; skips without a CUDA backend."""
    if not PTXAS.exists():
        pytest.skip("this Triton has no CUDA backend (ptxas)")
    spec = json.dumps([notebook, arch, dtype, str(PTXAS), kernels])
    out = subprocess.run([sys.executable, "-c", _SCRIPT, spec], capture_output=True, text=True)
    assert out.returncode == 0, f"compiling {notebook}'s kernels for sm_{arch} failed:\n{out.stderr[-3000:]}"
    return {name: tuple(v) for name, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}
