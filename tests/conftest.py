"""Shared by every test: course_utils imported first (it sets TRITON_INTERPRET before fla or mamba-ssm
define a kernel), tests/ on sys.path so test modules can share helpers (test_refs.py's), and the grader's
progress record kept away from a student's own (every test grades solutions and stubs)."""

import os
import sys
from pathlib import Path

import pytest

import course_utils  # noqa: F401
from course_utils.progress import ENV_VAR

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True, scope="session")
def _progress_record_elsewhere(tmp_path_factory):
    """grade() records outcomes in ~/.cache/chapter6-labs/progress.json: tests write to a scratch file."""
    previous = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = str(tmp_path_factory.mktemp("progress") / "progress.json")
    yield
    if previous is None:
        os.environ.pop(ENV_VAR, None)
    else:
        os.environ[ENV_VAR] = previous
