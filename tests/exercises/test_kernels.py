"""The Triton kernels family (Lab 06: 6.1-6.5): the solutions' kernels pass, every catalogued wrong kernel (and
every generic mistake) is rejected with its hint, correct kernels written differently pass too. On a CPU every
kernel runs in Triton's interpreter (course_utils sets TRITON_INTERPRET=1 before any kernel is defined)."""

from __future__ import annotations

import os

import pytest
import torch
import triton
import triton.language as tl
from conftest import solution
from family_tests import (  # noqa: F401  (collected here, parametrized by IDS)
    test_mistake_is_rejected,
    test_solution_passes,
    test_solution_passes_in_bf16,
)

from course_utils.exercises import EXERCISES, grade, kernels
from course_utils.grading.generic import CPU

IDS = ["6.1", "6.2", "6.3", "6.4", "6.5"]

# The family's tests grade on the CPU (conftest's CPU options): its kernels then need Triton's interpreter, which
# course_utils switches on only where there is no GPU.
pytestmark = pytest.mark.skipif(torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
                                reason="kernels graded on the CPU need TRITON_INTERPRET=1 on a GPU machine")


def test_every_exercise_names_its_own_mistakes():
    sizes = {ex_id: len(EXERCISES[ex_id].mistakes) for ex_id in IDS}
    assert all(n >= 4 for n in sizes.values()), sizes


def test_every_wrong_kernel_is_a_triton_kernel():
    """The catalogue's wrong implementations launch real kernels (one per exercise, its MISTAKE constexpr
    switching one line), not PyTorch stand-ins — except the one mistake that *is* a PyTorch stand-in, which
    the kernel check must reject."""
    jitted = [kernels._decay_kernel, kernels._read_state_kernel, kernels._cumsum_kernel, kernels._recurrent_kernel,
              kernels._chunk_states_kernel, kernels._chunk_output_kernel]
    assert all(isinstance(k, triton.runtime.jit.KernelInterface) for k in jitted)
    launchers = ("decay_wrong", "read_state_wrong", "cumsum_wrong", "recurrent_wrong", "chunked_wrong")
    for ex_id, factory in zip(IDS, launchers):
        for m in EXERCISES[ex_id].mistakes:
            if m.says == ("kernel check",):
                continue
            assert m.wrong_fn.__qualname__ == f"{factory}.<locals>.wrong", (ex_id, m.name)


# ------------------------------------------------------------------------------------------ correct alternatives


@triton.jit
def _decay_2d(v_ptr, g_ptr, o_ptr, rows, V: tl.constexpr, BR: tl.constexpr):
    """A block of BR whole rows per program: a 2-D block, the mask on rows only."""
    r = tl.program_id(0) * BR + tl.arange(0, BR)
    cols = tl.arange(0, V)
    mask = (r < rows)[:, None]
    x = tl.load(v_ptr + r[:, None] * V + cols[None, :], mask=mask, other=0.0)
    g = tl.load(g_ptr + r, mask=r < rows, other=0.0)
    tl.store(o_ptr + r[:, None] * V + cols[None, :], (tl.exp(g)[:, None] * x).to(o_ptr.dtype.element_ty), mask=mask)


def decay_values_by_rows(v, g):
    v, g = v.contiguous(), g.contiguous()
    o = torch.empty_like(v)
    rows = g.numel()
    _decay_2d[(triton.cdiv(rows, 8),)](v, g, o, rows, V=v.shape[-1], BR=8)
    return o


@triton.jit
def _recurrent_kv(q_ptr, k_ptr, v_ptr, o_ptr, s0_ptr, sT_ptr, T, scale, H: tl.constexpr, K: tl.constexpr,
                  V: tl.constexpr, USE_S0: tl.constexpr):
    """One program per (batch, head) for all value channels, the state kept transposed [V, K]."""
    i_bh = tl.program_id(0)
    b, h = i_bh // H, i_bh % H
    ok, ov = tl.arange(0, K), tl.arange(0, V)
    state = (b * H + h) * K * V + ok[None, :] * V + ov[:, None]  # [V, K] view of S[b, h]
    St = tl.zeros([V, K], dtype=tl.float32)
    if USE_S0:
        St += tl.load(s0_ptr + state).to(tl.float32)
    for t in range(0, T):
        row = (b * T + t) * H + h
        q = tl.load(q_ptr + row * K + ok).to(tl.float32) * scale
        k = tl.load(k_ptr + row * K + ok).to(tl.float32)
        v = tl.load(v_ptr + row * V + ov).to(tl.float32)
        St += v[:, None] * k[None, :]
        tl.store(o_ptr + row * V + ov, tl.sum(St * q[None, :], axis=1).to(o_ptr.dtype.element_ty))
    tl.store(sT_ptr + state, St)


def recurrent_one_program_per_head(q, k, v, scale=None, initial_state=None):
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    B, T, H, K = q.shape
    V = v.shape[-1]
    o = torch.empty_like(v)
    final = torch.empty(B, H, K, V, device=q.device, dtype=torch.float32)
    s0 = final if initial_state is None else initial_state.contiguous()
    _recurrent_kv[(B * H,)](q, k, v, o, s0, final, T, K ** -0.5 if scale is None else scale, H=H, K=K, V=V,
                            USE_S0=initial_state is not None)
    return o, final


@pytest.mark.parametrize("ex_id, fn", [
    ("6.1", decay_values_by_rows),
    ("6.4", recurrent_one_program_per_head),
], ids=lambda x: x if isinstance(x, str) else x.__name__)
def test_correct_alternatives_pass(ex_id, fn):
    grade(ex_id, fn, quiet=True, **CPU)


def test_other_block_sizes_pass():
    """The solutions' launchers take their block size as an argument: any power of two works."""
    grade("6.1", lambda v, g: solution("6.1")(v, g, BLOCK=32), quiet=True, **CPU)
    grade("6.2", lambda q, S, scale=None: solution("6.2")(q, S, scale, BT=32), quiet=True, **CPU)
    grade("6.4", lambda q, k, v, scale=None, initial_state=None: solution("6.4")(q, k, v, scale, initial_state, BV=32),
          quiet=True, **CPU)
    grade("6.5", lambda q, k, v, scale=None, initial_state=None, chunk_size=16:
          solution("6.5")(q, k, v, scale, initial_state, chunk_size, BV=32), quiet=True, **CPU)


def test_notebook_kernels_load_as_gpu_kernels(monkeypatch):
    """On a GPU @triton.jit reads its kernel's source when applied: the solutions' kernels, loaded from the
    notebook without running it (course_utils.notebook_functions, as these tests and the gradebook do), have one."""
    from course_utils.authoring import SOLUTIONS
    from course_utils.notebook_functions import load_namespace

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    namespace = load_namespace(SOLUTIONS / "06_triton_kernels.ipynb")
    kernel = namespace["fused_recurrent_kernel"]
    assert isinstance(kernel, triton.runtime.jit.JITFunction), type(kernel)
    assert "S += k[:, None] * v[None, :]" in kernel.src
