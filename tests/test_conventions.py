"""course_utils.conventions is the single source: the README's table is its table, and its error
functions measure what their names say."""

from pathlib import Path

import pytest
import torch

from course_utils.conventions import (
    CONVENTIONS_TABLE,
    default_scale,
    layout_str,
    max_row_relative_error,
    relative_rms_error,
    resolve_scale,
)

ROOT = Path(__file__).resolve().parent.parent


def test_readme_table_is_the_conventions_table():
    readme = (ROOT / "README.md").read_text()
    assert CONVENTIONS_TABLE.strip() in readme, "README's conventions table differs from course_utils.conventions"
    assert CONVENTIONS_TABLE.startswith("| quantity")


def test_layout_notation():
    assert layout_str("BTHK") == "[B, T, H, K]"


def test_scale():
    assert default_scale(16) == 0.25 and resolve_scale(None, 64) == 0.125 and resolve_scale(0.3, 64) == 0.3


def test_relative_rms_error_is_relative_rms():
    want = torch.tensor([3.0, 4.0])  # norm 5
    assert relative_rms_error(want + torch.tensor([0.5, 0.0]), want) == pytest.approx(0.1)
    assert relative_rms_error(torch.ones(4), torch.zeros(4)) == pytest.approx(1.0)  # absolute RMS vs zeros


def test_max_row_error_finds_a_bad_row_the_rms_hides():
    want = torch.ones(100, 8)
    got = want.clone()
    got[7] += 0.5  # one row off by half its norm
    assert relative_rms_error(got, want) < 0.06
    assert max_row_relative_error(got, want) == pytest.approx(0.5)
