"""The one workaround for importing mamba-ssm without its CUDA extension."""

import subprocess
import sys
import textwrap


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)


def test_plain_import_fails_without_the_extension():
    # The reason the workaround exists; if this starts passing, upstream fixed it: drop the placeholder.
    r = run("import mamba_ssm")
    assert r.returncode != 0 and "selective_scan_cuda" in r.stderr


def test_import_mamba_gives_the_references():
    r = run("""
        from course_utils.mamba_import import import_mamba, has_mamba_cuda
        m = import_mamba()
        from mamba_ssm.ops.selective_scan_interface import selective_scan_ref
        from mamba_ssm.modules.ssd_minimal import ssd_minimal_discrete
        print(m.__version__, has_mamba_cuda())
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["2.3.2.post1", "False"]


def test_other_import_errors_are_reported_with_the_install_command():
    # Simulate a broken install: a dependency mamba_ssm needs is missing.
    r = run("""
        import sys
        sys.modules["einops"] = None
        from course_utils.mamba_import import import_mamba
        import_mamba()
    """)
    assert r.returncode != 0
    assert "mamba_ssm failed to import" in r.stderr and "MAMBA_SKIP_CUDA_BUILD=TRUE" in r.stderr


def test_placeholder_only_when_the_extension_is_missing():
    # A real extension (simulated by a module on the path) must not be shadowed by the placeholder.
    r = run("""
        import sys, types, importlib.machinery
        real = types.ModuleType("selective_scan_cuda", "a real build")
        sys.modules["selective_scan_cuda"] = real
        from course_utils.mamba_import import import_mamba, has_mamba_cuda
        import_mamba()
        assert sys.modules["selective_scan_cuda"] is real
        print(has_mamba_cuda())
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True"
