"""Node processes for the ROS tests (output to a file, never to a pipe nobody reads) and polling.

A long-lived node writing warnings into an unread pipe blocks once the pipe's 64 KiB fill, and a
blocked node then never answers SIGTERM; a file has neither problem.
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path


def console_script(name: str) -> str:
    """The console script ``name`` of this interpreter's environment (else whatever PATH finds)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def start_node(command: list[str], cwd, env: dict[str, str] | None = None) -> subprocess.Popen:
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    process.log = log
    return process


def stop_node(process: subprocess.Popen, timeout_s: float = 10.0) -> str:
    """SIGTERM, then SIGKILL after ``timeout_s``; returns everything the node printed."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_s)
    process.log.seek(0)
    output = process.log.read()
    process.log.close()
    return output


def wait_until(condition, timeout_s: float, what: str, detail=None) -> None:
    """Poll ``condition`` every 50 ms; AssertionError naming ``what`` (and ``detail()``) on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    suffix = f"; {detail()}" if detail is not None else ""
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{suffix}")
