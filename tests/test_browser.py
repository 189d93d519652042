"""Every solution notebook, run in a real browser as a student runs it: JupyterLab started by `make lab` (same
flags, token on) over a copy of solutions/, headless Chromium driven by playwright, *Run → Run All Cells*,
then: every code cell ran and none failed, every ipywidgets view rendered, every figure is shown. Also: the
server refuses requests without the token, and JupyterLab's news pop-up is off.

scripts/browser_deps.sh installs Debian's chromium and playwright (requirements-browser.txt) when missing, or
the tests skip saying what to install (COURSE_REQUIRE_BROWSER=1 turns that skip into a failure).
Screenshots, one per notebook and one more on failure: build/browser-screenshots/.

What the page shows, checked on JupyterLab 4.6.6 in Chromium 156:
- an error's traceback renders exactly like a stderr stream, as
  `.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]` (red background for both; no element
  has `application/vnd.jupyter.error`), so errors and unrun cells are read from the notebook as the browser
  saves it (Ctrl+S);
- a cell's own outputs are `.jp-Cell-outputArea > .jp-OutputArea-child > .jp-OutputArea-output`; an Output
  widget holds a nested `.jp-OutputArea` of its own (the explorers' figures), not counted as the cell's;
- a widget view is an output *without* data-mime-type holding `.jupyter-widgets` elements; a widget closed by
  the kernel (tqdm's leave=False bars) leaves that output empty and `.lm-mod-hidden`;
- a figure is `.jp-OutputArea-output[data-mime-type="image/png"] img` (decoded: naturalWidth > 0);
- a prompt reads `[*]:` while its cell is queued or running, `[ ]:` when it never ran;
  `.jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator[data-status]` says idle even while the kernel is
  still starting: the status bar's "Python 3 (ipykernel) | Idle" is waited for first;
- the news question is a `.Toastify__toast` "Would you like to get notified about official Jupyter news?";
- with JupyterLab's default windowing (`contentVisibility`) an off-screen cell's innerText is empty: the page
  is read through textContent.
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
SHOTS = ROOT / "build" / "browser-screenshots"
NEWS_PLUGIN = "@jupyterlab/apputils-extension:announcements"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
RUN_TIMEOUT_S = 300  # one notebook, Run All to idle: 20-150 s measured on a busy 2-core CPU
PROBE = "zz_probe_that_must_fail.ipynb"  # the checks can fail: test_a_failing_notebook_is_reported


# ----------------------------------------------------------------------------------------------- fixtures


def say(config, line: str):
    """A line on the terminal even when pytest captures output (skip reasons and paths are not shown by -q)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)


@pytest.fixture(scope="module")
def chromium(request) -> str:
    """The Chromium for playwright; installs it and playwright when missing (scripts/browser_deps.sh)."""
    try:
        r = subprocess.run(["bash", "scripts/browser_deps.sh"], cwd=ROOT, env={**os.environ, "PY": sys.executable},
                           capture_output=True, text=True, timeout=1500)
    except subprocess.TimeoutExpired:
        pytest.fail("scripts/browser_deps.sh did not finish within 25 min")
    if r.returncode == 3:
        msg = "browser test skipped: " + r.stderr.strip().replace("\n", "; ")
        if os.environ.get("COURSE_REQUIRE_BROWSER") == "1":
            pytest.fail(msg)
        say(request.config, msg)
        pytest.skip(msg)
    assert r.returncode == 0, f"scripts/browser_deps.sh failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return r.stdout.strip().splitlines()[-1].removeprefix("chromium: ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, method: str = "GET") -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@dataclass
class Lab:
    base: str
    token: str
    root: Path  # the notebook directory it serves

    def api(self, path: str, method: str = "GET"):
        status, body = request(f"{self.base}/api/{path}?token={self.token}", method)
        assert status < 300, f"{method} /api/{path}: HTTP {status}"
        return json.loads(body) if body else None

    def shut_down_kernels(self):
        for kernel in self.api("kernels"):
            self.api(f"kernels/{kernel['id']}", "DELETE")


def write_probe(path: Path):
    """A notebook whose run must be reported as failed: one widget, one error, one cell that never runs."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell("import ipywidgets\nipywidgets.IntSlider(3)"),
                nbformat.v4.new_code_cell('raise ValueError("probe: this cell must fail")'),
                nbformat.v4.new_code_cell('print("never runs")')]
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, chromium):
    """`make lab` (the students' command, same flags) over a copy of solutions/ plus the probe notebook; its
    workspace and user settings in a temporary directory, so that nothing of the repository or ~/.jupyter is
    read or written."""
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "notebooks"
    root.mkdir()
    for nb in SOLUTIONS:
        shutil.copy(nb, root / nb.name)
    write_probe(root / PROBE)
    port, token = free_port(), "course-browser-test-token"
    args = ["make", "-s", "--no-print-directory", "lab", f"PORT={port}", f"LAB_DIR={root}", "LAB_ARGS=--no-browser"]
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():  # running outside .venv: use this Python
        args += ["ACTIVE=1", f"PYTHON={sys.executable}"]
    env = {**os.environ, "JUPYTER_TOKEN": token, "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp / "user-settings")}
    log = open(tmp / "server.log", "wb")
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Lab(f"http://127.0.0.1:{port}", token, root)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            try:
                if request(f"{server.base}/api/status?token={token}")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not answer within 120 s:\n" + (tmp / "server.log").read_text()[-3000:])
        yield server
    finally:
        try:
            server.shut_down_kernels()
        except Exception:  # the server may be gone already; killing its process group below is what matters
            pass
        for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=wait_s)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


@pytest.fixture(scope="module")
def browser(chromium, request):
    from playwright.sync_api import sync_playwright

    shutil.rmtree(SHOTS, ignore_errors=True)  # only this run's screenshots: no stale -failure.png
    SHOTS.mkdir(parents=True)
    request.addfinalizer(lambda: say(request.config, f"\nbrowser screenshots: {SHOTS}"))
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=chromium, headless=True, timeout=60_000,
                               args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            b.close()
    finally:
        pw.stop()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(30_000)
    context.set_default_navigation_timeout(90_000)  # JupyterLab's first load on a busy 2-core machine
    try:
        yield context.new_page()
    finally:
        context.close()


# ------------------------------------------------------------------------------------- driving JupyterLab


def open_notebook(page, lab: Lab, name: str):
    """Open the notebook in a fresh workspace (`?reset`), wait for its kernel, close the file browser."""
    page.goto(f"{lab.base}/lab/tree/{name}?reset&token={lab.token}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=90_000)
    page.wait_for_selector(".jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator[data-status='idle']",
                           timeout=90_000)
    page.wait_for_function("() => document.querySelector('.jp-StatusBar-Widget')"
                           " && [...document.querySelectorAll('.jp-StatusBar-TextItem')]"
                           ".some(e => /\\| Idle/.test(e.textContent))", timeout=90_000)
    if page.locator("#jp-left-stack").is_visible():
        page.keyboard.press("Control+b")


def prompts(page) -> list[str]:
    return page.locator(".jp-NotebookPanel .jp-CodeCell .jp-InputPrompt").evaluate_all(
        "els => els.map(e => e.textContent.trim())")


def run_all(page, timeout_s: float = RUN_TIMEOUT_S):
    """Run → Run All Cells from the menu bar, then wait until no cell is queued and the kernel is idle."""
    before = prompts(page)
    page.locator("#jp-MainMenu .lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu .lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    indicator = page.locator(".jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator")
    started, idle_polls, deadline = False, 0, time.time() + timeout_s
    while time.time() < deadline:
        now = prompts(page)
        queued = any("*" in p for p in now)
        started = started or queued or now != before
        idle = started and not queued and indicator.get_attribute("data-status") == "idle"
        idle_polls = idle_polls + 1 if idle else 0
        if idle_polls >= 3:  # idle for three polls in a row: between two cells the kernel is briefly idle
            return
        time.sleep(0.5)
    raise TimeoutError(f"Run All did not finish within {timeout_s} s; prompts: {prompts(page)}")


def save(page, lab: Lab, name: str):
    """File → Save (Ctrl+S) and wait until the new version is on disk and complete.

    The file itself is watched, not the contents API: a GET while the server writes a large notebook answered
    HTTP 500 in CI (04 and 06, a few MB of outputs)."""
    path = lab.root / name
    before = path.stat().st_mtime_ns
    page.locator(".jp-NotebookPanel .jp-Notebook").click(position={"x": 5, "y": 5})  # focus, command mode
    page.keyboard.press("Escape")
    page.keyboard.press("Control+s")
    deadline = time.time() + 60
    while True:
        assert time.time() < deadline, f"{name}: Ctrl+S did not save within 60 s"
        if path.stat().st_mtime_ns != before:
            try:
                json.loads(path.read_text())
                return
            except (ValueError, OSError):  # still being written
                pass
        time.sleep(0.3)


def page_cells(page) -> list[dict]:
    """Each code cell on the page: its prompt and its top-level outputs (an ipywidgets Output widget holds an
    output area of its own: those are counted inside the widget view, not as outputs of the cell)."""
    return page.locator(".jp-NotebookPanel .jp-CodeCell").evaluate_all("""cells => cells.map(c => {
        const area = c.querySelector('.jp-Cell-outputArea');
        const outs = area ? [...area.querySelectorAll(':scope > .jp-OutputArea-child > .jp-OutputArea-output')] : [];
        return {prompt: c.querySelector('.jp-InputPrompt').textContent.trim(), outputs: outs.map(e => ({
            mime: e.getAttribute('data-mime-type'),  // null for a widget view
            hidden: e.classList.contains('lm-mod-hidden'),  // a widget closed by the kernel (tqdm leave=False)
            views: e.querySelectorAll('.jupyter-widgets').length,
            images: [...e.querySelectorAll('img')].filter(i => i.complete && i.naturalWidth > 0).length,
            text: e.textContent.slice(0, 300)}))};
    })""")


@dataclass
class Expected:
    """What a notebook's committed outputs show. cells: per code cell, (widget views, figures);
    widget_figures: figures inside Output widgets, from the saved widget state (None: no state saved)."""

    cells: list[tuple[int, int]]
    widget_figures: int | None


def expected_outputs(nb) -> Expected:
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state")
    cells = []
    for cell in (c for c in nb.cells if c.cell_type == "code"):
        data = [out.get("data", {}) for out in cell.get("outputs", [])]
        cells.append((sum(WIDGET_MIME in d for d in data), sum(any(k.startswith("image/") for k in d) for d in data)))
    widget_figures = None if state is None else sum(
        any(k.startswith("image/") for k in out.get("data", {}))
        for model in state.values() if model.get("model_name") == "OutputModel"
        for out in model.get("state", {}).get("outputs", []))
    return Expected(cells, widget_figures)


def problems_after_run(page, lab: Lab, name: str, expected: Expected) -> list[str]:
    """Everything wrong with the notebook as the browser shows it and saves it; [] when all is well."""
    problems = []
    cells = page_cells(page)
    if len(cells) != len(expected.cells):
        problems.append(f"{len(cells)} code cells on the page, {len(expected.cells)} in the notebook")
    widget_figures = 0
    for i, (cell, (views, figures)) in enumerate(zip(cells, expected.cells)):
        # A widget view renders, or is hidden because the kernel closed its widget (tqdm's leave=False bars);
        # which ones were closed, the committed notebook does not say (nbclient keeps closed widgets' state).
        widgets = [o for o in cell["outputs"] if o["mime"] is None]
        shown = [o for o in widgets if not o["hidden"]]
        for o in shown:
            if o["views"] == 0 or re.search(r"Error displaying widget|Loading widget", o["text"]):
                problems.append(f"code cell {i}: widget not rendered: {o['text'][:200]!r}")
        if len(widgets) != views:
            problems.append(f"code cell {i}: {len(widgets)} widget outputs, committed {views}")
        widget_figures += sum(o["images"] for o in shown)
        shown_figures = sum(o["images"] > 0 for o in cell["outputs"] if (o["mime"] or "").startswith("image/"))
        if shown_figures != figures:
            problems.append(f"code cell {i}: {shown_figures} figures shown, committed {figures}")
    if expected.widget_figures is not None and widget_figures != expected.widget_figures:
        problems.append(f"{widget_figures} figures inside widgets, committed {expected.widget_figures}")
    toasts = page.locator(".Toastify__toast").evaluate_all("els => els.map(e => e.textContent)")
    problems += [f"news pop-up shown: {t!r}" for t in toasts if "news" in t.lower()]

    save(page, lab, name)  # the saved notebook tells an error from a stderr stream; the page does not
    nb = nbformat.read(lab.root / name, as_version=4)
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        if cell.execution_count is None:
            problems.append(f"code cell {i} never ran: {cell.source[:80]!r}")
        for out in cell.outputs:
            if out.output_type == "error":
                problems.append(f"code cell {i} failed: {out.ename}: {out.evalue}")
            elif out.output_type == "stream" and out.name == "stderr":
                print(f"{name} code cell {i} stderr: {out.text[:300]}")
    return problems


def screenshot(page, path: Path):
    """The whole notebook in one PNG: JupyterLab scrolls inside its own panel, so a full-page screenshot of a
    normal window shows one screen; the window is made as tall as the notebook and scrolled to its top."""
    height = page.evaluate("() => { const n = document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer');"
                           " return n ? n.scrollHeight : 0 }")
    page.set_viewport_size({"width": 1400, "height": max(900, min(int(height) + 150, 30_000))})
    page.evaluate("() => { const n = document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer');"
                  " if (n) n.scrollTop = 0 }")
    page.wait_for_timeout(1500)  # re-layout; off-screen cells (content-visibility) drawn
    page.screenshot(path=path, full_page=True, timeout=60_000)


def run_in_browser(page, lab: Lab, name: str, expected: Expected) -> list[str]:
    """Open, Run All, check; a screenshot at the end, and one more at the moment of a failure."""
    stem = Path(name).stem
    try:
        open_notebook(page, lab, name)
        run_all(page)
        problems = problems_after_run(page, lab, name, expected)
        if problems:  # the first cell named, on screen
            first = re.search(r"code cell (\d+)", "\n".join(problems))
            if first:
                page.locator(".jp-NotebookPanel .jp-CodeCell").nth(int(first.group(1))).scroll_into_view_if_needed()
            page.screenshot(path=SHOTS / f"{stem}-failure.png", timeout=30_000)
        return problems
    except Exception:
        page.screenshot(path=SHOTS / f"{stem}-failure.png", timeout=30_000)
        raise
    finally:
        try:
            screenshot(page, SHOTS / f"{stem}.png")
        finally:
            lab.shut_down_kernels()  # each notebook's kernel holds torch: one at a time on a small machine


# ------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_solution_runs_in_jupyterlab(page, lab, path):
    t0 = time.time()
    problems = run_in_browser(page, lab, path.name, expected_outputs(nbformat.read(path, as_version=4)))
    print(f"{path.name}: opened, ran and checked in {time.time() - t0:.0f} s; screenshot {SHOTS / path.stem}.png")
    assert not problems, (f"{path.name} in JupyterLab (screenshots {SHOTS / path.stem}.png and -failure.png):\n"
                          + "\n".join(problems))


def test_widget_explorers_are_checked():
    # Labs 01 and 03 display widget explorers (a figure in an Output widget): the checks above cover them.
    for name in "01_kernel_trick.ipynb", "03_chunkwise.ipynb":
        expected = expected_outputs(nbformat.read(ROOT / "solutions" / name, as_version=4))
        assert any(views for views, _ in expected.cells) and expected.widget_figures, (name, expected)


def test_a_failing_notebook_is_reported(page, lab):
    # The probe's cells: a slider, a ValueError, a print that never runs. Told to expect two sliders and a
    # figure from the first two, the checks must report all four problems.
    problems = run_in_browser(page, lab, PROBE, Expected(cells=[(2, 0), (0, 1), (0, 0)], widget_figures=0))
    assert sorted(problems) == sorted([
        "code cell 0: 1 widget outputs, committed 2",
        "code cell 1: 0 figures shown, committed 1",
        "code cell 1 failed: ValueError: probe: this cell must fail",
        "code cell 2 never ran: 'print(\"never runs\")'"]), problems


def test_refuses_requests_without_the_token(page, lab):
    assert request(f"{lab.base}/api/contents")[0] == 403
    assert request(f"{lab.base}/api/contents?token=wrong")[0] == 403
    host, port = lab.base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/lab")
        r = conn.getresponse()
        assert r.status == 302 and "/login" in r.getheader("Location", ""), (r.status, r.getheaders())
    finally:
        conn.close()
    page.goto(f"{lab.base}/lab")  # in the browser: the login page, no notebook
    assert "/login" in page.url
    assert page.locator("input[type=password]").count() >= 1 and page.locator(".jp-Notebook").count() == 0


def test_news_popup_is_off(page, lab):
    page.goto(f"{lab.base}/lab?reset&token={lab.token}")
    config = json.loads(page.locator("#jupyter-config-data").text_content())
    assert NEWS_PLUGIN in config["disabledExtensions"], config["disabledExtensions"]
    page.wait_for_selector(".jp-LabShell", timeout=90_000)
    page.wait_for_timeout(3000)
    assert not page.get_by_text("official Jupyter news").count()


def fake_bin(tmp_path: Path, uid: int) -> Path:
    """A PATH with what browser_deps.sh needs but no chromium, `id -u` printing uid, a failing apt-get and
    a `python` for which playwright counts as installed."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in ("bash", "grep", "head", "dirname", "timeout"):
        (bin_ / tool).symlink_to(shutil.which(tool))
    for name, body in (("id", f"echo {uid}"), ("apt-get", "exit 100"), ("python", "exit 0")):
        (bin_ / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_ / name).chmod(0o755)
    return bin_


@pytest.mark.parametrize("uid, says", [(1000, "apt-get needs root; "), (0, "apt-get install chromium failed; ")])
def test_browser_deps_says_what_to_install_when_it_cannot(tmp_path, uid, says):
    bin_ = fake_bin(tmp_path, uid)
    r = subprocess.run([str(bin_ / "bash"), "scripts/browser_deps.sh"], cwd=ROOT, capture_output=True, text=True,
                       env={"PATH": str(bin_), "PY": str(bin_ / "python")}, timeout=60)
    assert r.returncode == 3, r.stdout + r.stderr
    assert says in r.stderr.replace("\n", "; ") and "install chromium yourself" in r.stderr, r.stderr
    r = subprocess.run([str(bin_ / "bash"), "scripts/browser_deps.sh"], cwd=ROOT, capture_output=True, text=True,
                       env={"PATH": str(bin_), "PY": str(bin_ / "python"), "CHROMIUM": "/no/such/chromium"},
                       timeout=60)
    assert r.returncode == 3 and "CHROMIUM=/no/such/chromium is not an executable" in r.stderr, r.stderr
