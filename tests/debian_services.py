"""PostgreSQL and Redis from Debian's packages, started privately on free loopback ports.

`.ci/run` installs the packages (`postgresql`, `redis-server`); these helpers start throwaway instances in
temporary directories and stop them afterwards. PostgreSQL refuses to run as root, so under root the
server runs as the `postgres` user the Debian package creates. Tests that need them skip, saying why,
when the binaries are missing (a developer machine without the packages).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.servers import LOOPBACK, ServerStartError, free_port, log_tail

START_TIMEOUT_S = 60.0


def postgres_bindir() -> Path | None:
    """The newest installed PostgreSQL's bin directory, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).resolve().parent if pg_ctl else None


def missing_postgres() -> str | None:
    """Why PostgreSQL cannot be started here, or None when it can."""
    if postgres_bindir() is None:
        return "PostgreSQL is not installed (Debian package `postgresql`; .ci/run installs it)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: PostgreSQL cannot be started as another user"
    return None


def missing_redis() -> str | None:
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (Debian package `redis-server`; .ci/run installs it)"
    return None


def _wait_port(port: int, deadline: float, proc: subprocess.Popen[bytes] | None, log: Path) -> None:
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerStartError(f"server exited with {proc.returncode}:\n{log_tail(log)}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.2)
    raise ServerStartError(f"nothing listens on {LOOPBACK}:{port}:\n{log_tail(log)}")


class PostgresServer:
    """A private PostgreSQL cluster with one database, trust authentication on loopback only."""

    def __init__(self, database: str = "squeezeflow") -> None:
        self.database = database
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="squeezeflow-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self._as_postgres = os.geteuid() == 0
        bindir = postgres_bindir()
        if bindir is None:
            raise ServerStartError(missing_postgres() or "PostgreSQL not found")
        self.bindir = bindir

    @property
    def user(self) -> str:
        return "postgres"

    def url(self, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.user}@{LOOPBACK}:{self.port}/{self.database}"

    def _run(self, *argv: str) -> None:
        cmd = list(argv)
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.dir)
        if out.returncode != 0:
            raise ServerStartError(f"{' '.join(argv)} failed ({out.returncode}): {out.stderr[-2000:]}")

    def start(self) -> PostgresServer:
        if self._as_postgres:
            os.chmod(self.dir, 0o755)
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self.user,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses={LOOPBACK} -c fsync=off"
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.log), "-w", "start"
        )
        _wait_port(self.port, time.monotonic() + START_TIMEOUT_S, None, self.log)
        self._run(
            str(self.bindir / "createdb"),
            "-h",
            LOOPBACK,
            "-p",
            str(self.port),
            "-U",
            self.user,
            self.database,
        )
        return self

    def stop(self) -> None:
        if self.data.exists():
            with contextlib.suppress(ServerStartError):
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer:
    """A private redis-server without persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="squeezeflow-redis-"))
        self.log = self.dir / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> RedisServer:
        argv = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            LOOPBACK,
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        argv += ["--dir", str(self.dir), "--logfile", str(self.log)]
        self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        _wait_port(self.port, time.monotonic() + START_TIMEOUT_S, self._proc, self.log)
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
