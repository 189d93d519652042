"""`make lab` serves the labs on localhost, and only to someone holding the token."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture(scope="module")
def server():
    port, token = free_port(), "course-test-token"
    args = ["make", "-s", "--no-print-directory", "lab", f"PORT={port}", "LAB_ARGS=--no-browser"]
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():  # running outside .venv: use this Python
        args += ["ACTIVE=1", f"PYTHON={sys.executable}"]
    proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, "JUPYTER_TOKEN": token},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if get(f"{base}/api/status?token={token}")[0] == 200:
                break
        except OSError:
            time.sleep(0.5)
    else:
        os.killpg(proc.pid, 15)
        pytest.fail("JupyterLab did not answer within 90 s:\n" + proc.stdout.read().decode()[-2000:])
    yield base, token
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)


def test_serves_the_labs_with_the_token(server):
    base, token = server
    status, body = get(f"{base}/api/contents?token={token}")
    assert status == 200
    names = {item["name"] for item in json.loads(body)["content"]}
    assert {p.name for p in (ROOT / "labs").glob("*.ipynb")} <= names and "00_setup.ipynb" in names
    assert get(f"{base}/lab?token={token}")[0] == 200


def test_refuses_requests_without_the_token(server):
    base, _ = server
    assert get(f"{base}/api/contents")[0] in (401, 403)
    assert get(f"{base}/api/contents?token=wrong")[0] in (401, 403)


def test_listens_on_localhost_only(server):
    base, _ = server
    assert base.startswith("http://127.0.0.1:")
