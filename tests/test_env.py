"""Environment detection, with CPU, T4, H100 and Colab simulated."""

import os

import torch

from course_utils import env as envmod


def test_cpu_only_turns_on_triton_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    e = envmod.detect(capability=None, colab=False)
    assert e.device == torch.device("cpu") and not e.is_gpu
    assert e.triton_interpret and os.environ["TRITON_INTERPRET"] == "1"
    assert e.dtypes == [torch.float32]
    assert e.size(cpu=64, gpu=4096) == 64
    table = e.status_table()
    for word in ("CPU only", "torch", "triton", "flash-linear-attention", "mamba-ssm", "references"):
        assert word in table


def test_user_setting_of_triton_interpret_wins(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert envmod.configure_triton(has_gpu=False) is False
    assert os.environ["TRITON_INTERPRET"] == "0"


def test_gpu_does_not_force_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert envmod.configure_triton(has_gpu=True) is False
    assert "TRITON_INTERPRET" not in os.environ


def test_t4_warns_no_bf16_and_uses_fp32(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    e = envmod.detect(capability=(7, 5), colab=True)
    assert e.is_gpu and e.is_colab
    assert torch.bfloat16 not in e.dtypes and torch.float32 in e.dtypes
    assert any("bf16" in w and "TF32" in w for w in e.warnings)
    assert "Google Colab" in e.status_table()
    assert e.size(cpu=64, gpu=4096) == 4096


def test_h100_tests_bf16_only(monkeypatch):
    """One half-precision dtype per GPU: every extra dtype compiles each kernel again on first use."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    e = envmod.detect(capability=(9, 0), colab=False)
    assert e.dtypes == [torch.float32, torch.bfloat16]
    assert not e.warnings


def test_colab_without_gpu_suggests_a_runtime(monkeypatch):
    monkeypatch.setattr(envmod.sys, "modules", {**envmod.sys.modules, "google.colab": object()})
    assert envmod.in_colab()
    e = envmod.detect(capability=None)
    assert e.is_colab and any("T4" in w for w in e.warnings)


def test_seed_everything_repeats_draws():
    envmod.seed_everything(3)
    a = torch.randn(4)
    envmod.seed_everything(3)
    assert torch.equal(a, torch.randn(4))


def test_setup_prints_one_table(capsys):
    e = envmod.setup(seed=0)
    out = capsys.readouterr().out
    assert out.count("torch ") >= 1 and "device" in out
    assert e is envmod.get_env()
