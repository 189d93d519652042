"""A ✅/❌ checklist for setup checks: run every check, report each, fail loudly at the end."""

from __future__ import annotations

import traceback
from typing import Callable

SKIPPED = "○"  # a glyph the default fonts have (Chromium draws "⏭" as an empty box)


class Checklist:
    """Collects named checks. `check()` never raises, so one failure does not hide the others;
    `summary()` prints the table and raises AssertionError if anything failed (nbval then shows red)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, str]] = []  # (mark, name, detail)

    def check(self, name: str, fn: Callable[[], str | None]) -> None:
        """Run fn and print one ✅/❌ line (nothing is returned: a notebook cell ending in check() shows only
        that line)."""
        try:
            detail = fn() or ""
            self.items.append(("✅", name, detail))
            print(f"✅ {name}" + (f": {detail}" if detail else ""))
        except Exception as err:  # report any failure, with where it happened
            where = traceback.extract_tb(err.__traceback__)[-1]
            detail = f"{type(err).__name__}: {err} (at {where.filename}:{where.lineno})"
            self.items.append(("❌", name, detail))
            print(f"❌ {name}: {detail}")

    def skip(self, name: str, why: str) -> None:
        self.items.append((SKIPPED, name, why))
        print(f"{SKIPPED} {name}: skipped ({why})")

    def summary(self) -> None:
        failed = [name for mark, name, _ in self.items if mark == "❌"]
        for mark, name, detail in self.items:
            print(f"{mark} {name}")
        passed = sum(mark == "✅" for mark, _, _ in self.items)
        skipped = sum(mark == SKIPPED for mark, _, _ in self.items)
        print(f"\n{passed} passed, {len(failed)} failed, {skipped} skipped")
        if failed:
            raise AssertionError("setup checks failed: " + ", ".join(failed) + " (see the messages above)")
        print("All set: your environment is ready for the labs.")
