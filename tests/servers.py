"""Real services on loopback for the test suite.

Plain helpers (no pytest imports) that `tests/conftest.py` turns into fixtures:

* `MlflowServer`: a real `mlflow server` (SQLite backend, local artifact store proxied over HTTP) on a free
  port, which can be stopped and started again on the same port and database for fault tests.
* `MotoServer`: `moto_server`, an in-process S3 look-alike; always available, lenient.
* `S3Endpoint`: where an S3 API lives and how to sign for it; either the moto server or an external,
  real implementation (for example a local Ceph RADOS Gateway) given through `SQUEEZEFLOW_TEST_S3_*`.

Every server runs in its own process group so that stopping it also ends the workers it forked.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.literals import BucketLocationConstraintType
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

LOOPBACK = "127.0.0.1"

# Environment variables that point the suite at an external S3 endpoint (see `.ci/run`).
ENV_S3_ENDPOINT = "SQUEEZEFLOW_TEST_S3_ENDPOINT"
ENV_S3_ACCESS_KEY = "SQUEEZEFLOW_TEST_S3_ACCESS_KEY"
ENV_S3_SECRET_KEY = "SQUEEZEFLOW_TEST_S3_SECRET_KEY"
ENV_S3_REGION = "SQUEEZEFLOW_TEST_S3_REGION"

DEFAULT_REGION = "us-east-1"
MOTO_ACCESS_KEY = "testing"
MOTO_SECRET_KEY = "testing"

MLFLOW_START_TIMEOUT_S = 60.0
MOTO_START_TIMEOUT_S = 30.0
STOP_GRACE_S = 15.0
LOG_TAIL_LINES = 60


class ServerStartError(RuntimeError):
    """A server did not come up in time (or died while starting); the message carries its log tail."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago: bind to port 0 and let the kernel pick."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def venv_tool(name: str) -> str:
    """Path of a console script installed next to the running interpreter (the project's venv)."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name!r} is neither next to {sys.executable} nor on PATH; run `make venv`")
    return found


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Linux only: have the kernel SIGTERM the server when the test process dies, even by SIGKILL."""
    if sys.platform == "linux":
        with contextlib.suppress(Exception):
            pr_set_pdeathsig = 1
            ctypes.CDLL(None).prctl(pr_set_pdeathsig, int(signal.SIGTERM))


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "<no log file>"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else "<empty log>"


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """HTTP status of a GET to `url`, or None when nothing answers (refused, reset, timed out)."""
    request = urllib.request.Request(url, method="GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return None


class ServerProcess:
    """A server started as a subprocess in its own process group, logging to a file.

    `start()` waits until `ready_url` answers (with a 2xx status, or any status when `any_status_is_ready`),
    and fails with the log tail when the deadline passes or the process exits first. `stop()` sends SIGTERM
    to the whole group, then SIGKILL after a grace period. Both are idempotent.
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        ready_url: str,
        log_path: Path,
        *,
        start_timeout_s: float,
        any_status_is_ready: bool = False,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.ready_url = ready_url
        self.log_path = log_path
        self.start_timeout_s = start_timeout_s
        self.any_status_is_ready = any_status_is_ready
        # A snapshot, so that a restart inside a test does not pick up that test's monkeypatched variables.
        self.env: dict[str, str] = dict(os.environ if env is None else env)
        self.cwd = cwd if cwd is not None else log_path.parent
        self.last_start_s: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _is_ready(self) -> bool:
        status = http_status(self.ready_url)
        if status is None:
            return False
        return self.any_status_is_ready or 200 <= status < 300

    def start(self) -> None:
        if self.is_running:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self._is_ready():
            raise ServerStartError(
                f"{self.name}: something already answers at {self.ready_url} before the server was started"
            )
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            log.write(f"\n=== starting {self.name}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        deadline = began + self.start_timeout_s
        while True:
            if self._is_ready():
                self.last_start_s = time.monotonic() - began
                return
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise ServerStartError(
                    f"{self.name} exited with status {code} while starting "
                    f"(log {self.log_path}):\n{log_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(
                    f"{self.name} did not answer at {self.ready_url} within {self.start_timeout_s:.0f} s "
                    f"(log {self.log_path}):\n{log_tail(self.log_path)}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        proc = self._proc
        self._proc = None
        if proc is None:
            return
        # The group id is the pid (start_new_session); it may outlive the leader, so signal it regardless.
        self._signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_GRACE_S)
        self._signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_GRACE_S)

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def restart(self) -> None:
        self.stop()
        self.start()

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """Stopped for the duration of the block, started again afterwards (even when the block raises)."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class MlflowServer(ServerProcess):
    """`mlflow server` on 127.0.0.1 with a SQLite backend store and proxied local artifacts under `root`.

    The port, database and artifact directory stay the same across `stop()`/`start()`, so a restarted
    server sees everything logged before.
    """

    def __init__(self, root: Path, *, port: int | None = None, workers: int = 1) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.port = port if port is not None else free_port()
        self.db_path = root / "mlflow.db"
        self.artifacts_dir = root / "mlartifacts"
        self.backend_store_uri = f"sqlite:///{self.db_path}"
        argv = [
            venv_tool("mlflow"),
            "server",
            "--backend-store-uri",
            self.backend_store_uri,
            "--artifacts-destination",
            str(self.artifacts_dir),
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            # MLflow 3.x rejects Host headers outside its allow-list (DNS-rebinding guard); loopback is in
            # the default list, but say so explicitly so that a changed default cannot turn into 403s.
            "--allowed-hosts",
            f"{LOOPBACK}:{self.port},{LOOPBACK},localhost:{self.port},localhost",
        ]
        super().__init__(
            "mlflow server",
            argv,
            f"{self.tracking_uri}/health",
            root / "mlflow-server.log",
            start_timeout_s=MLFLOW_START_TIMEOUT_S,
            cwd=root,
        )

    @property
    def tracking_uri(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


class MotoServer(ServerProcess):
    """`moto_server` (S3 and friends, in memory) on 127.0.0.1."""

    def __init__(self, root: Path, *, port: int | None = None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        argv = [venv_tool("moto_server"), "-H", LOOPBACK, "-p", str(self.port)]
        super().__init__(
            "moto_server",
            argv,
            f"{self.endpoint_url}/moto-api/",
            root / "moto-server.log",
            start_timeout_s=MOTO_START_TIMEOUT_S,
            cwd=root,
        )

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


@dataclass(frozen=True)
class S3Endpoint:
    """An S3 API endpoint and the credentials to sign for it. `name` is "moto" or "external"."""

    name: str
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = DEFAULT_REGION

    @property
    def is_moto(self) -> bool:
        return self.name == "moto"

    def client(self, **config: Any) -> S3Client:
        """A boto3 S3 client for this endpoint: path-style addressing, checksums only where required."""
        import boto3
        from botocore.config import Config

        settings: dict[str, Any] = {
            "s3": {"addressing_style": "path"},
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
            "retries": {"max_attempts": 3, "mode": "standard"},
        }
        settings.update(config)
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(**settings),
        )

    def env(self) -> dict[str, str]:
        """Environment variables that route boto3 (and MLflow's S3 artifact store) to this endpoint."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
            # botocore >= 1.36 adds CRC32 checksums to every upload and validates them on download by
            # default; older S3 implementations (Ceph RGW 16, older MinIO) reject or mangle the streaming
            # (aws-chunked trailer) form, so only send checksums where the API requires them.
            "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
            "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
        }


def external_endpoint_from_env(environ: Mapping[str, str] | None = None) -> S3Endpoint | None:
    """The external endpoint named by `SQUEEZEFLOW_TEST_S3_*`, or None when `..._ENDPOINT` is unset."""
    env = os.environ if environ is None else environ
    url = env.get(ENV_S3_ENDPOINT, "").strip()
    if not url:
        return None
    missing = [key for key in (ENV_S3_ACCESS_KEY, ENV_S3_SECRET_KEY) if not env.get(key)]
    if missing:
        raise RuntimeError(f"{ENV_S3_ENDPOINT} is set but {', '.join(missing)} is not")
    return S3Endpoint(
        name="external",
        endpoint_url=url.rstrip("/"),
        access_key=env[ENV_S3_ACCESS_KEY],
        secret_key=env[ENV_S3_SECRET_KEY],
        region=env.get(ENV_S3_REGION, "").strip() or DEFAULT_REGION,
    )


def check_reachable(endpoint: S3Endpoint, timeout_s: float = 10.0) -> None:
    """Fail loudly (not skip) when a configured endpoint does not answer HTTP at all."""
    deadline = time.monotonic() + timeout_s
    while http_status(f"{endpoint.endpoint_url}/") is None:
        if time.monotonic() > deadline:
            raise ConnectionError(
                f"S3 endpoint {endpoint.name!r} at {endpoint.endpoint_url} does not answer "
                f"(set by {ENV_S3_ENDPOINT}); start it or unset the variable"
            )
        time.sleep(0.5)


def new_bucket_name(prefix: str = "sqf-test") -> str:
    """A bucket name valid on real S3: 3-63 characters, lowercase letters, digits and hyphens."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    assert 3 <= len(name) <= 63 and name == name.lower(), name
    return name


def create_bucket(client: S3Client, name: str, region: str) -> None:
    if region == DEFAULT_REGION:
        client.create_bucket(Bucket=name)
    else:
        constraint = cast("BucketLocationConstraintType", region)
        client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": constraint})


def empty_and_delete_bucket(client: S3Client, name: str) -> None:
    """Delete every object version, delete marker and unfinished multipart upload, then the bucket."""
    for uploads in client.get_paginator("list_multipart_uploads").paginate(Bucket=name):
        for upload in uploads.get("Uploads", []):
            client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    for versions in client.get_paginator("list_object_versions").paginate(Bucket=name):
        doomed: list[ObjectIdentifierTypeDef] = [
            {"Key": item["Key"], "VersionId": item["VersionId"]}
            for item in [*versions.get("Versions", []), *versions.get("DeleteMarkers", [])]
        ]
        if doomed:
            client.delete_objects(Bucket=name, Delete={"Objects": doomed, "Quiet": True})
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        keys: list[ObjectIdentifierTypeDef] = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
    client.delete_bucket(Bucket=name)
