"""The dashboard on a free localhost port, for a real browser: shared by tests/test_browser.py,
tests/test_classroom_browser.py, bench/bench_first_launch_browser.py and bench/bench_classroom.py."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[1]
# headless Chromium as root in a container; swiftshader so the WebGL scatter draws without a GPU
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--enable-unsafe-swiftshader"]


def free_port() -> int:
    """A localhost TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(env: dict, log: IO | int = subprocess.DEVNULL) -> tuple[subprocess.Popen, str]:
    """`streamlit run app.py` headless on 127.0.0.1 and a free port; returns (process, url)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.address", "127.0.0.1", "--server.port", str(port),
                             "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def start_serve(env: dict, log: IO | int = subprocess.DEVNULL, limits: Path | None = None,
                address: str = "127.0.0.1") -> tuple[subprocess.Popen, str]:
    """`python -m engine serve` (a classroom server: owner and guests) on a free port; returns (process, url).
    The owner's secret comes from env's DDAUDIT_OWNER_SECRET."""
    port = free_port()
    cmd = [sys.executable, "-m", "engine", "serve", "--address", address, "--port", str(port)]
    if limits is not None:
        cmd += ["--limits", str(limits)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, f"http://{address}:{port}"


def wait_healthy(proc: subprocess.Popen, url: str, timeout_s: float) -> bool:
    """True once /_stcore/health answers ok; False if the server exits or timeout_s passes first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return True
        except OSError:
            time.sleep(0.5)
    return False


def stop(proc: subprocess.Popen) -> None:
    """Terminate the server, killing it if it does not exit within 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
