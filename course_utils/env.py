"""Where is this notebook running, and what may it use?

Three places matter: a CUDA GPU (Colab's T4 at the low end, sm_75: no bf16, no TF32), Colab itself, and
a laptop or CI machine with no GPU. Without a GPU, Triton kernels run in Triton's interpreter, which
must be switched on (TRITON_INTERPRET=1) *before* any `@triton.jit` function is defined — that is why
`configure_triton()` runs when `course_utils` is imported, ahead of fla and mamba-ssm.
"""

from __future__ import annotations

import importlib.metadata
import os
import random
import sys
from dataclasses import dataclass, field

import numpy as np
import torch


def cuda_capability() -> tuple[int, int] | None:
    """(major, minor) of GPU 0, or None without a usable CUDA device."""
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(0)


def in_colab() -> bool:
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def configure_triton(has_gpu: bool | None = None) -> bool:
    """Turn on Triton's CPU interpreter when there is no GPU. Returns whether it is on.

    A value the user already set wins (TRITON_INTERPRET=0 on a GPU, or =1 to debug a kernel there).
    """
    if has_gpu is None:
        has_gpu = torch.cuda.is_available()
    if not has_gpu:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    return os.environ.get("TRITON_INTERPRET") == "1"


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so every run draws the same numbers."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


@dataclass
class Env:
    """What the notebooks may use here. Build one with `setup()`."""

    device: torch.device
    capability: tuple[int, int] | None
    is_colab: bool
    triton_interpret: bool
    gpu_name: str | None = None
    dtypes: list[torch.dtype] = field(default_factory=lambda: [torch.float32])
    warnings: list[str] = field(default_factory=list)

    @property
    def is_gpu(self) -> bool:
        return self.device.type == "cuda"

    def size(self, cpu, gpu):
        """Pick a problem size: small enough for a 2-core CPU in seconds, full size on a GPU."""
        return gpu if self.is_gpu else cpu

    def reference_description(self) -> str:
        if self.is_gpu:
            return "fla Triton kernels and mamba-ssm kernels (GPU)"
        return "fla naive_* and mamba-ssm *_ref pure-PyTorch references (CPU)"

    def status_rows(self) -> list[tuple[str, str]]:
        from course_utils.mamba_import import has_mamba_cuda

        if self.is_gpu:
            where = f"CUDA GPU: {self.gpu_name} (sm_{self.capability[0]}{self.capability[1]})"
        else:
            where = "CPU only (Triton kernels run in the interpreter)"
        return [
            ("device", where),
            ("runtime", "Google Colab" if self.is_colab else "local"),
            ("dtypes tested", ", ".join(str(d).replace("torch.", "") for d in self.dtypes)),
            ("TRITON_INTERPRET", "1" if self.triton_interpret else "0"),
            ("python", sys.version.split()[0]),
            ("torch", torch.__version__),
            ("triton", _version("triton")),
            ("flash-linear-attention", _version("flash-linear-attention")),
            ("mamba-ssm", _version("mamba-ssm")),
            ("mamba-ssm CUDA scan", "built" if has_mamba_cuda() else "not built (reference used)"),
            ("references", self.reference_description()),
        ]

    def status_table(self) -> str:
        rows = self.status_rows()
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        lines += [f"⚠️  {w}" for w in self.warnings]
        return "\n".join(lines)


def detect(capability: tuple[int, int] | None = ..., colab: bool | None = None) -> Env:
    """Describe this machine. Tests pass `capability`/`colab` to simulate a T4, an H100 or a CPU."""
    if capability is ...:
        capability = cuda_capability()
    if colab is None:
        colab = in_colab()
    has_gpu = capability is not None
    interpret = configure_triton(has_gpu)
    env = Env(
        device=torch.device("cuda" if has_gpu else "cpu"),
        capability=capability,
        is_colab=colab,
        triton_interpret=interpret,
        gpu_name=torch.cuda.get_device_name(0) if has_gpu and torch.cuda.is_available() else None,
    )
    if has_gpu:
        # one half-precision dtype per GPU: each dtype compiles (and autotunes) every kernel again on
        # first use, and bf16 is what Ampere and later train in; fp16 where there is no bf16 (a T4)
        env.dtypes = [torch.float32, torch.bfloat16 if capability >= (8, 0) else torch.float16]
        if capability < (8, 0):
            env.warnings.append(
                f"sm_{capability[0]}{capability[1]} (e.g. a T4) has no bf16 and no TF32: the labs use fp32 "
                "(and fp16 where a kernel supports it)."
            )
    if colab and not has_gpu:
        env.warnings.append(
            "Colab without a GPU: Runtime → Change runtime type → T4 GPU makes the benchmarks meaningful."
        )
    return env


_ENV: Env | None = None


def get_env() -> Env:
    """The Env of this process (detected once)."""
    global _ENV
    if _ENV is None:
        _ENV = detect()
    return _ENV


def setup(seed: int = 0, verbose: bool = True) -> Env:
    """Every notebook's first call: detect the machine, seed the RNGs, print one status table."""
    env = get_env()
    seed_everything(seed)
    if verbose:
        print(env.status_table())
    return env
