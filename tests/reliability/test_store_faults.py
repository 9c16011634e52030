"""The artifact store when its file system refuses writes, when its S3 endpoint is not S3, and what it
records about each candidate's objects (status tags, media types).

What each test proves:

* a local store that cannot take a write (a file-size limit: EFBIG; a full file system: ENOSPC; a
  read-only one: EROFS; a directory this user may not write: EACCES) fails with an infrastructure error
  (exit 3) that names the store's root and what was being written, and leaves nothing under the final
  key; a whole `squeezeflow run` whose store fills up exits 3 that way and leaves the job's MLflow run
  FAILED;
* an endpoint that answers every request ``200 OK`` with a web page (a captive portal, a misconfigured
  proxy) is never taken for S3: no object "exists" there, no upload "succeeds", no record is "invalid
  JSON"; the store API and `squeezeflow run` fail with exit 3 naming the endpoint;
* every candidate's model, gate evidence and records carry ``squeezeflow-status`` by outcome (failed:
  not built, failed the gate, skipped as slower; passed; promoted) so the bucket's lifecycle rule can
  expire what failed; every object carries the media type of its suffix and its SHA-256, and an
  existence check that finds other bytes under a content-addressed key stores them again.

The faults are real: the kernel enforces the file-size limit (``RLIMIT_FSIZE``, set in the child with
SIGXFSZ ignored, so a write past it fails with EFBIG) and the full or read-only file system is a tmpfs
mounted in a private mount namespace (``unshare``; skipped where the kernel allows no namespaces). The
web-page endpoint is a real HTTP server on loopback. Nothing in the product knows about any of it.
"""

from __future__ import annotations

import functools
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from squeezeflow.errors import InfrastructureError
from squeezeflow.store.artifacts import STATUS_TAG, S3Store, open_store
from tests.reference import job_doc, write_spec
from tests.reliability.conftest import FAST_DEVICE
from tests.servers import MlflowServer, S3Endpoint

pytestmark = pytest.mark.integration

SQUEEZEFLOW = str(Path(sys.executable).with_name("squeezeflow"))
REPO = Path(__file__).resolve().parents[2]
BLOB_BYTES = 64 * 1024
FILE_SIZE_LIMIT = 16 * 1024  # below every write the child makes to the store


# -- local store: a file system that refuses writes ------------------------------------------------


def _store_writer(
    store: Path, source: Path, *, prefix: tuple[str, ...] = (), preexec: Any = None
) -> dict[str, dict[str, Any]]:
    """Run `store_writer.py` as its own process (under ``prefix``) and return what each write raised."""
    proc = subprocess.run(
        [
            *prefix,
            sys.executable,
            "-m",
            "tests.reliability.store_writer",
            str(store),
            str(source),
            str(BLOB_BYTES),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        preexec_fn=preexec,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _assert_refused(outcome: dict[str, dict[str, Any]], store: str, errname: str, strerror: str) -> None:
    for write, what in (
        ("put_file", r"objects/[0-9a-f]{2}/[0-9a-f]{64}\.onnx \(from \S+\)"),
        ("put_text", r"reports/job/report\.html"),
        ("write_record", r"records/gate/verdict\.json"),
    ):
        got = outcome[write]
        assert got["raised"] == "InfrastructureError" and got["exit_code"] == 3, (write, got)
        pattern = rf"cannot write {what} to the artifact store {re.escape(store)}: {strerror} \({errname}\); "
        assert re.match(pattern, got["message"]), (write, got["message"])


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _limit_file_size() -> None:  # pragma: no cover - runs in the child between fork and exec
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, resource.RLIM_INFINITY))


def test_a_write_past_the_file_size_limit_is_an_infrastructure_error_naming_the_store_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    """RLIMIT_FSIZE is the one store-filling fault a test can impose without privileges: the kernel
    refuses (EFBIG) every write that would grow a file of the child past the limit, exactly as a full
    disk refuses the next block. The source file is written by the test, outside the limit."""
    store = tmp_path / "store"
    store.mkdir()
    source = tmp_path / "model.onnx"
    source.write_bytes(os.urandom(BLOB_BYTES))

    outcome = _store_writer(store, source, preexec=_limit_file_size)

    _assert_refused(outcome, str(store), "EFBIG", "File too large")
    assert "ulimit -f" in outcome["put_file"]["message"]
    assert _files(store) == [], "a refused write left a file (partial or temporary) in the store"


@functools.cache
def _mount_namespace() -> tuple[str, ...] | None:
    """How to run a command in a private mount namespace where it may mount a tmpfs: a user and mount
    namespace (no privileges needed where the kernel allows them), else, for root, a mount namespace."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    probe_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"sqf-mount-probe-{uuid.uuid4().hex[:8]}"
    probe_dir.mkdir()
    try:
        for prefix in ((unshare, "--user", "--map-root-user", "--mount"), (unshare, "--mount")):
            probe = subprocess.run(
                [*prefix, "mount", "-t", "tmpfs", "-o", "size=64k", "sqf-probe", str(probe_dir)],
                capture_output=True,
                timeout=30,
            )
            if probe.returncode == 0:
                return prefix
        return None
    finally:
        probe_dir.rmdir()


def _needs_mount_namespace() -> tuple[str, ...]:
    prefix = _mount_namespace()
    if prefix is None:
        pytest.skip("this kernel or container allows no private mount namespace (unshare) for a tmpfs")
    return prefix


def test_a_store_on_a_read_only_file_system_is_an_infrastructure_error_naming_the_store(
    tmp_path: Path,
) -> None:
    """A tmpfs mounted read-only in the child's own mount namespace: the kernel answers EROFS."""
    prefix = _needs_mount_namespace()
    store = tmp_path / "store"
    store.mkdir()
    source = tmp_path / "model.onnx"
    source.write_bytes(os.urandom(BLOB_BYTES))
    script = 'mount -t tmpfs -o size=1m,ro sqf-ro "$1" && shift && exec "$@"'
    mounted = (*prefix, "sh", "-c", script, "sh", str(store))

    outcome = _store_writer(store, source, prefix=mounted)

    _assert_refused(outcome, str(store), "EROFS", "Read-only file system")


def test_a_store_this_user_may_not_write_is_an_infrastructure_error_naming_the_store(tmp_path: Path) -> None:
    """A store directory without write permission. Root passes permission checks, so as root the child
    runs in a user namespace of its own, where it holds no privilege over the test's files."""
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        unshare = shutil.which("unshare")
        if unshare is None or subprocess.run([unshare, "--user", "true"], capture_output=True).returncode:
            pytest.skip("as root, a permission fault needs a user namespace (unshare --user)")
        prefix = (unshare, "--user")
    store = tmp_path / "store"
    store.mkdir()
    source = tmp_path / "model.onnx"
    source.write_bytes(os.urandom(BLOB_BYTES))
    store.chmod(0o555)
    try:
        outcome = _store_writer(store, source, prefix=prefix)
    finally:
        store.chmod(0o755)

    _assert_refused(outcome, str(store), "EACCES", "Permission denied")
    assert _files(store) == []


def test_a_job_whose_local_store_fills_up_exits_3_naming_the_store_and_leaves_its_mlflow_run_failed(
    mlflow_server: MlflowServer, tiny_model: Path, small_data: Path, tmp_path: Path
) -> None:
    """A real full disk: the store is a tmpfs in the job's own mount namespace, seeded with the job's
    ingest (run before, at the same path since local records name objects by path, so the job's MLflow
    run exists) and then filled to the last block by a filler file beside the store, so the job's next
    store write (its baseline) meets ENOSPC."""
    from mlflow import MlflowClient

    prefix = _needs_mount_namespace()
    name = f"disk-full-{uuid.uuid4().hex[:8]}"
    spec = write_spec(tmp_path / "job.yaml", job_doc(tiny_model, small_data, name=name))
    common = ["--tracking-uri", mlflow_server.tracking_uri, "--workdir", str(tmp_path / "work")]
    fs, seed, after = tmp_path / "fs", tmp_path / "seed", tmp_path / "after"
    store = fs / "store"  # a local store's records name its objects by absolute path: seed it in place
    ingested = subprocess.run(
        [SQUEEZEFLOW, "stage", "ingest", "--spec", str(spec), "--artifacts", str(store), *common,
         "--out", str(tmp_path / "ingest.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert ingested.returncode == 0, ingested.stderr[-3000:]
    parent_run_id = json.loads((tmp_path / "ingest.json").read_text())["parent_run_id"]
    shutil.move(store, seed)  # the tmpfs is mounted over fs/ and the seed copied back onto it
    after.mkdir()
    script = """
        set -e
        mount -t tmpfs -o size=16m sqf-full "$FS"
        mkdir "$FS/store" && cp -a "$SEED/." "$FS/store/"
        dd if=/dev/zero of="$FS/filler" bs=64k 2>/dev/null || true
        set +e
        "$@"
        rc=$?
        cp -a "$FS/store/." "$AFTER/"
        exit $rc
    """
    run = subprocess.run(
        [*prefix, "sh", "-c", script, "sh", SQUEEZEFLOW, "run", str(spec), "--no-progress",
         "--artifacts", str(store), *common],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "FS": str(fs), "SEED": str(seed), "AFTER": str(after)},
    )  # fmt: skip

    error = " ".join(run.stderr.split())
    assert run.returncode == 3, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    written = re.search(
        r"error \(InfrastructureError\): cannot write (\S+) .*?to the artifact store "
        rf"{re.escape(str(store))}: No space left on device \(ENOSPC\); free space",
        error,
    )
    assert written, error
    left = _files(after)
    assert written.group(1) not in left, f"the refused write left {written.group(1)} in the store"
    assert not [f for f in left if f.endswith(".part")], left
    assert any(f.startswith("records/ingest/") for f in left), left  # the seed survived

    run_info = MlflowClient(tracking_uri=mlflow_server.tracking_uri).get_run(parent_run_id)
    assert run_info.info.status == "FAILED"
    assert "No space left on device" in run_info.data.tags["squeezeflow.error"]


# -- S3: an endpoint that answers with a web page ---------------------------------------------------

WEB_PAGE = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Guest network</body></html>"


class _WebPage(BaseHTTPRequestHandler):
    """Answers every request ``200 OK`` with an HTML page, as a captive portal does."""

    protocol_version = "HTTP/1.1"
    etag: str | None = None
    requests: list[str]

    def _drain(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                self.rfile.read(size + 2)
            while self.rfile.readline().strip():
                pass
        else:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(self, with_body: bool = True) -> None:
        self.requests.append(f"{self.command} {self.path}")
        self._drain()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(WEB_PAGE)))
        if self.etag:
            self.send_header("ETag", self.etag)
        self.end_headers()
        if with_body:
            self.wfile.write(WEB_PAGE)

    def do_GET(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def do_DELETE(self) -> None:
        self._answer()

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(params=["no-etag", "with-etag"])
def web_page_endpoint(request: pytest.FixtureRequest) -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on a free loopback port answering every request with a web page (also with an
    ETag, as a web server in front of static pages sends); yields its URL and the requests it saw."""
    seen: list[str] = []
    etag = '"5d41402abc4b2a76b9719d911017c592"' if request.param == "with-etag" else None
    handler = type("WebPage", (_WebPage,), {"etag": etag, "requests": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _web_page_credentials(url: str) -> dict[str, str | None]:
    return {
        "AWS_ENDPOINT_URL_S3": url,
        "AWS_ACCESS_KEY_ID": "portal-key",
        "AWS_SECRET_ACCESS_KEY": "portal-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def test_an_endpoint_answering_with_a_web_page_is_never_taken_for_s3(
    web_page_endpoint: tuple[str, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = web_page_endpoint
    monkeypatch.setenv("SQUEEZEFLOW_S3_MAX_ATTEMPTS", "2")
    store = open_store("s3://portal-bucket/sqf", credentials=_web_page_credentials(url))
    blob = tmp_path / "model.onnx"
    blob.write_bytes(os.urandom(BLOB_BYTES))

    for attempt in (
        lambda: store.put_file(blob, suffix=".onnx"),
        lambda: store.read_record("ingest", "k"),
        lambda: store.write_record("ingest", "k", {"a": 1}),
    ):
        with pytest.raises(InfrastructureError) as failed:
            attempt()
        message = str(failed.value)
        assert message.startswith("S3 ") and f"the endpoint {url} answered " in message, message
        assert "that is not S3" in message and "captive portal" in message, message
    assert seen, "the endpoint was never asked"


def test_a_job_whose_s3_endpoint_answers_with_a_web_page_exits_3_naming_the_endpoint(
    web_page_endpoint: tuple[str, list[str]],
    mlflow_server: MlflowServer,
    tiny_model: Path,
    small_data: Path,
    tmp_path: Path,
) -> None:
    url, _ = web_page_endpoint
    spec = write_spec(
        tmp_path / "job.yaml", job_doc(tiny_model, small_data, name=f"portal-{uuid.uuid4().hex[:8]}")
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        **_web_page_credentials(url),
        "SQUEEZEFLOW_S3_MAX_ATTEMPTS": "2",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    proc = subprocess.run(
        [SQUEEZEFLOW, "run", str(spec), "--no-progress", "--artifacts", "s3://portal-bucket/sqf",
         "--tracking-uri", mlflow_server.tracking_uri, "--workdir", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )  # fmt: skip
    error = " ".join(proc.stderr.split())
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "error (InfrastructureError): S3 " in error and "s3://portal-bucket/sqf/" in error, error
    assert f"the endpoint {url} answered " in error and "that is not S3" in error, error


# -- S3: media types, hashes and status tags --------------------------------------------------------


def _head(endpoint: S3Endpoint, bucket: str, key: str) -> dict[str, Any]:
    return dict(endpoint.client().head_object(Bucket=bucket, Key=key))


def _status(endpoint: S3Endpoint, bucket: str, key: str) -> str | None:
    tags = endpoint.client().get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    return {t["Key"]: t["Value"] for t in tags}.get(STATUS_TAG)


def test_objects_carry_their_media_type_and_hash_and_an_object_with_other_bytes_is_stored_again(
    s3_env: S3Endpoint, s3_bucket: str
) -> None:
    store = open_store(f"s3://{s3_bucket}/sqf")
    assert isinstance(store, S3Store)
    expected = {
        ".html": "text/html; charset=utf-8",
        ".md": "text/markdown; charset=utf-8",
        ".json": "application/json",
        ".png": "image/png",
        ".svg": "image/svg+xml",
        ".onnx": "application/octet-stream",
        ".npy": "application/octet-stream",
    }
    for suffix, media_type in expected.items():
        ref = store.put_bytes(f"bytes of a {suffix} file".encode(), suffix=suffix)
        head = _head(s3_env, s3_bucket, f"sqf/{store.key_of(ref.uri)}")
        assert head["ContentType"] == media_type, suffix
        assert head["Metadata"].get("sha256") == ref.sha256, suffix
    store.put_text("reports/job/report.html", "<html></html>")
    assert (
        _head(s3_env, s3_bucket, "sqf/reports/job/report.html")["ContentType"] == "text/html; charset=utf-8"
    )
    store.write_record("gate", "k", {"passed": False})
    assert _head(s3_env, s3_bucket, "sqf/records/gate/k.json")["ContentType"] == "application/json"

    # other bytes under a content-addressed key (written behind the store's back) are not the object
    ref = store.put_bytes(b"the real model", suffix=".onnx")
    key = f"sqf/{store.key_of(ref.uri)}"
    s3_env.client().put_object(Bucket=s3_bucket, Key=key, Body=b"truncated")
    assert not store.has(ref)
    assert store.put_bytes(b"the real model", suffix=".onnx") == ref
    assert store.has(ref)
    assert s3_env.client().get_object(Bucket=s3_bucket, Key=key)["Body"].read() == b"the real model"

    # records take status tags too, and a status only moves up
    store.mark_record("gate", "k", "failed")
    assert _status(s3_env, s3_bucket, "sqf/records/gate/k.json") == "failed"
    store.mark_record("gate", "k", "promoted")
    store.mark_record("gate", "k", "failed")
    assert _status(s3_env, s3_bucket, "sqf/records/gate/k.json") == "promoted"


# Five candidates, one of each outcome, on the wide CNN (static int8 is about 3x faster, dynamic int8
# several times slower: ConvInteger).
OUTCOME_RECIPES = [
    {"name": "int8-cal128", "steps": [{"name": "ort_static_int8", "params": {"calibration_samples": 128}}]},
    {"name": "int8-cal64", "steps": [{"name": "ort_static_int8", "params": {"calibration_samples": 64}}]},
    {"name": "int8-dynamic", "steps": [{"name": "ort_dynamic_int8"}]},
    {
        "name": "prune90-unrecovered",  # 90% of the channels gone and one tiny step: fails the gate
        "steps": [
            {"name": "structured_prune", "params": {"ratio": 0.9, "importance": "magnitude"}},
            {"name": "finetune", "params": {"epochs": 1, "max_steps": 1, "lr": 1e-6, "augment": False}},
        ],
    },
    {
        "name": "lowrank-nothing",  # no layer is this wide: the pass fails, the candidate is not built
        "steps": [
            {"name": "lowrank_svd", "params": {"min_features": 100000}},
            {"name": "finetune", "params": {"epochs": 1, "max_steps": 1}},
        ],
    },
]


def test_every_candidate_s_objects_and_records_are_tagged_with_its_outcome(
    one_s3_env: S3Endpoint,
    one_s3_bucket: str,
    mlflow_server: MlflowServer,
    wide_model: Path,
    small_data: Path,
    tmp_path: Path,
) -> None:
    from squeezeflow.runner import run_job
    from squeezeflow.spec.load import parse_spec
    from squeezeflow.stages import Settings

    name = f"outcome-tags-{uuid.uuid4().hex[:8]}"
    doc = job_doc(wide_model, small_data, name=name)
    doc["tolerance"] = {"mode": "absolute", "max_drop": 0.05, "bootstrap_samples": 500}
    doc["devices"] = [FAST_DEVICE]
    # any candidate measured slower than the baseline is skipped (dynamic int8 is several times slower)
    doc["search"] = {"recipes": OUTCOME_RECIPES, "max_trials": 5, "seed": 0, "skip_slower_than": 1.01}
    settings = Settings(
        artifacts=f"s3://{one_s3_bucket}/sqf", tracking_uri=mlflow_server.tracking_uri, workdir=tmp_path / "w"
    )
    result = run_job(parse_spec(doc), settings, progress=False)
    store = open_store(settings.artifacts)

    def key(uri: str) -> str:
        return f"sqf/{store.key_of(uri)}"

    gates = {}
    for k in store.list_keys("records/gate"):
        record = store.read_record("gate", k.removeprefix("records/gate/").removesuffix(".json"))
        assert record is not None
        gates[record["candidate_key"]] = (k, record)

    seen = {}
    for row in result.candidates:
        optimize = store.read_record("optimize", row.candidate_key)
        assert optimize is not None, row.label
        if result.promotion.candidate_key == row.candidate_key:
            outcome, status = "promoted", "promoted"
        elif row.status == "failed":
            outcome, status = "not built", "failed"
        elif row.candidate_key not in gates:
            outcome, status = "skipped as slower", "failed"
        elif gates[row.candidate_key][1]["passed"]:
            outcome, status = "passed", "passed"
        else:
            outcome, status = "failed the gate", "failed"
        seen[outcome] = row.label
        tagged = {f"sqf/records/optimize/{row.candidate_key}.json": status}
        if optimize.get("onnx"):
            tagged[key(optimize["onnx"]["uri"])] = status
        if row.candidate_key in gates:
            gate_key, verdict = gates[row.candidate_key]
            tagged[f"sqf/{gate_key}"] = status
            if verdict.get("evidence"):
                tagged[key(verdict["evidence"]["uri"])] = status
        for object_key, want in tagged.items():
            assert _status(one_s3_env, one_s3_bucket, object_key) == want, (row.label, outcome, object_key)

    assert set(seen) == {"promoted", "passed", "not built", "skipped as slower", "failed the gate"}, seen

    # the baseline is never tagged, and the report opens in a browser
    baseline = store.list_keys("records/baseline")
    assert baseline
    base = store.read_record("baseline", baseline[0].removeprefix("records/baseline/").removesuffix(".json"))
    assert base is not None
    assert _status(one_s3_env, one_s3_bucket, key(base["onnx"]["uri"])) is None
    assert result.report_html is not None and result.report_markdown is not None
    assert (
        _head(one_s3_env, one_s3_bucket, key(result.report_html))["ContentType"] == "text/html; charset=utf-8"
    )
    md = _head(one_s3_env, one_s3_bucket, key(result.report_markdown))
    assert md["ContentType"] == "text/markdown; charset=utf-8"
