"""``lakd demo --quick`` needs no network: it runs in a process whose sockets cannot reach anything
(a ``sitecustomize`` refuses every internet connection and name lookup, and records the attempt)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BLOCK = textwrap.dedent(
    """
    import os, socket

    _log = os.environ["LAKD_TEST_SOCKET_LOG"]
    _INTERNET = (socket.AF_INET, socket.AF_INET6)


    def _refuse(what):
        with open(_log, "a", encoding="utf-8") as f:
            f.write(f"{what}\\n")
        raise OSError(101, f"network blocked by the test ({what})")


    _connect = socket.socket.connect
    _connect_ex = socket.socket.connect_ex


    def connect(self, address):
        if self.family in _INTERNET:
            _refuse(f"connect {address!r}")
        return _connect(self, address)


    def connect_ex(self, address):
        if self.family in _INTERNET:
            _refuse(f"connect_ex {address!r}")
        return _connect_ex(self, address)


    def create_connection(address, *args, **kwargs):
        _refuse(f"create_connection {address!r}")


    def getaddrinfo(host, *args, **kwargs):
        _refuse(f"getaddrinfo {host!r}")


    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.create_connection = create_connection
    socket.getaddrinfo = getaddrinfo
    """
)


def test_quick_demo_runs_with_the_network_blocked(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK)
    log = tmp_path / "sockets.log"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")  # offline by the network, not by a flag
    }
    env |= {
        "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]),
        "LAKD_TEST_SOCKET_LOG": str(log),
        "HF_HOME": str(tmp_path / "hf"),  # an empty Hugging Face cache: nothing to fall back on
    }
    args = ["demo", "--quick", "--recipe", "fd", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    result = subprocess.run(
        [sys.executable, "-m", "lakd", *args], env=env, capture_output=True, text=True, timeout=1200, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    check = subprocess.run(
        [sys.executable, "-c", "import socket; socket.create_connection(('example.org', 80))"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert "network blocked by the test" in check.stderr  # the block was in force
    attempts = log.read_text().splitlines()
    assert attempts == ["create_connection ('example.org', 80)"], attempts  # the demo tried nothing
    assert (tmp_path / "out" / "report" / "report.html").is_file()
    assert "report: " in result.stdout
