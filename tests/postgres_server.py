"""A local PostgreSQL server for tests: Debian's, started once per test session.

Use it by importing the fixture into a test module::

    from tests.postgres_server import PostgresServer, postgres_server  # noqa: F401

``initdb`` makes a cluster in a temporary folder and ``pg_ctl`` starts it on a free loopback
port (its unix socket in the same folder), with password authentication over TCP. As root
(CI), both run as the ``postgres`` user: initdb refuses root. Each test asks for a fresh
database (:meth:`PostgresServer.database`) and gets its URL.

It needs Debian's ``postgresql`` package. Without it the fixture skips, or fails where
``OLMO_REQUIRE_POSTGRES`` is set (``make test`` sets it after installing the package as root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

USER = "lab"
PASSWORD = "lab-password"
_INSTALL_HINT = "`make postgres` installs Debian's postgresql as root"
_SYSTEM_USER = "postgres"


def _binaries() -> Path | None:
    """The newest PostgreSQL's bin folder (Debian keeps it out of PATH), else PATH's."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def unavailable_reason() -> str | None:
    """Why a local server cannot start here, or None where it can."""
    if _binaries() is None:
        return f"PostgreSQL is not installed (no initdb; {_INSTALL_HINT})"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(_SYSTEM_USER)
        except KeyError:
            return f"running as root, and there is no {_SYSTEM_USER} user to run PostgreSQL as"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class PostgresServer:
    """A running server: ``USER`` owns it, with ``PASSWORD``, on 127.0.0.1:``port``."""

    port: int
    folder: Path

    def url(self, database: str) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def database(self, name: str) -> str:
        """Create the empty database ``name``; returns its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)


def _run_as_owner(command: list[str], owner: str | None) -> None:
    done = subprocess.run(command, user=owner, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")


def _log(folder: Path) -> str:
    path = folder / "server.log"
    return path.read_text(errors="replace") if path.is_file() else "(no log)"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole session; skips (or fails) where it cannot run."""
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("OLMO_REQUIRE_POSTGRES"):
            pytest.fail(f"{reason}, and this run requires the PostgreSQL tests")
        pytest.skip(reason)
    binaries = _binaries()
    assert binaries is not None
    owner = _SYSTEM_USER if os.geteuid() == 0 else None
    # Under /tmp rather than pytest's folder, which only its owner may enter.
    folder = Path(tempfile.mkdtemp(prefix="olmo-postgres-"))
    if owner is not None:
        record = pwd.getpwnam(owner)
        os.chown(folder, record.pw_uid, record.pw_gid)
    (folder / "password").write_text(PASSWORD, encoding="utf-8")
    if owner is not None:
        os.chown(folder / "password", record.pw_uid, record.pw_gid)
    data = folder / "data"
    port = _free_port()
    started = False
    try:
        _run_as_owner(
            [
                str(binaries / "initdb"),
                *("-D", str(data), "-U", USER, "--pwfile", str(folder / "password")),
                *("--auth-local", "trust", "--auth-host", "scram-sha-256"),
                *("-E", "UTF8", "--locale", "C", "--no-sync"),
            ],
            owner,
        )
        # Loopback TCP and a socket in the folder; durability is not a test's concern.
        options = (
            f"-h 127.0.0.1 -p {port} -k {folder} -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=300"
        )
        command = [str(binaries / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log")]
        try:
            _run_as_owner([*command, "-o", options, "-w", "-t", "60", "start"], owner)
        except RuntimeError as error:
            raise RuntimeError(f"{error}\n{_log(folder)}") from None
        started = True
        yield PostgresServer(port=port, folder=folder)
    finally:
        if started:
            _run_as_owner([*command, "-m", "fast", "-w", "stop"], owner)
        shutil.rmtree(folder, ignore_errors=True)
