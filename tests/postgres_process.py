"""A PostgreSQL server of a test's own (initdb + pg_ctl in a temporary folder, on a free port), for tests that stop,
restart or reconfigure the server: the shared test server is never touched.

initdb and pg_ctl refuse to run as root; as root they run as the `postgres` user (runuser), which owns the folder.
A machine without them fails the test, saying how to install them: never a silent skip.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

import pytest

from tests.e2e.process import free_port

INSTALL = "install PostgreSQL's server binaries (apt-get install postgresql; brew install postgresql)"


def server_binary(name: str) -> str:
    """`initdb` or `pg_ctl`: on the PATH, else the newest under /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda path: int(path.split("/")[4]))
    if not candidates:
        pytest.fail(f"{name} was not found on the PATH nor under /usr/lib/postgresql/*/bin: {INSTALL}")
    return candidates[-1]


class PostgresServer:
    """`with PostgresServer() as server:` a fresh cluster answering at `server.url` (database `postgres`)."""

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
        self.data = self.folder / "data"
        self.settings = {"listen_addresses": "127.0.0.1", **(settings or {})}
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as_postgres:
            shutil.chown(self.folder, user="postgres")
        self._run(
            server_binary("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = " ".join([f"-p {self.port}", f"-k {self.folder}", *(f"-c {k}={v}" for k, v in self.settings.items())])
        self._run(
            server_binary("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"), "-w", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        """`fast` rolls back open transactions and disconnects everyone; `immediate` is a crash (no checkpoint)."""
        self._run(server_binary("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        subprocess.run(
            [*self._as_postgres, server_binary("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, *command: str) -> None:
        result = subprocess.run([*self._as_postgres, *command], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {result.stdout}{result.stderr}")
