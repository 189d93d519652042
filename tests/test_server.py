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


def _listening_addresses(port: int) -> list[str]:
    """Local addresses (hex, as the kernel lists them) of the TCP sockets listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if int(hex_port, 16) == port and state == "0A":  # 0A: LISTEN
                found.append(address)
    return found


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads Linux's /proc/net/tcp")
def test_listens_on_localhost_only(server):
    """The kernel's own table of listening sockets: bound to 127.0.0.1 only, never 0.0.0.0 or ::."""
    base, _ = server
    addresses = _listening_addresses(int(base.rsplit(":", 1)[1]))
    assert addresses, "no listening socket found for the server's port"
    assert set(addresses) == {"0100007F"}, f"listening on {addresses} (0100007F is 127.0.0.1)"
