import pytest

from course_utils.checklist import Checklist


def test_failures_are_reported_and_raised_at_the_end(capsys):
    c = Checklist()
    assert c.check("fine", lambda: "detail") is None  # a notebook cell ending in check() shows no stray value
    c.check("broken", lambda: 1 / 0)
    c.skip("gpu", "no GPU")
    with pytest.raises(AssertionError, match="broken"):
        c.summary()
    out = capsys.readouterr().out
    assert "✅ fine: detail" in out and "ZeroDivisionError" in out and "1 passed, 1 failed, 1 skipped" in out
    assert "○ gpu: skipped (no GPU)" in out and "⏭" not in out


def test_all_passing_summary(capsys):
    c = Checklist()
    c.check("a", lambda: None)
    c.summary()
    assert "ready" in capsys.readouterr().out
