"""Processes a test starts on this machine: a free port on 127.0.0.1, bounded waits, and a stop
by PID."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time


def wait_until(check, *, timeout: float, what: str, every: float = 0.25):
    """Poll `check()` until it returns something truthy (returned), for at most `timeout` seconds."""
    deadline, value = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if value := check():
                return value
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s (last seen: {value!r:.300})")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    """Stop a process we started: SIGTERM, then SIGKILL after 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
