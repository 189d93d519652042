"""The Triton kernels families (Lab 06: 6.1-6.7, kernels and kernels_gla): the solutions' kernels pass, every
catalogued wrong kernel (and every generic mistake) is rejected with its hint, correct kernels written differently
pass too. On a CPU every kernel runs in Triton's interpreter (course_utils sets TRITON_INTERPRET=1 before any kernel
is defined)."""

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

from course_utils.exercises import EXERCISES, grade, kernels, kernels_gla
from course_utils.grading.generic import CPU

IDS = ["6.1", "6.2", "6.3", "6.3b", "6.4", "6.5", "6.6", "6.7"]

# The family's tests grade on the CPU (conftest's CPU options): its kernels then need Triton's interpreter, which
# course_utils switches on only where there is no GPU.
pytestmark = pytest.mark.skipif(torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
                                reason="kernels graded on the CPU need TRITON_INTERPRET=1 on a GPU machine")


def test_every_exercise_names_its_own_mistakes():
    sizes = {ex_id: len(EXERCISES[ex_id].mistakes) for ex_id in IDS}
    assert all(n >= 4 for n in sizes.values()), sizes


def test_every_wrong_kernel_is_a_triton_kernel():
    """The catalogue's wrong implementations launch real kernels (one per exercise, its MISTAKE constexpr
    switching one line), not PyTorch stand-ins — except the mistakes that *are* (partly) PyTorch, which the
    kernel check must reject."""
    jitted = [kernels._decay_kernel, kernels._read_state_kernel, kernels._cumsum_kernel, kernels._scan_kernel,
              kernels._recurrent_kernel, kernels._chunk_states_kernel, kernels._chunk_output_kernel,
              kernels_gla._gla_recurrent_kernel, kernels_gla._gla_states_kernel, kernels_gla._gla_output_kernel]
    assert all(isinstance(k, triton.runtime.jit.KernelInterface) for k in jitted)
    launchers = ("decay_wrong", "read_state_wrong", "cumsum_wrong", "scan_wrong", "recurrent_wrong", "chunked_wrong",
                 "gla_recurrent_wrong", "chunk_gla_wrong")
    for ex_id, factory in zip(IDS, launchers):
        for m in EXERCISES[ex_id].mistakes:
            if "kernel check" in m.says:
                continue
            assert m.wrong_fn.__qualname__ == f"{factory}.<locals>.wrong", (ex_id, m.name)


def test_the_catalogues_hold_the_issues_kernel_bugs():
    """Issue #11's list, where it applies: an off-by-one mask or loop bound, a missing state carry, a wrong block
    boundary on a ragged T, a race, a wrong accumulation dtype, a launcher that computes part of it in PyTorch."""
    wanted = {
        "6.4": ("off by one", "not carried", "race", "float16"),
        "6.5": ("off by one", "not carried", "ragged", "race", "bfloat16", "PyTorch"),
        "6.6": ("off by one", "not carried", "race", "bfloat16"),
        "6.7": ("off by one", "not carried", "ragged", "race", "bfloat16", "PyTorch"),
    }
    for ex_id, pieces in wanted.items():
        names = " | ".join(m.name for m in EXERCISES[ex_id].mistakes)
        assert all(p in names for p in pieces), (ex_id, [p for p in pieces if p not in names])


@pytest.mark.parametrize("ex_id, launcher", [
    ("6.1", kernels.decay_wrong("none")),
    ("6.2", kernels.read_state_wrong("none")),
    ("6.3", kernels.cumsum_wrong("none")),
    ("6.3b", kernels.scan_wrong("none")),
    ("6.4", kernels.recurrent_wrong("none")),
    ("6.5", kernels.chunked_wrong("none")),
    ("6.6", kernels_gla.gla_recurrent_wrong("none")),
    ("6.7", kernels_gla.chunk_gla_wrong("none")),
], ids=lambda x: x if isinstance(x, str) else "")
def test_the_catalogues_kernels_without_a_mistake_pass(ex_id, launcher):
    """Each wrong kernel is the catalogue's correct kernel with one line switched: with no MISTAKE it passes, so
    what the grader rejects is the mistake and nothing else in it."""
    grade(ex_id, launcher, quiet=True, **CPU)


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


@triton.jit
def _scan_by_steps(g_ptr, x_ptr, o_ptr, T, H: tl.constexpr, K: tl.constexpr, BT: tl.constexpr):
    """6.3b without a scan: one program per (chunk, head) steps through its chunk, h in registers."""
    i_c, i_bh = tl.program_id(0), tl.program_id(1)
    b, h = i_bh // H, i_bh % H
    ok = tl.arange(0, K)
    state = tl.zeros([K], dtype=tl.float32)
    for s in range(0, BT):
        t = i_c * BT + s
        if t < T:
            ptr = ((b * T + t) * H + h) * K + ok
            state = tl.exp(tl.load(g_ptr + ptr).to(tl.float32)) * state + tl.load(x_ptr + ptr).to(tl.float32)
            tl.store(o_ptr + ptr, state.to(o_ptr.dtype.element_ty))


def scan_by_steps(g, x, chunk_size):
    g, x = g.contiguous(), x.contiguous()
    B, T, H, K = x.shape
    o = torch.empty_like(x)
    _scan_by_steps[(triton.cdiv(T, chunk_size), B * H)](g, x, o, T, H=H, K=K, BT=chunk_size)
    return o


@triton.jit
def _gla_recurrent_vk(q_ptr, k_ptr, v_ptr, g_ptr, o_ptr, s0_ptr, sT_ptr, T, scale, H: tl.constexpr, K: tl.constexpr,
                      V: tl.constexpr, USE_S0: tl.constexpr):
    """6.6 with one program per (batch, head) for all value channels, the state kept transposed [V, K]."""
    i_bh = tl.program_id(0)
    b, h = i_bh // H, i_bh % H
    ok, ov = tl.arange(0, K), tl.arange(0, V)
    state = (b * H + h) * K * V + ok[None, :] * V + ov[:, None]
    St = tl.zeros([V, K], dtype=tl.float32)
    if USE_S0:
        St += tl.load(s0_ptr + state).to(tl.float32)
    for t in range(0, T):
        row = (b * T + t) * H + h
        q = tl.load(q_ptr + row * K + ok).to(tl.float32) * scale
        k = tl.load(k_ptr + row * K + ok).to(tl.float32)
        v = tl.load(v_ptr + row * V + ov).to(tl.float32)
        St = St * tl.exp(tl.load(g_ptr + row * K + ok).to(tl.float32))[None, :] + v[:, None] * k[None, :]
        tl.store(o_ptr + row * V + ov, tl.sum(St * q[None, :], axis=1).to(o_ptr.dtype.element_ty))
    tl.store(sT_ptr + state, St)


def gla_recurrent_one_program_per_head(q, k, v, g, scale=None, initial_state=None, output_final_state=True):
    q, k, v, g = q.contiguous(), k.contiguous(), v.contiguous(), g.contiguous()
    B, T, H, K = q.shape
    V = v.shape[-1]
    o = torch.empty_like(v)
    final = torch.empty(B, H, K, V, device=q.device, dtype=torch.float32)
    s0 = final if initial_state is None else initial_state.contiguous()
    _gla_recurrent_vk[(B * H,)](q, k, v, g, o, s0, final, T, K ** -0.5 if scale is None else scale, H=H, K=K, V=V,
                                USE_S0=initial_state is not None)
    return o, final


def chunk_gla_small_blocks(q, k, v, g, scale=None, initial_state=None, output_final_state=True, chunk_size=16):
    """The solution's 6.7 with the smallest blocks: value blocks of 16 (two per head), one warp per program."""
    return solution("6.7")(q, k, v, g, scale, initial_state, output_final_state, chunk_size, BK=16, BV=16,
                           num_warps=1, states_num_warps=1)


@pytest.mark.parametrize("ex_id, fn", [
    ("6.1", decay_values_by_rows),
    ("6.3b", scan_by_steps),
    ("6.4", recurrent_one_program_per_head),
    ("6.6", gla_recurrent_one_program_per_head),
    ("6.7", chunk_gla_small_blocks),
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
    grade("6.6", lambda q, k, v, g, scale=None, initial_state=None, output_final_state=True:
          solution("6.6")(q, k, v, g, scale, initial_state, output_final_state, BV=16), quiet=True, **CPU)
    grade("6.7", lambda q, k, v, g, scale=None, initial_state=None, output_final_state=True, chunk_size=16:
          solution("6.7")(q, k, v, g, scale, initial_state, output_final_state, chunk_size, BV=32, BC=16),
          quiet=True, **CPU)


@pytest.mark.parametrize("K, V, T", [(32, 48, 70), (100, 16, 33)], ids=["K32-V48-T70", "K100-V16-T33"])
def test_gla_kernels_take_any_head_dims(K, V, T):
    """Beyond the graded K = 16, V = 32: K split across the state kernel's programs (BK = 16 < K), K and V not powers
    of two (masked blocks), against fla's naive recurrence."""
    from fla.ops.gla.naive import naive_recurrent_gla

    gen = torch.Generator().manual_seed(K + V + T)
    q, k = torch.randn(1, T, 2, K, generator=gen), torch.randn(1, T, 2, K, generator=gen)
    v = torch.randn(1, T, 2, V, generator=gen)
    g = torch.nn.functional.logsigmoid(torch.randn(1, T, 2, K, generator=gen)) / 4
    s0 = torch.randn(1, 2, K, V, generator=gen)
    o_ref, S_ref = naive_recurrent_gla(q, k, v, g, initial_state=s0, output_final_state=True)
    for o, S in (solution("6.6")(q, k, v, g, initial_state=s0, BV=16),
                 solution("6.7")(q, k, v, g, initial_state=s0, chunk_size=32, BK=16, BV=16)):
        torch.testing.assert_close(o, o_ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(S, S_ref, rtol=1e-4, atol=1e-4)


def test_gla_kernels_skip_the_final_state_on_request():
    """output_final_state=False (fla's option) returns (o, None) with the same o."""
    inputs = kernels_gla.gla_inputs(EXERCISES["6.6"].cases(torch.device("cpu"), [torch.float32])[1],
                                    torch.device("cpu"))
    q, k, v, g, s0 = (inputs[n] for n in ("q", "k", "v", "g", "initial_state"))
    for ex_id in ("6.6", "6.7"):
        o, S = solution(ex_id)(q, k, v, g, initial_state=s0)
        o_only, none = solution(ex_id)(q, k, v, g, initial_state=s0, output_final_state=False)
        assert none is None and torch.equal(o_only, o) and S is not None


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
    for name in ("first_order", "chunk_scan_kernel", "fused_recurrent_gla_kernel", "chunk_gla_states_kernel",
                 "chunk_gla_output_kernel"):
        assert isinstance(namespace[name], triton.runtime.jit.JITFunction), name


_COMPILE_SCRIPT = r"""
import json, os, re, subprocess, sys, tempfile
from pathlib import Path
os.environ["TRITON_INTERPRET"] = "0"  # before Triton is imported: real GPU kernels, no interpreter
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from course_utils.authoring import SOLUTIONS
from course_utils.notebook_functions import load_namespace

arch, dtype = int(sys.argv[1]), sys.argv[2]
ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
ns = load_namespace(SOLUTIONS / "06_triton_kernels.ipynb")
P, dot, f32 = f"*{dtype}", {"bf16": tl.bfloat16, "fp16": tl.float16}[dtype], "*fp32"
kernels = [  # (name, warps, pointer and scalar types, constexprs): the launchers' defaults at K = V = 128
    ("fused_recurrent_gla_kernel", 4,
     dict(q_ptr=P, k_ptr=P, v_ptr=P, g_ptr=P, o_ptr=P, s0_ptr=f32, sT_ptr=f32, T="i32", scale="fp32"),
     dict(H=16, K=128, V=128, BK=128, BV=32, USE_INITIAL_STATE=True, STORE_FINAL_STATE=True)),
    ("chunk_gla_states_kernel", 4,
     dict(k_ptr=P, v_ptr=P, g_ptr=P, h_ptr=P, s0_ptr=f32, sT_ptr=f32, T="i32", NT="i32"),
     dict(H=16, K=128, V=128, BT=64, BK=32, BV=64, USE_INITIAL_STATE=True, STORE_FINAL_STATE=True, DOT=dot,
          PRECISION="tf32")),
    ("chunk_gla_output_kernel", 8,
     dict(q_ptr=P, k_ptr=P, v_ptr=P, g_ptr=P, h_ptr=P, o_ptr=P, T="i32", NT="i32", scale="fp32"),
     dict(H=16, K=128, V=128, BT=64, BC=16, BK=128, BD=16, BV=64, DOT=dot, PRECISION="tf32")),
]
report = {}
for name, warps, types, consts in kernels:
    kernel = ns[name]
    signature = {a: ("constexpr" if a in consts else types[a]) for a in kernel.arg_names}
    source = ASTSource(kernel, signature, constexprs={(kernel.arg_names.index(a),): v for a, v in consts.items()})
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": warps})
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(compiled.asm["ptx"])
        f.flush()
        out = subprocess.run([str(ptxas), "-v", f"--gpu-name=sm_{arch}{'a' if arch == 90 else ''}", f.name,
                              "-o", "/dev/null"], capture_output=True, text=True, check=True)
    text = out.stdout + out.stderr
    spill = re.search(r"(\d+) bytes spill stores", text)
    report[name] = (int(re.search(r"Used (\d+) registers", text).group(1)), int(spill.group(1)) if spill else 0)
print(json.dumps(report))
"""


@pytest.mark.parametrize("arch, dtype", [(90, "bf16"), (75, "fp16")], ids=["H200-sm90-bf16", "T4-sm75-fp16"])
def test_gla_kernels_compile_for_the_course_gpus(arch, dtype):
    """No GPU needed: 6.6's and 6.7's kernels, loaded from the solutions as GPU kernels (in a fresh process, without
    the interpreter), compile with Triton's CUDA backend for an H200 and a T4 at the benchmark's head size
    (K = V = 128) and the launchers' default blocks; ptxas reports their registers, and on the H200 none spills."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    if not (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas").exists():
        pytest.skip("this Triton has no CUDA backend (ptxas)")
    out = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT, str(arch), dtype], capture_output=True, text=True,
                         check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(report) == {"fused_recurrent_gla_kernel", "chunk_gla_states_kernel", "chunk_gla_output_kernel"}
    for name, (regs, spilled) in report.items():
        assert regs <= 255, (name, regs)
        if arch == 90:
            assert spilled == 0, (name, regs, spilled)
