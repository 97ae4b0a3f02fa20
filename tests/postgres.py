"""A real PostgreSQL server for tests: a fresh cluster in a temporary folder, on a free 127.0.0.1 port.

PostgreSQL refuses to run as root, and tests run as root here and in CI, so under root the cluster
belongs to Debian's `postgres` system user and its programs run through `runuser`. Trust
authentication on 127.0.0.1 only, fsync off (the data is thrown away), and the unix socket inside
the temporary folder, so nothing touches the machine's own cluster.
Importable from any test (`pythonpath = ["tests"]`): `from postgres import postgres_server`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psycopg
import pytest
from processes import free_port, kill_tree, run_bounded, start_in_session

READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0


def _binaries() -> Path | None:
    """The folder holding initdb and postgres: Debian's newest /usr/lib/postgresql/N/bin, else PATH's."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb, server = shutil.which("initdb"), shutil.which("postgres")
    return Path(initdb).parent if initdb and server and Path(initdb).parent == Path(server).parent else None


def _as_owner(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _wait_until_ready(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while True:
        try:
            psycopg.connect(url, connect_timeout=1).close()
            return
        except psycopg.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text()[-2000:] if log.exists() else ""
                pytest.fail(f"postgres did not accept connections at {url}:\n{tail}")
            time.sleep(0.05)


def _stop(process: subprocess.Popen, data: Path) -> None:
    """A fast shutdown (SIGINT to the postmaster), so that it releases its shared memory; SIGKILL to
    the whole tree if it does not stop in time."""
    try:
        with suppress(OSError, ValueError, IndexError):
            os.kill(int((data / "postmaster.pid").read_text().split()[0]), signal.SIGINT)
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    finally:
        kill_tree(process)
        process.wait()


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a throwaway PostgreSQL server and yield its SQLAlchemy URL
    (`postgresql+psycopg://postgres@127.0.0.1:PORT/postgres`); stop it and delete its files after."""
    binaries = _binaries()
    if binaries is None:
        pytest.skip("no PostgreSQL server binaries (initdb, postgres); `make services` installs them")
    folder = Path(tempfile.mkdtemp(prefix="lmforge-pg-"))
    try:
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(folder, owner.pw_uid, owner.pw_gid)
        data, log = folder / "data", folder / "postgres.log"
        run_bounded(_as_owner([str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                               "--no-sync", "-E", "UTF8", "--locale=C"]),
                    timeout=120, check=True, capture_output=True, cwd=folder)
        port = free_port()
        options = ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={folder}",
                   "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        server = _as_owner([str(binaries / "postgres"), "-D", str(data), "-p", str(port), *options])
        with open(log, "wb") as output:
            process = start_in_session(server, stdout=output, stderr=subprocess.STDOUT, cwd=folder)
        try:
            _wait_until_ready(process, f"postgresql://postgres@127.0.0.1:{port}/postgres", log)
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        finally:
            _stop(process, data)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
