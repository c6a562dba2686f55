"""A throwaway PostgreSQL server for the tests and the load test: initdb and pg_ctl in a temporary folder.

PostgreSQL refuses to run as root, so as root the server runs as the user `postgres` (or `nobody`) in a folder
of /tmp that user owns; otherwise as the current user. It listens on 127.0.0.1 at a free port (and on a unix
socket in its own folder, never the system's), trusts local connections, and skips fsync: its data is thrown
away. Each test gets a database of its own (create_database), so tests never see each other's runs.

    server = start_server()        # raises Unavailable with the reason if it cannot start
    url = server.create_database()  # postgresql+psycopg://postgres@127.0.0.1:PORT/fer_1
    server.stop()
"""
from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SUPERUSER = "postgres"   # the database role, whichever system user runs the server


class Unavailable(RuntimeError):
    """The server cannot be started here; the message says why (for pytest.skip)."""


def find_binary(name: str) -> str | None:
    """`initdb` / `pg_ctl`: on the PATH, or in Debian's /usr/lib/postgresql/<version>/bin (the newest)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    return candidates[-1] if candidates else None


def _server_user() -> str | None:
    """The system user to run the server as: None for the current user, unless that is root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise Unavailable("PostgreSQL refuses to run as root and there is no `postgres` or `nobody` user to run it as.")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, folder: Path, port: int, user: str | None, pg_ctl: str):
        self.folder, self.port, self.user, self.pg_ctl = folder, port, user, pg_ctl
        self._names = itertools.count(1)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database; returns its SQLAlchemy URL."""
        import psycopg
        name = name or f"fer_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres",
                             autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        _run(self.user, [self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"], check=False)
        shutil.rmtree(self.folder, ignore_errors=True)


def _run(user: str | None, cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd="/")
    if check and p.returncode != 0:
        raise Unavailable(f"`{' '.join(cmd)}` failed: {p.stdout.strip()[-500:]}")
    return p


def start_server(max_connections: int = 200) -> Server:
    try:
        import psycopg  # noqa: F401 - the driver the store uses; without it there is nothing to test
    except ImportError:
        raise Unavailable("psycopg (PostgreSQL's driver, in requirements.txt) is not installed") from None
    initdb, pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
    if not (initdb and pg_ctl):
        raise Unavailable("PostgreSQL's initdb/pg_ctl are not installed (Debian: apt-get install postgresql)")
    user = _server_user()
    folder = Path(tempfile.mkdtemp(prefix="fer-pg-", dir="/tmp"))   # not pytest's tmp: root-only (0700) folders
    try:
        if user is not None:
            shutil.chown(folder, user)
        _run(user, [initdb, "-D", str(folder / "data"), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                    "--no-sync", "--no-instructions"])
        for attempt in range(3):   # the free port may be taken by someone else before the server binds it
            port = _free_port()
            options = (f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
                       f"-c full_page_writes=off -c max_connections={max_connections} -c TimeZone=UTC")
            p = _run(user, [pg_ctl, "-D", str(folder / "data"), "-l", str(folder / "server.log"), "-w", "-t", "60",
                            "-o", options, "start"], check=False)
            if p.returncode == 0:
                return Server(folder, port, user, pg_ctl)
        log = (folder / "server.log").read_text(errors="replace")[-800:] if (folder / "server.log").exists() else ""
        raise Unavailable(f"the PostgreSQL server did not start: {p.stdout.strip()[-300:]} {log}")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
