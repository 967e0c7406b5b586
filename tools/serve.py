"""The app as a local server for scripts and tests: ``streamlit run`` on a free loopback port, healthy or an error,
stopped on the way out (the load test and the real-browser test both drive it)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from routescope.models.data import REPO_ROOT

STREAMLIT_FLAGS = [
    "--server.headless",
    "true",
    "--server.fileWatcherType",
    "none",
    "--browser.gatherUsageStats",
    "false",
]


class ServerError(RuntimeError):
    """The app exited, or did not answer its health check before the deadline."""


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(log: Path, timeout_s: float = 600) -> Iterator[Server]:
    """The app on 127.0.0.1 with the bundled models (not ``$ROUTESCOPE_MODELS`` / ``$ROUTESCOPE_DATA`` of the
    shell), yielded once ``/_stcore/health`` answers ok; terminated (then killed) when the block ends."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("ROUTESCOPE_MODELS", "ROUTESCOPE_DATA")}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "routescope.app.serve",  # `make app`'s launcher: warmed, then `streamlit run app/streamlit_app.py`
                "--server.port",
                str(port),
                "--server.address",
                "127.0.0.1",
                *STREAMLIT_FLAGS,
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise ServerError(f"streamlit exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as response:
                    if response.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ServerError(f"streamlit not healthy after {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield Server(url, process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
