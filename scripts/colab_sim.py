"""Colab, simulated without Colab: run a notebook's setup cell the way a student's first Colab session does.

    .venv/bin/python scripts/colab_sim.py                      # setup cell + solutions/00_setup.ipynb, temp dir
    .venv/bin/python scripts/colab_sim.py --keep build/colab-sim   # keep (and reuse) the simulated runtime there
    .venv/bin/python scripts/colab_sim.py --keep DIR --fail    # a failing install: the cell must stop, showing pip
    .venv/bin/python scripts/colab_sim.py --keep DIR --cold    # no pip cache: every download and build, as on Colab

What stands in for Colab (DIR/base, built once, reused with --keep while the recipe below is unchanged):
- a venv whose torch is *not* the course's pin (requirements.txt pins torch==2.13.0; this is 2.14.1, PyPI's
  CUDA build with its nvidia-* libraries and triton 3.8.0, as Colab's torch is a CUDA build; no other CPU-only
  torch can be had on the machine this was written on), Colab's pip, and what Colab preinstalls that the
  course touches: transformers 4.x and a package that needs it (sentence-transformers 5.1), ipykernel, numpy,
  scipy, matplotlib, ... ;
- a fake `google.colab` package that the kernel imports when it starts, as Colab's kernel does, so the setup
  cell and course_utils.env see Colab.
Each run works in DIR/run-<variant>, a hard-linked copy of DIR/base (instant; pip unlinks a file before it
writes one, so the base stays as built), with an empty working directory (Colab's /content) so that
course_utils is not importable from it. The kernel is started from that venv by nbclient.

The setup cell installs `course_utils` at the release tag of course_utils/project.py; here the environment
variable the cell reads, COURSE_UTILS_SOURCE, points it elsewhere. By default that is a git+file:// URL at a
commit (as a tag is) of a scratch repository, DIR/source, holding this working tree's course_utils, so that the
code matches the notebooks on disk; `--source REQ` passes any pip requirement instead, e.g.
"course-utils @ git+file:///path/to/this/repo@<commit>". Students never set the variable.

Checks (exit status 1 if one fails; `--json FILE` writes everything measured):
- torch untouched: same version, same file, same inode/mtime/size of its files before and after;
- the install changed only what pip reports (the package diff is printed: transformers 4.x -> 5.x ...);
- in the kernel after the setup cell: fla and mamba-ssm import, course_utils detects Colab;
- the notebook runs top to bottom; the setup cell printed its install time;
- with --fail: the cell fails, pip's own error is in the cell's output, and nothing was installed.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from course_utils.authoring import SOURCE_VAR  # the variable the setup cell reads instead of the release tag

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "solutions" / "00_setup.ipynb"
KERNEL = "colab-sim"

# Colab's runtime as far as the course is concerned. torch 2.14.1 and its CUDA libraries lay on the disk of
# the machine this was written on (a local index), so the base built in 1.5-2.5 minutes there; elsewhere pip
# downloads them (about 3 GB). PyPI has no CPU-only torch for x86-64 Linux, and PyTorch's CPU index was not
# reachable there.
COLAB_TORCH = "torch==2.14.1"
COLAB_TRANSFORMERS = "transformers==4.57.6"  # Colab still ships transformers 4.x; fla 0.6.0 needs >=5.6.2,<6
# and one of Colab's packages that needs transformers 4 (sentence-transformers 5.1 requires transformers<5)
COLAB_TRANSFORMERS_USER = "sentence-transformers==5.1.2"
COLAB_PREINSTALLED = [COLAB_TORCH, COLAB_TRANSFORMERS, COLAB_TRANSFORMERS_USER, "ipykernel", "numpy", "scipy",
                      "matplotlib", "ipywidgets", "tqdm", "einops", "nbformat", "setuptools", "wheel", "packaging"]
COLAB_PIP = "pip==24.1.2"  # Colab's; the pip that `python -m venv` bundles here (23.2) rejects name @ git+file://
RECIPE = {"python": sys.version.split()[0], "pip": COLAB_PIP, "packages": COLAB_PREINSTALLED, "recipe": 1}

FAKE_COLAB = '"""Stand-in for google.colab, made by scripts/colab_sim.py: its presence is all the course checks."""\n'
KERNEL_BOOT = "import google.colab; from ipykernel.kernelapp import launch_new_instance; launch_new_instance()"
MISSING_TAG = "v0.0.0-colab-sim-no-such-tag"

# Run with the venv's python, without importing torch: what is installed and where torch's files are.
PROBE = r"""
import glob, importlib.metadata as md, importlib.util, json, os
spec = importlib.util.find_spec("torch")
tdir = os.path.dirname(spec.origin)
files = {}
for rel in ("__init__.py", "version.py", "lib/libtorch_cpu.so", *glob.glob("_C.*.so", root_dir=tdir)):
    p = os.path.join(tdir, rel)
    if os.path.exists(p):
        st = os.stat(p)
        files[rel] = [st.st_ino, st.st_mtime_ns, st.st_size]
dists = {d.metadata["Name"].lower().replace("_", "-"): d.version for d in md.distributions()}
print(json.dumps({"torch_file": spec.origin, "torch_files": files, "dists": dists,
                  "importable": {m: importlib.util.find_spec(m) is not None
                                 for m in ("course_utils", "fla", "mamba_ssm", "google.colab")}}))
"""

# Appended to the notebook (not to the file): what the kernel sees after the setup cell.
VERIFY_CELL = """import json, torch, fla, transformers
from course_utils import get_env
from course_utils.mamba_import import has_mamba_cuda, import_mamba
mamba_ssm = import_mamba()
print("COLAB_SIM " + json.dumps({"torch": torch.__version__, "torch_file": torch.__file__, "fla": fla.__file__,
      "mamba_ssm": mamba_ssm.__file__, "mamba_cuda": has_mamba_cuda(), "transformers": transformers.__version__,
      "is_colab": get_env().is_colab}))"""


def log(msg: str) -> None:
    print(f"[colab_sim {datetime.now():%H:%M:%S}] {msg}", flush=True)


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, text=True, capture_output=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout[-4000:]}{r.stderr[-4000:]}")
    return r


def site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def base_fingerprint(venv: Path) -> list[str]:
    """The dist-info folders of the base: if a run ever changed the base, they differ and it is rebuilt."""
    return sorted(p.name for p in site_packages(venv).glob("*.dist-info"))


def ensure_base(workdir: Path) -> tuple[Path, float | None]:
    """The simulated Colab runtime, built if missing or stale. Returns (path, seconds spent building or None)."""
    base, stamp = workdir / "base", workdir / "base.json"
    if stamp.exists() and base.exists():
        saved = json.loads(stamp.read_text())
        if saved.get("recipe") == RECIPE and saved.get("fingerprint") == base_fingerprint(base):
            log(f"reusing the simulated Colab runtime {base}")
            return base, None
        log("the simulated Colab runtime is stale: rebuilding it")
    shutil.rmtree(base, ignore_errors=True)
    stamp.unlink(missing_ok=True)
    t0 = time.perf_counter()
    log(f"building the simulated Colab runtime in {base} ({', '.join(COLAB_PREINSTALLED[:2])}, ...)")
    sh([sys.executable, "-m", "venv", str(base)])
    pip = [str(base / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    sh([*pip, COLAB_PIP])
    sh([*pip, *COLAB_PREINSTALLED])
    colab = site_packages(base) / "google" / "colab"  # no google/__init__.py: `google` stays a namespace
    colab.mkdir(parents=True)
    (colab / "__init__.py").write_text(FAKE_COLAB)
    seconds = time.perf_counter() - t0
    stamp.write_text(json.dumps({"recipe": RECIPE, "fingerprint": base_fingerprint(base),
                                 "build_seconds": round(seconds, 1)}, indent=1))
    log(f"built in {seconds:.0f} s")
    return base, seconds


def discard(path: Path) -> None:
    """Remove a used run in the background: deleting ~55,000 files takes up to a minute on a busy disk."""
    if path.exists():
        trash = path.with_name(f"trash-{path.name}-{os.getpid()}-{time.time_ns()}")
        path.rename(trash)
        subprocess.Popen(["rm", "-rf", str(trash)], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def fresh_copy(base: Path, run: Path) -> None:
    discard(run)
    # Hard links: a second or two, and the base stays as built because pip unlinks a file before writing one.
    try:
        sh(["cp", "-al", str(base), str(run)])
    except (OSError, RuntimeError):  # no GNU cp
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(base, run, symlinks=True, copy_function=os.link)
    kdir = run / "share" / "jupyter" / "kernels" / KERNEL
    kdir.mkdir(parents=True)
    (kdir / "kernel.json").write_text(json.dumps({
        "argv": [str(run / "bin" / "python"), "-c", KERNEL_BOOT, "-f", "{connection_file}"],
        "display_name": "Python 3 (simulated Colab)", "language": "python"}, indent=1))


def probe(venv: Path) -> dict:
    return json.loads(sh([str(venv / "bin" / "python"), "-c", PROBE]).stdout)


def snapshot_source(dest: Path, rev: str | None = None) -> str:
    """course_utils as it is in this working tree, committed to a scratch git repository at dest: a git URL at
    a commit, as the release tag is, but with the code the notebooks on disk were written against (HEAD may
    lag behind them). The commit's dates are fixed, so the same code gives the same URL (and pip's cache)."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(ROOT / "course_utils", dest / "course_utils", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    git = ["git", "-c", "user.name=colab_sim", "-c", "user.email=colab_sim@localhost", "-c", "commit.gpgsign=false"]
    fixed = {**os.environ, "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z"}
    sh([*git, "init", "-q", "-b", "main"], cwd=dest)
    sh([*git, "add", "course_utils", "pyproject.toml"], cwd=dest)
    sh([*git, "commit", "-q", "-m", "course_utils from the working tree"], cwd=dest, env=fixed)
    sha = sh(["git", "rev-parse", "HEAD"], cwd=dest).stdout.strip()
    return f"course-utils @ git+file://{dest}@{rev or sha}"


def kernel_env(run: Path, source: str, cold: bool = False) -> dict[str, str]:
    """The kernel's environment: this process's, minus what would leak the course's own venv into it."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "JUPYTER_PATH", "TRITON_INTERPRET",
                        "PYTEST_CURRENT_TEST", "MPLBACKEND")}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and not p.startswith(str(ROOT / ".venv"))]
    env["PATH"] = os.pathsep.join([str(run / "bin"), *path])
    env[SOURCE_VAR] = source
    if cold:  # as on a fresh Colab runtime: nothing downloaded or built before
        env["PIP_NO_CACHE_DIR"] = "1"
    return env


def cell_seconds(cell) -> float | None:
    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return None
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
    return round((parse(end) - parse(start)).total_seconds(), 1)


def cell_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type == "error":
            parts.append(f"{out.ename}: {out.evalue}\n" + "\n".join(out.traceback))
        elif "text/plain" in out.get("data", {}):
            parts.append(out.data["text/plain"])
    return re.sub(r"\x1b\[[0-9;]*m", "", "".join(parts))  # tracebacks carry ANSI colours


def execute(nb, run: Path, content: Path, env: dict[str, str], timeout: int):
    from nbclient import NotebookClient

    os.environ["JUPYTER_PATH"] = str(run / "share" / "jupyter")  # where the kernelspec lives, for this process
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=timeout, allow_errors=True, record_timing=True,
                            resources={"metadata": {"path": str(content)}})
    client.execute(env=env)
    return nb


def simulate(workdir: Path, source: str | None = None, fail: bool = False, notebook: Path = NOTEBOOK,
             timeout: int = 900, cold: bool = False) -> dict:
    import nbformat

    workdir.mkdir(parents=True, exist_ok=True)
    report: dict = {"variant": "fail" if fail else "ok", "notebook": str(notebook), "workdir": str(workdir),
                    "pip_cache": "off" if cold else "on"}
    with open(workdir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one simulation per directory at a time
        base, built = ensure_base(workdir)
        report["base_build_seconds"] = built
        run, content = workdir / f"run-{report['variant']}", workdir / f"content-{report['variant']}"
        t0 = time.perf_counter()
        fresh_copy(base, run)
        report["copy_seconds"] = round(time.perf_counter() - t0, 1)
        shutil.rmtree(content, ignore_errors=True)
        content.mkdir()
        if source is None:
            source = snapshot_source(workdir / "source", MISSING_TAG if fail else None)
        report["source"] = source
        before = probe(run)
        report["before"] = {k: before[k] for k in ("torch_file", "torch_files", "importable")}

        nb = nbformat.read(notebook, as_version=4)
        setup_idx = next(i for i, c in enumerate(nb.cells) if "setup" in c.metadata.get("tags", []))
        if fail:
            nb.cells = [nb.cells[setup_idx]]
            setup_idx = 0
        else:
            nb.cells.append(nbformat.v4.new_code_cell(VERIFY_CELL))
        log(f"running {notebook.name} ({'setup cell only' if fail else 'setup cell, then the notebook'}) "
            f"in the simulated Colab, course_utils from {source}")
        t0 = time.perf_counter()
        execute(nb, run, content, kernel_env(run, source, cold), timeout)
        report["kernel_wall_seconds"] = round(time.perf_counter() - t0, 1)

        after = probe(run)
        stamp = json.loads((workdir / "base.json").read_text())
        report["base_changed"] = base_fingerprint(base) != stamp["fingerprint"]
        if report["base_changed"]:
            (workdir / "base.json").unlink()  # rebuilt next time
        nbformat.write(nb, run / "executed.ipynb")

    setup_cell = nb.cells[setup_idx]
    setup_out = cell_text(setup_cell)
    report["setup_cell_seconds"] = cell_seconds(setup_cell)
    m = re.search(r"installed in (\d+(?:\.\d+)?) s", setup_out)
    report["install_seconds_printed"] = float(m.group(1)) if m else None
    others = [cell_seconds(c) for i, c in enumerate(nb.cells) if c.cell_type == "code" and i != setup_idx]
    report["notebook_seconds_after_setup"] = round(sum(s for s in others if s), 1) if not fail else None
    report["setup_cell_output"] = setup_out
    errors = [(i, o.ename, o.evalue) for i, c in enumerate(nb.cells) for o in c.get("outputs", [])
              if o.output_type == "error"]
    report["errors"] = [f"cell {i}: {e}: {v}" for i, e, v in errors]
    report["after"] = {k: after[k] for k in ("torch_file", "torch_files", "importable")}
    db, da = before["dists"], after["dists"]
    report["installed_changes"] = {n: [db.get(n), da.get(n)] for n in sorted(set(db) | set(da))
                                   if db.get(n) != da.get(n)}
    report["pip_conflicts"] = [ln for ln in setup_out.splitlines() if "incompatible" in ln]
    report["torch_version"] = [db.get("torch"), da.get("torch")]
    report["transformers_version"] = [db.get("transformers"), da.get("transformers")]
    verify = re.search(r"^COLAB_SIM (\{.*\})$", cell_text(nb.cells[-1]), re.M) if not fail else None
    report["kernel_after_setup"] = json.loads(verify.group(1)) if verify else None
    report["checks"] = checks(report, fail)
    return report


def checks(r: dict, fail: bool) -> dict[str, bool]:
    c = {
        "torch version unchanged": r["torch_version"][0] is not None and r["torch_version"][0] == r["torch_version"][1],
        "torch files unchanged (path, inode, mtime, size)": r["before"]["torch_file"] == r["after"]["torch_file"]
        and r["before"]["torch_files"] == r["after"]["torch_files"] and bool(r["before"]["torch_files"]),
        "torch not reinstalled by pip": "torch" not in r["installed_changes"],
        "google.colab present": r["before"]["importable"]["google.colab"],
        "simulated Colab base unchanged": not r["base_changed"],
    }
    if fail:
        out = r["setup_cell_output"]
        c["setup cell failed"] = any(e.startswith("cell 0: CalledProcessError") and "non-zero exit status" in e
                                     for e in r["errors"])
        c["pip's error is in the cell output"] = f"pathspec '{MISSING_TAG}' did not match" in out
        c["nothing installed"] = not r["installed_changes"]
    else:
        k = r["kernel_after_setup"] or {}
        c["notebook ran without errors"] = not r["errors"]
        c["install time printed"] = r["install_seconds_printed"] is not None
        c["fla and mamba-ssm import in the kernel"] = bool(k.get("fla") and k.get("mamba_ssm"))
        c["course_utils detects Colab"] = k.get("is_colab") is True and "Google Colab" in r["setup_cell_output"]
        c["kernel's torch is the preinstalled one"] = (k.get("torch", "").split("+")[0] == r["torch_version"][0]
                                                      and k.get("torch_file") == r["before"]["torch_file"])
    return c


def summary(r: dict) -> str:
    lines = [f"variant: {r['variant']}   pip cache: {r['pip_cache']}   course_utils from: {r['source']}"]
    if r["base_build_seconds"] is not None:
        lines.append(f"simulated Colab runtime built in {r['base_build_seconds']:.0f} s")
    lines.append(f"hard-linked copy: {r['copy_seconds']} s; kernel wall time (start to shutdown): "
                 f"{r['kernel_wall_seconds']} s")
    lines.append(f"setup cell: {r['setup_cell_seconds']} s (printed install time: {r['install_seconds_printed']} s)")
    if r["notebook_seconds_after_setup"] is not None:
        lines.append(f"rest of the notebook: {r['notebook_seconds_after_setup']} s")
    lines.append(f"torch: {r['torch_version'][0]} -> {r['torch_version'][1]} at {r['after']['torch_file']}")
    lines.append("pip changed: " + (", ".join(f"{n} {a} -> {b}" for n, (a, b) in r["installed_changes"].items())
                                    or "nothing"))
    lines += ["setup cell output:", *("  | " + ln for ln in r["setup_cell_output"].rstrip().splitlines()[-40:])]
    if r["errors"]:
        lines += ["errors:", *("  " + e for e in r["errors"])]
    lines += [f"{'PASS' if ok else 'FAIL'}  {name}" for name, ok in r["checks"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="build (or reuse) the simulated Colab runtime in DIR and keep it; default: a temp dir")
    parser.add_argument("--source", help=f"pip requirement for course_utils, passed as ${SOURCE_VAR} "
                                         "(default: this working tree's course_utils, via git+file:// at a commit)")
    parser.add_argument("--fail", action="store_true",
                        help="failing install (course_utils at a tag that does not exist): expect the cell to stop")
    parser.add_argument("--cold", action="store_true",
                        help="no pip cache in the kernel (PIP_NO_CACHE_DIR=1): every download and build, as on Colab")
    parser.add_argument("--notebook", type=Path, default=NOTEBOOK)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    parser.add_argument("--json", type=Path, help="write the full report here")
    args = parser.parse_args(argv)

    with contextlib.ExitStack() as stack:
        if args.keep:
            workdir = args.keep.resolve()
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="colab-sim-")))
        report = simulate(workdir, args.source, args.fail, args.notebook.resolve(), args.timeout, args.cold)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print(summary(report))
    return 0 if all(report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
