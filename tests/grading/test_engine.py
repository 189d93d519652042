"""The grading engine's behaviour that no single exercise owns: failure messages, options, stubs, how
exceptions and devices are explained, portability warnings, and the engine's independence from the
exercises (it takes an Exercise; the registry lives in course_utils.exercises)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from course_utils.exercises import grade
from course_utils.exercises.linear_attention import core
from course_utils.grading.generic import CPU


def recurrent(q, k, v, scale=None, initial_state=None, normalize=False):
    return core()(q, k, v, scale, initial_state, normalize)


def exclusive(q, k, v, scale=None, initial_state=None, normalize=False):
    return core(exclusive=True)(q, k, v, scale, initial_state, normalize)


def test_failure_message_reads_like_a_review():
    with pytest.raises(AssertionError) as info:
        grade("2.2", exclusive, **CPU)
    msg = str(info.value)
    for part in ("fails case 1/", "B=1 T=63 H=2", "float32", "relative RMS error", "max abs error",
                 "first wrong at (b=0, t=0, h=0, :)", "expected [", "got      [", "hint: state updated after"):
        assert part in msg, (part, msg)


def test_head_first_message_names_both_shapes():
    with pytest.raises(AssertionError) as info:
        grade("2.2", lambda *a, **k: (recurrent(*a, **k)[0].transpose(1, 2), recurrent(*a, **k)[1]), **CPU)
    assert ("expected shape [1, 63, 2, 32], got [1, 2, 63, 32] — looks head-first [B,H,T,D]; the course uses "
            "[B,T,H,D]") in str(info.value)


def test_unknown_exercise_and_options():
    with pytest.raises(ValueError, match="unknown exercise"):
        grade("9.9", recurrent)
    with pytest.raises(TypeError, match="unknown options"):
        grade("2.2", recurrent, devcie="cpu")
    with pytest.raises(TypeError, match="expects your function"):
        grade("2.2", None)


def test_wrong_signature_is_explained():
    with pytest.raises(AssertionError, match="the function must accept the arguments of the spec"):
        grade("2.2", lambda q, k, v: recurrent(q, k, v), **CPU)


def test_stub_raises_not_implemented_unchanged():
    def stub(q, k, v, scale=None, initial_state=None, normalize=False):
        raise NotImplementedError("Exercise 2.2: write the recurrent form")

    with pytest.raises(NotImplementedError, match="Exercise 2.2: write the recurrent form"):
        grade("2.2", stub, **CPU)


def _loop_with_cpu_state(q, k, v, scale=None, initial_state=None, normalize=False):
    """Correct on a CPU; the states are made without a device, the commonest failure on a GPU."""
    B, T, H, K = q.shape
    S0, z0 = initial_state if isinstance(initial_state, tuple) else (initial_state, None)
    S = torch.zeros(B, H, K, v.shape[-1]) if S0 is None else S0.float()
    z = torch.zeros(B, H, K) if z0 is None else z0.float()
    s = K ** -0.5 if scale is None else scale
    outs = []
    for t in range(T):
        S = S + k[:, t, :, :, None].float() * v[:, t, :, None, :].float()
        z = z + k[:, t].float()
        o = s * torch.einsum("bhk,bhkv->bhv", q[:, t].float(), S)
        outs.append(o / (s * (q[:, t].float() * z).sum(-1, keepdim=True) + 1e-10) if normalize else o)
    o = torch.stack(outs, 1).to(q.dtype)
    return (o, (S, z)) if normalize else (o, S)


def test_a_cpu_only_student_is_warned_about_devices(capsys):
    grade("2.2", _loop_with_cpu_state, **CPU)
    out = capsys.readouterr().out
    assert out.startswith("✅ Exercise 2.2 passed: _loop_with_cpu_state")
    assert "⚠ portability: on a GPU this function will fail" in out and "device=q.device" in out


def test_device_mismatch_gets_a_hint():
    def mixes(q, k, v, scale=None, initial_state=None, normalize=False):
        return recurrent(q, k, v, scale, initial_state, normalize)[0] + torch.zeros(1, device="meta"), None

    with pytest.raises(AssertionError, match="device=q.device"):
        grade("2.2", mixes, **CPU)


def test_an_error_in_one_row_is_caught_although_the_rms_is_small():
    """A row-confined error fails with the row named even where the tensor-wide RMS stays within tolerance."""

    def one_bad_row(q, k, v, scale=None, initial_state=None, normalize=False):
        o, S = recurrent(q, k, v, scale, initial_state, normalize)
        o = o.clone()
        rms_row = o.reshape(-1, o.shape[-1]).norm(dim=-1).pow(2).mean().sqrt()
        o[0, 40, 1, 0] += 8e-4 * rms_row  # one row of 126 off by 8e-4: ≈ 7e-5 < 1e-4 over the whole tensor
        return o, S

    with pytest.raises(AssertionError) as info:
        grade("2.2", one_bad_row, **CPU)
    assert "within tolerance, but the worst row" in str(info.value) and "t in [40, 40]" in str(info.value)


def test_the_engine_does_not_import_the_exercises():
    code = ("import sys, course_utils.grading.engine; "
            "print(any(m.startswith('course_utils.exercises') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_an_exercise_can_add_its_own_picture_of_a_wrong_value():
    """Exercise.explain: the warm-up kernels show the student's block beside the expected one, wrong entries
    marked, whatever the hint; exercises without it print no such block."""
    from course_utils.exercises import kernels

    with pytest.raises(AssertionError) as info:
        grade("6.1", kernels.decay_wrong("floor_grid", grid_floor=True), **CPU)
    msg = str(info.value)
    assert "your block beside the expected one (b=1, h=1, t=55..62" in msg and "+0.0000!" in msg, msg
    assert "hint: the grid misses the ragged last block" in msg
    with pytest.raises(AssertionError) as info:
        grade("2.2", exclusive, **CPU)
    assert "your block beside" not in str(info.value)


def test_the_kernel_check_rejects_a_launcher_computing_in_pytorch():
    """launches_a_kernel: a launcher that launches a kernel but computes part of the answer with torch ops (the
    chunk states with einsum and cumsum) fails, naming the ops; one that only allocates, reshapes, casts and
    launches passes, and Triton's own torch calls while it launches do not count."""
    from course_utils.exercises import kernels

    with pytest.raises(AssertionError) as info:
        grade("6.5", kernels.chunked_states_in_pytorch, **CPU)
    msg = str(info.value)
    assert "kernel check: your function launches a kernel but computes part of the answer in PyTorch" in msg
    assert "einsum" in msg and "cumsum" in msg

    def reshaping_launcher(q, k, v, scale=None, initial_state=None):
        q = q.reshape(q.shape).contiguous().to(torch.float32)
        o, S = kernels.recurrent_wrong("correct")(q, k.clone(), v.transpose(1, 2).transpose(1, 2), scale,
                                                  initial_state)
        return o.to(v.dtype).view(v.shape), S

    grade("6.4", reshaping_launcher, quiet=True, **CPU)

    def sums_partials(q, k, v, scale=None, initial_state=None):
        o, S = kernels.recurrent_wrong("correct")(q, k, v, scale, initial_state)
        return (torch.stack([o, o]).sum(0) / 2).to(v.dtype), S  # a reduction of partial outputs in PyTorch

    with pytest.raises(AssertionError, match=r"in PyTorch \(it calls torch's div, stack, sum outside"):
        grade("6.4", sums_partials, **CPU)


def test_the_kernel_check_accepts_padding_copying_and_input_checks():
    """launches_a_kernel's allowed torch calls are what a launcher legitimately does besides allocating: pad
    (F.pad, or zeros and a copy into them), concatenate, cast with type_as, and check its inputs to raise a clear
    error (comparisons, any, max, isfinite). The torch.cumsum of the gates as a preprocessing step is still
    computing in PyTorch."""
    import torch.nn.functional as F

    from course_utils.exercises import kernels

    def checked_padded_launcher(q, k, v, scale=None, initial_state=None):
        if not torch.isfinite(q).all() or q.max() > 1e6 or q.min() < -1e6:
            raise ValueError("q holds non-finite or huge values")
        T = q.shape[1]
        q = F.pad(q, (0, 0, 0, 0, 0, 3))[:, :T]  # padded, then the real steps taken back
        k_buf = torch.zeros(k.shape[0], T + 3, *k.shape[2:], dtype=k.dtype, device=k.device)
        k_buf[:, :T] = k
        v_buf = v.new_zeros(v.shape[0], T + 3, *v.shape[2:])
        v_buf[:, :T].copy_(v)
        v2 = torch.cat([v_buf[:, :T], v_buf[:, T:]], dim=1)[:, :T]
        o, S = kernels.recurrent_wrong("correct")(q.contiguous(), k_buf[:, :T].contiguous(), v2.contiguous(), scale,
                                                  initial_state)
        return o.type_as(v), S

    grade("6.4", checked_padded_launcher, quiet=True, **CPU)

    def cumsum_first(g, chunk_size):
        g = g.contiguous()
        running = g.cumsum(1)  # computing in PyTorch, then a kernel that "does" the rest
        return kernels.cumsum_wrong("correct")(running - running + g, chunk_size)

    with pytest.raises(AssertionError, match=r"in PyTorch \(it calls torch's add, cumsum, sub outside"):
        grade("6.3", cumsum_first, **CPU)


def test_a_library_not_implemented_error_is_a_failure_with_a_hint_not_a_stub():
    """torch raises NotImplementedError for an op without a kernel in a dtype ("lu_cpu" not implemented for
    'BFloat16'): that is the student's bug to fix (compute in float32), not an unsolved exercise."""
    def solve_in_bf16(q, k, v, scale=None, initial_state=None, normalize=False):
        eye = torch.eye(2, dtype=torch.bfloat16)
        torch.linalg.solve(eye, eye)  # no bfloat16 LU on a CPU
        return recurrent(q, k, v, scale, initial_state, normalize)

    with pytest.raises(AssertionError) as info:
        grade("2.2", solve_in_bf16, **CPU)
    msg = str(info.value)
    assert "raised NotImplementedError" in msg and "not implemented for 'BFloat16'" in msg
    assert "torch has no BFloat16 version of an operation" in msg and "x.float()" in msg


def test_is_unsolved_stub_tells_stubs_from_library_refusals():
    from course_utils.grading.trial import is_unsolved_stub

    def raised(fn):
        try:
            fn()
        except NotImplementedError as exc:
            return exc
        raise AssertionError("expected NotImplementedError")

    def stub():
        raise NotImplementedError("Exercise 7.1a: zero-order hold — write your code here")

    def own_message():
        raise NotImplementedError  # a student's own placeholder counts as not attempted too

    def torch_gap():
        torch.linalg.solve(torch.eye(2, dtype=torch.bfloat16), torch.eye(2, dtype=torch.bfloat16))

    assert is_unsolved_stub(raised(stub)) and is_unsolved_stub(raised(own_message))
    assert not is_unsolved_stub(raised(torch_gap))
    # a Python library's own raise (fla: a kernel without a backward): the innermost frame is under site-packages
    code = compile("def f():\n    raise NotImplementedError('Backward pass is not implemented yet')\n",
                   "/x/site-packages/fla/ops/fused_recurrent.py", "exec")
    ns: dict = {}
    exec(code, ns)
    assert not is_unsolved_stub(raised(ns["f"]))
