"""Processes a test starts: in a session of their own, and the whole tree killed on timeout or error.

`subprocess.run(timeout=...)` kills only the direct child, and killing its process group is not
enough either: torchrun starts each worker in a session of its own, and curation's pool forks
workers. Anything left behind keeps the machine busy and may write beside the next run.
Importable from any test (`pythonpath = ["tests"]` in pyproject.toml): `from processes import ...`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from contextlib import suppress
from pathlib import Path


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (from /proc; just `pid` where there is no /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def kill_tree(process: subprocess.Popen) -> list[int]:
    """SIGKILL `process` (started with start_new_session=True), its process group and every
    descendant, all at once: each is stopped first, so none can fork or notice the others dying."""
    tree: list[int] = []
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGSTOP)
    while found := [pid for pid in process_tree(process.pid) if pid not in tree]:
        for pid in found:  # stop the tree until no new descendant appears
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        tree += found
    for pid in tree:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    return tree


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a server a test starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_in_session(command: list[str], **popen) -> subprocess.Popen:
    """`subprocess.Popen` in a session of its own, so that `kill_tree` can find everything it started."""
    return subprocess.Popen(command, start_new_session=True, **popen)


def communicate_bounded(process: subprocess.Popen, timeout: float) -> tuple:
    """`process.communicate(timeout)`; on timeout, or the test being interrupted, kill the whole
    tree first. A timeout re-raises `TimeoutExpired` carrying what the process printed."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(process)
        stdout, stderr = process.communicate()
        raise subprocess.TimeoutExpired(process.args, timeout, output=stdout, stderr=stderr) from None
    except BaseException:
        kill_tree(process)
        process.communicate()
        raise


def run_bounded(command: list[str], *, timeout: float = 300, check: bool = False,
                capture_output: bool = False, **popen) -> subprocess.CompletedProcess:
    """`subprocess.run` in a session of its own; on timeout (or an interrupted test) the whole tree dies."""
    if capture_output:
        popen |= {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    process = start_in_session(command, **popen)
    stdout, stderr = communicate_bounded(process, timeout)
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    if check:
        result.check_returncode()
    return result
