"""`make check-mine`: run the student's notebooks in my-labs/ and say where every exercise stands.

Each notebook is read and executed in memory (nbclient, its own directory as the working directory), cell
after cell, going on after a cell that raises, within a time limit per notebook; the notebook file itself is
never written. The kernels record their grade() calls in a fresh temporary file (CHAPTER6_PROGRESS), so the
report counts this run only: one line per exercise of the course — passed, failed with the grader's one-line
message, or not attempted — and a total.

    python -m course_utils.checkmine [my-labs] [--timeout 900]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

from course_utils.progress import ENV_VAR, load, report

LONGER = " (`make check-mine TIMEOUT=1800` gives each notebook longer)"


@dataclass
class Run:
    """How one notebook's run went (the exercises' outcomes are in the progress record)."""

    path: Path
    seconds: float = 0.0
    cells: int = 0
    errors: int = 0
    stopped: str = ""  # why the run stopped before the last cell, if it did

    def line(self) -> str:
        what = f"{self.path.name}: {self.cells} code cells in {self.seconds:.0f} s"
        if self.errors:
            what += f", {self.errors} raised an error"
        return what + (f"; {self.stopped}" if self.stopped else "")


def run_notebook(path: Path, timeout: float, kernel_name: str = "python3") -> Run:
    """Execute a copy of the notebook at path (the file is only read), going on after errors, for at most
    `timeout` seconds in all."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    nb = nbformat.read(path, as_version=4)  # this copy in memory is what runs
    run = Run(path)
    client = NotebookClient(nb, kernel_name=kernel_name, allow_errors=True, timeout=max(1, math.ceil(timeout)),
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.monotonic()
    deadline = start + timeout
    try:
        with client.setup_kernel(stderr=subprocess.DEVNULL):  # the kernel's own log lines are noise here
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    run.stopped = f"stopped at its {timeout:.0f} s limit{LONGER}"
                    break
                client.timeout = max(1, math.ceil(left))
                try:
                    client.execute_cell(cell, index)
                except CellTimeoutError:
                    run.stopped = f"stopped in cell {index} at its {timeout:.0f} s limit{LONGER}"
                    break
                run.cells += 1
                run.errors += any(out.get("output_type") == "error" for out in cell.get("outputs", []))
    except DeadKernelError:
        run.stopped = "its kernel died (out of memory?)"
    except Exception as exc:  # noqa: BLE001 — one notebook that cannot run must not stop the others
        run.stopped = f"could not run: {type(exc).__name__}: {exc}"
    run.seconds = time.monotonic() - start
    return run


def check_mine(folder: Path, timeout: float = 900) -> int:
    """Run every notebook in folder, then print the report card of this run. Returns an exit status."""
    notebooks = sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))
    if not notebooks:
        print(f"{folder} has no notebooks: `make lab` copies the labs there (then solve them, save, and come back)")
        return 1
    with tempfile.TemporaryDirectory(prefix="check-mine-") as tmp:
        record = Path(tmp) / "progress.json"
        previous = os.environ.get(ENV_VAR)
        os.environ[ENV_VAR] = str(record)  # the kernels inherit it: only this run is counted
        try:
            for path in notebooks:
                print(f"running {path} ...", flush=True)
                print(f"  {run_notebook(path, timeout).line()}", flush=True)
        finally:
            if previous is None:
                os.environ.pop(ENV_VAR, None)
            else:
                os.environ[ENV_VAR] = previous
        records = load(record)
    print()
    print(f"Your exercises, as your notebooks in {folder} stand now (saved files only; nothing was changed):")
    print(report(records))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils.checkmine", description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=Path("my-labs"))
    parser.add_argument("--timeout", type=float, default=900, help="seconds each notebook may run (default 900)")
    args = parser.parse_args(argv)
    return check_mine(args.folder, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
