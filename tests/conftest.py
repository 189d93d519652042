"""Shared by every test: course_utils imported first (it sets TRITON_INTERPRET before fla or mamba-ssm
define a kernel), and tests/ on sys.path so test modules can share helpers (tests/refs_helpers.py)."""

import sys
from pathlib import Path

import course_utils  # noqa: F401

sys.path.insert(0, str(Path(__file__).parent))
