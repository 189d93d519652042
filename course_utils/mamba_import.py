"""Importing mamba-ssm without its compiled CUDA extension: the course's one workaround.

Why: mamba-ssm 2.3.2.post1 does `import selective_scan_cuda` at the top of
`mamba_ssm/ops/selective_scan_interface.py`, which `mamba_ssm/__init__.py` imports. That extension only
exists when the package was built with CUDA (a 30-60 minute build of ten architectures by default), so
on a laptop, in CI, or after the fast install
`MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE pip install --no-build-isolation --no-deps mamba-ssm`
the whole package fails to import — including the pure-PyTorch references (`selective_scan_ref`,
`ssd_minimal_discrete`) and the Triton kernels the course needs.

What we do: when, and only when, `selective_scan_cuda` itself cannot be found, register an empty
placeholder module under that name before importing mamba_ssm. Everything that does not call the
extension then works; calling `selective_scan_fn` would fail, so course_utils.refs only calls it when
`has_mamba_cuda()` is true. Any other import error (a missing dependency, a broken install) is reported
as it is, with the install command.

Upstream: the missing module is reported in state-spaces/mamba issue #237 ("No module named
'selective_scan_cuda'", closed with "follow the installation instructions"); as of 2.3.2.post1 no upstream
change makes the extension optional. The fix we would want upstream is to import it the way
`selective_scan_interface.py` already imports `causal_conv1d`, inside try/except. This placeholder can go
once that lands: tests/test_mamba_import.py::test_plain_import_fails_without_the_extension starts failing
on the mamba-ssm upgrade that no longer needs it, which is the signal to delete this module.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

_EXTENSION = "selective_scan_cuda"
_PLACEHOLDER_DOC = "placeholder registered by course_utils.mamba_import: the CUDA extension is not built"

INSTALL_HINT = (
    "install mamba-ssm's Python and Triton parts with:\n"
    "  MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE pip install --no-build-isolation --no-deps "
    "mamba-ssm==2.3.2.post1\n"
    "(or run `make setup`; on a GPU `make gpu-setup` also builds the CUDA scan for your GPU)"
)


def has_mamba_cuda() -> bool:
    """True when mamba-ssm's compiled selective-scan extension is importable (a real one, not ours)."""
    mod = sys.modules.get(_EXTENSION)
    if mod is not None:
        return getattr(mod, "__doc__", None) != _PLACEHOLDER_DOC
    return importlib.util.find_spec(_EXTENSION) is not None


def import_mamba() -> types.ModuleType:
    """Import and return the `mamba_ssm` package, with or without its CUDA extension."""
    if "mamba_ssm" in sys.modules:
        return sys.modules["mamba_ssm"]
    if importlib.util.find_spec("mamba_ssm") is None:
        raise ImportError("mamba-ssm is not installed; " + INSTALL_HINT)
    if not has_mamba_cuda() and _EXTENSION not in sys.modules:
        sys.modules[_EXTENSION] = types.ModuleType(_EXTENSION, _PLACEHOLDER_DOC)
    try:
        return importlib.import_module("mamba_ssm")
    except ImportError as err:  # something other than the extension is wrong: say so plainly
        raise ImportError(f"mamba_ssm failed to import ({err}); {INSTALL_HINT}") from err
