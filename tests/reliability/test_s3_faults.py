"""The S3 endpoint failing during an upload and during a download, on a real moto server on loopback.

What each test proves:

* an upload cut in the middle of the request body (the endpoint then down) fails after the configured,
  bounded number of attempts with an infrastructure error that names the object, leaves nothing under
  the object's final key, and succeeds once the endpoint is back;
* a download cut in the middle of the response body, and a download from a stopped server, fail the
  same way and leave no file under the final cache name and no partial file beside it;
* a job started while the endpoint is stopped exits 3 with a message that names the store.

The moto server here is this module's own (stopping the session's would break other tests); the relay
(`FlakyLink`) stands between the client and it only to cut connections mid-transfer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from squeezeflow.errors import InfrastructureError
from squeezeflow.store.artifacts import ArtifactRef, S3Store, open_store
from squeezeflow.store.s3 import OUTAGE_WAITS_S
from tests.reference import job_doc, write_spec
from tests.reliability.flaky_link import FlakyLink
from tests.servers import (
    MOTO_ACCESS_KEY,
    MOTO_SECRET_KEY,
    MlflowServer,
    MotoServer,
    S3Endpoint,
    create_bucket,
)

pytestmark = pytest.mark.integration

ATTEMPTS = 3  # SQUEEZEFLOW_S3_MAX_ATTEMPTS for these tests (the default is 5)
BLOB_BYTES = 6 * 1024 * 1024  # one PUT (below boto3's multipart threshold), big enough to cut in the middle
SQUEEZEFLOW = str(Path(sys.executable).with_name("squeezeflow"))


@pytest.fixture(scope="module")
def own_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto-faults"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def link(own_moto: MotoServer) -> Iterator[FlakyLink]:
    own_moto.start()  # a previous test may have stopped it
    relay = FlakyLink(own_moto.port)
    try:
        yield relay
    finally:
        relay.close()


def _endpoint(url: str) -> S3Endpoint:
    return S3Endpoint(name="moto", endpoint_url=url, access_key=MOTO_ACCESS_KEY, secret_key=MOTO_SECRET_KEY)


def _credentials(url: str) -> dict[str, str | None]:
    return {
        "AWS_ENDPOINT_URL_S3": url,
        "AWS_ACCESS_KEY_ID": MOTO_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": MOTO_SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
    }


@pytest.fixture
def bucket(own_moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SQUEEZEFLOW_S3_MAX_ATTEMPTS", str(ATTEMPTS))
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    monkeypatch.setenv("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    name = f"faults-{os.urandom(4).hex()}"
    create_bucket(_endpoint(own_moto.endpoint_url).client(), name, "us-east-1")
    return name


class Attempts:
    """Every HTTP request the store's S3 client sends, with its time (botocore's own event hook)."""

    def __init__(self, store: S3Store) -> None:
        self.times: list[float] = []
        store.client.meta.events.register("before-send.s3.*", self._seen)

    def _seen(self, **_: Any) -> None:
        self.times.append(time.monotonic())

    def since(self, t0: float) -> list[float]:
        return [t for t in self.times if t >= t0]


def _blob(path: Path) -> Path:
    path.write_bytes(os.urandom(BLOB_BYTES))
    return path


def _keys(own_moto: MotoServer, bucket: str) -> list[str]:
    s3 = _endpoint(own_moto.endpoint_url).client()
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_upload_cut_mid_body_fails_after_bounded_retries_and_leaves_nothing_under_the_final_key(
    own_moto: MotoServer, link: FlakyLink, bucket: str, tmp_path: Path
) -> None:
    store = open_store(f"s3://{bucket}/sqf", credentials=_credentials(link.url))
    assert isinstance(store, S3Store)
    seen = Attempts(store)
    blob = _blob(tmp_path / "model.onnx")
    link.cut_after(BLOB_BYTES // 3, "upstream")  # a third of the body reaches the server, then nothing

    t0 = time.monotonic()
    with pytest.raises(InfrastructureError) as failed:
        store.put_file(blob, suffix=".onnx")
    elapsed = time.monotonic() - t0

    puts = seen.since(t0)[1:]  # the first request is the existence check (HEAD), which went through
    rounds = len(OUTAGE_WAITS_S) + 1
    assert link.cuts == 1, "the upload was never cut: the test did not exercise a mid-transfer failure"
    assert len(puts) == ATTEMPTS * rounds, f"{len(puts)} PUT attempts, expected {ATTEMPTS} x {rounds}"
    assert link.refused == len(puts) - 1, "every attempt after the cut met the endpoint down"
    # the rounds are spaced by the outage waits (the backoff), and giving up is bounded
    assert sum(OUTAGE_WAITS_S) <= elapsed < sum(OUTAGE_WAITS_S) + 15, f"giving up took {elapsed:.1f} s"
    message = str(failed.value)
    assert message.startswith(f"S3 upload to s3://{bucket}/sqf/objects/"), message
    assert "failed after retries" in message, message

    assert _keys(own_moto, bucket) == [], "a partial upload is visible in the bucket"

    link.heal()
    ref = store.put_file(blob, suffix=".onnx")
    assert _keys(own_moto, bucket) == [f"sqf/{store.key_of(ref.uri)}"]
    assert store.fetch(ref, tmp_path / "cache").read_bytes() == blob.read_bytes()


def test_an_endpoint_outage_shorter_than_the_retry_window_is_ridden_out(
    own_moto: MotoServer, link: FlakyLink, bucket: str, tmp_path: Path
) -> None:
    store = open_store(f"s3://{bucket}/sqf", credentials=_credentials(link.url))
    blob = _blob(tmp_path / "model.onnx")
    link.go_down()
    back = threading.Timer(OUTAGE_WAITS_S[0] * 0.75, link.heal)
    back.start()
    try:
        ref = store.put_file(blob, suffix=".onnx")
    finally:
        back.cancel()
    assert link.refused >= ATTEMPTS, "the endpoint was never seen down"
    assert _keys(own_moto, bucket) == [f"sqf/{store.key_of(ref.uri)}"]


def _stored(own_moto: MotoServer, bucket: str, tmp_path: Path) -> tuple[ArtifactRef, bytes]:
    healthy = open_store(f"s3://{bucket}/sqf", credentials=_credentials(own_moto.endpoint_url))
    blob = _blob(tmp_path / "model.onnx")
    return healthy.put_file(blob, suffix=".onnx"), blob.read_bytes()


def _assert_nothing_partial(cache: Path, ref: ArtifactRef) -> None:
    left = sorted(p.name for p in cache.iterdir()) if cache.exists() else []
    assert left == [], f"a failed download left {left} in the cache ({ref.uri})"


def test_download_cut_mid_body_fails_clearly_and_leaves_no_partial_file(
    own_moto: MotoServer, link: FlakyLink, bucket: str, tmp_path: Path
) -> None:
    ref, data = _stored(own_moto, bucket, tmp_path)
    store = open_store(f"s3://{bucket}/sqf", credentials=_credentials(link.url))
    cache = tmp_path / "cache"
    link.cut_after(BLOB_BYTES // 3, "downstream")

    t0 = time.monotonic()
    with pytest.raises(InfrastructureError) as failed:
        store.fetch(ref, cache)
    elapsed = time.monotonic() - t0

    assert link.cuts == 1, "the download was never cut"
    assert elapsed < 60, f"giving up took {elapsed:.1f} s"
    assert str(failed.value).startswith(f"S3 download of {ref.uri} failed"), str(failed.value)
    _assert_nothing_partial(cache, ref)

    link.heal()
    assert store.fetch(ref, cache).read_bytes() == data


def test_download_from_a_stopped_endpoint_fails_after_bounded_retries_and_recovers_after_restart(
    own_moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    ref, data = _stored(own_moto, bucket, tmp_path)
    store = open_store(f"s3://{bucket}/sqf", credentials=_credentials(own_moto.endpoint_url))
    assert isinstance(store, S3Store)
    seen = Attempts(store)
    cache = tmp_path / "cache"

    own_moto.stop()
    try:
        t0 = time.monotonic()
        with pytest.raises(InfrastructureError) as failed:
            store.fetch(ref, cache)
        elapsed = time.monotonic() - t0
    finally:
        own_moto.start()

    attempts = seen.since(t0)
    assert 1 <= len(attempts) <= ATTEMPTS * 5, f"{len(attempts)} requests: retries are not bounded"
    assert elapsed < 60, f"giving up took {elapsed:.1f} s"
    assert "failed after retries" in str(failed.value) and ref.uri in str(failed.value), str(failed.value)
    _assert_nothing_partial(cache, ref)

    # moto keeps nothing across a restart: the job's retry finds the store empty and writes again
    create_bucket(_endpoint(own_moto.endpoint_url).client(), bucket, "us-east-1")
    again = store.put_bytes(data, suffix=".onnx")
    assert again == ref
    assert store.fetch(ref, cache).read_bytes() == data


def test_job_started_while_the_endpoint_is_stopped_exits_3_naming_the_store(
    own_moto: MotoServer, mlflow_server: MlflowServer, tiny_model: Path, small_data: Path, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path / "job.yaml", job_doc(tiny_model, small_data, name="s3-down"))
    env = {
        **os.environ,
        **_credentials(own_moto.endpoint_url),
        "SQUEEZEFLOW_S3_MAX_ATTEMPTS": str(ATTEMPTS),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    own_moto.stop()
    try:
        t0 = time.monotonic()
        proc = subprocess.run(
            [
                SQUEEZEFLOW,
                "run",
                str(spec),
                "--no-progress",
                "--artifacts",
                "s3://down-bucket/sqf",
                "--tracking-uri",
                mlflow_server.tracking_uri,
                "--workdir",
                str(tmp_path / "work"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        elapsed = time.monotonic() - t0
    finally:
        own_moto.start()
    error = " ".join(proc.stderr.split())
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "error (InfrastructureError): S3 " in error and "s3://down-bucket/sqf/" in error, error
    assert elapsed < 60, f"exit 3 took {elapsed:.1f} s"
