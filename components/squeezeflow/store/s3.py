"""boto3 plumbing shared by the store and the data readers: one client factory, bounded retries,
and errors turned into messages a person can act on.

Retries come in two layers. botocore retries each request quickly (``SQUEEZEFLOW_S3_MAX_ATTEMPTS``
attempts in all, its backoff starting at 50 ms), which covers a dropped connection but not an endpoint
that is away for a few seconds (a restarting gateway, a load balancer failing over). So `s3_call`
repeats the whole operation when the endpoint could not be reached, after 1 s and again after 2 s
(``OUTAGE_WAITS_S``), then gives up with an infrastructure error: at most
``len(OUTAGE_WAITS_S) + 1`` times ``SQUEEZEFLOW_S3_MAX_ATTEMPTS`` requests per operation.

Every answer is checked before botocore parses it (`check_s3_answer`): a captive portal or a proxy that
answers ``200 OK`` with a web page in place of S3 is an infrastructure error that names the endpoint,
never an object that "exists", an upload that "succeeded" or a record that "is not valid JSON".
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from squeezeflow.errors import InfrastructureError, InvalidInputError

T = TypeVar("T")
log = logging.getLogger(__name__)

_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
# Every S3 implementation (AWS, Ceph RGW, MinIO, moto) sends an ETag with these answers.
_ANSWERS_WITH_ETAG = {"HeadObject", "GetObject", "PutObject", "UploadPart"}
# Answers whose body is the object's own bytes, of whatever type it was stored with (a report is HTML).
_OBJECT_BODIES = {"HeadObject", "GetObject"}
# Server-side failures that botocore already retried and that a later attempt may not see.
_UNAVAILABLE_CODES = {"500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown"}
OUTAGE_WAITS_S = (1.0, 2.0)


class NotS3Answer(InfrastructureError):
    """An endpoint answered an S3 request successfully, but not as S3 does (a web page, no ETag)."""

    def __init__(self, endpoint: str, operation: str, status: int, content_type: str, why: str) -> None:
        super().__init__(
            f"the endpoint {endpoint} answered {operation} with HTTP {status} ({content_type}) {why}: "
            "that is not S3. A captive portal or a proxy may be answering in its place; check "
            "AWS_ENDPOINT_URL_S3 and the HTTP_PROXY/HTTPS_PROXY/NO_PROXY settings"
        )


def check_s3_answer(
    endpoint: str, operation: str, status: int, headers: Mapping[str, str], body: Any
) -> None:
    """Raise `NotS3Answer` when a successful (2xx) answer to ``operation`` cannot have come from S3:
    an object answer without an ETag, or a web page where S3 answers with XML or nothing. (moto labels
    its empty answers text/html, so only an HTML *body* counts.)"""
    if not 200 <= status < 300:
        return  # errors are parsed and translated as S3 errors; a 3xx may be S3's region redirect
    content_type = str(headers.get("content-type") or "no Content-Type")
    if (
        operation not in _OBJECT_BODIES
        and content_type.lower().startswith("text/html")
        and isinstance(body, bytes | bytearray)
        and body.strip()
    ):
        raise NotS3Answer(endpoint, operation, status, content_type, "with a web page")
    if operation in _ANSWERS_WITH_ETAG and not headers.get("etag"):
        raise NotS3Answer(
            endpoint, operation, status, content_type, "without the ETag that S3 sends with every object"
        )


def _register_answer_check(client: Any) -> Any:
    endpoint = str(client.meta.endpoint_url)

    def before_parse(operation_model: Any, response_dict: Mapping[str, Any], **_: Any) -> None:
        check_s3_answer(
            endpoint,
            operation_model.name,
            int(response_dict.get("status_code", 0)),
            response_dict.get("headers") or {},
            response_dict.get("body"),
        )

    client.meta.events.register("before-parse.s3", before_parse)
    return client


def s3_client(credentials: Mapping[str, str | None] | None = None) -> Any:
    """An S3 client from the standard AWS environment, or from ``credentials`` (the same variable names:
    ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL_S3``,
    ``AWS_DEFAULT_REGION``) when given, which leaves the process environment alone. Path-style
    addressing when an endpoint is set (MinIO, Ceph RGW, moto), bounded retries with backoff, short
    connect timeouts. Every answer is checked to be S3's (`check_s3_answer`)."""
    import boto3
    from botocore.config import Config

    src: Mapping[str, str | None] = os.environ if credentials is None else credentials
    endpoint = src.get("AWS_ENDPOINT_URL_S3") or src.get("AWS_ENDPOINT_URL")
    cfg = Config(
        retries={
            # total_max_attempts counts the first request too (botocore's max_attempts would not)
            "total_max_attempts": int(os.environ.get("SQUEEZEFLOW_S3_MAX_ATTEMPTS", "5")),
            "mode": "standard",
        },
        connect_timeout=float(os.environ.get("SQUEEZEFLOW_S3_CONNECT_TIMEOUT", "5")),
        read_timeout=60,
        s3={"addressing_style": "path" if endpoint else "auto"},
    )
    if credentials is None:
        return _register_answer_check(
            boto3.session.Session().client("s3", endpoint_url=endpoint or None, config=cfg)
        )
    session = boto3.session.Session(
        aws_access_key_id=src.get("AWS_ACCESS_KEY_ID") or None,
        aws_secret_access_key=src.get("AWS_SECRET_ACCESS_KEY") or None,
        aws_session_token=src.get("AWS_SESSION_TOKEN") or None,
        region_name=src.get("AWS_DEFAULT_REGION") or None,
    )
    return _register_answer_check(session.client("s3", endpoint_url=endpoint or None, config=cfg))


def _error_code(err: Exception) -> str:
    resp = getattr(err, "response", None) or {}
    return str(resp.get("Error", {}).get("Code", ""))


def _endpoint_away(err: Exception) -> bool:
    """Whether ``err`` says the endpoint could not be reached or could not serve (worth waiting for)."""
    from boto3.exceptions import RetriesExceededError, S3UploadFailedError
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(err, ConnectionError | HTTPClientError | RetriesExceededError):
        return True
    if isinstance(err, ClientError):
        return _error_code(err) in _UNAVAILABLE_CODES
    # upload_file wraps what made the upload fail in its message only
    return isinstance(err, S3UploadFailedError) and any(
        c in str(err) for c in ("Connection", "timed out", *_UNAVAILABLE_CODES)
    )


def s3_call(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn``; while the endpoint is away, call it again after each of ``OUTAGE_WAITS_S``, then
    translate the failure: missing objects and buckets are the user's input (exit 2), unreachable
    endpoints and server errors are infrastructure (exit 3). ``fn`` must be safe to repeat."""
    for wait_s in (*OUTAGE_WAITS_S, None):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            if wait_s is None or not _endpoint_away(err):
                _translate(what, err)
                raise
            log.warning("S3 %s: the endpoint is unreachable (%s); trying again in %.0f s", what, err, wait_s)
            time.sleep(wait_s)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _translate(what: str, err: Exception) -> None:
    """Raise the squeezeflow error for a botocore/boto3 failure; return for anything else."""
    from boto3.exceptions import RetriesExceededError, S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    if isinstance(err, NotS3Answer):
        raise InfrastructureError(f"S3 {what} failed: {err}") from None
    if isinstance(err, NoCredentialsError):
        raise InfrastructureError(
            f"S3 {what} failed: no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
            "or an AWS profile)"
        ) from None
    if isinstance(err, ClientError):
        code = _error_code(err)
        if code in _MISSING_CODES or code == "NoSuchBucket":
            raise InvalidInputError(f"S3 {what} failed: {code} (check the bucket and key)") from None
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise InfrastructureError(
                f"S3 {what} failed: {code} (check credentials and permissions)"
            ) from None
        raise InfrastructureError(f"S3 {what} failed: {code or err}") from None
    if isinstance(err, BotoCoreError | S3UploadFailedError | RetriesExceededError):
        raise InfrastructureError(f"S3 {what} failed after retries: {err}") from None


def s3_head(client: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """The object's HEAD answer (``ContentLength``, ``ETag``, ``Metadata`` ...), or None when the key
    does not exist."""
    from botocore.exceptions import ClientError

    def head() -> dict[str, Any] | None:
        try:
            return dict(client.head_object(Bucket=bucket, Key=key))
        except ClientError as err:
            if _error_code(err) in _MISSING_CODES:
                return None
            raise

    return s3_call(f"check of s3://{bucket}/{key}", head)


def s3_exists(client: Any, bucket: str, key: str) -> bool:
    """Whether the object exists. (A HEAD on a missing bucket is also a 404: the next write says so.)"""
    return s3_head(client, bucket, key) is not None


def s3_get_optional(client: Any, bucket: str, key: str, content_type: str | None = None) -> bytes | None:
    """The object's bytes, or None when the key does not exist (a missing bucket is still an error).
    ``content_type``: the type the object was stored with; a web page in its place is not S3's answer."""
    from botocore.exceptions import ClientError

    def get() -> bytes | None:
        try:
            resp = client.get_object(Bucket=bucket, Key=key)
        except ClientError as err:
            if _error_code(err) in _MISSING_CODES:
                return None
            raise
        got = str(resp.get("ContentType") or "")
        if content_type and got.startswith("text/html") and not content_type.startswith("text/html"):
            status = int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode", 200))
            why = f"with a web page in place of an object stored as {content_type}"
            raise NotS3Answer(str(client.meta.endpoint_url), "GetObject", status, got, why)
        return bytes(resp["Body"].read())

    return s3_call(f"read of s3://{bucket}/{key}", get)


def s3_list(client: Any, bucket: str, prefix: str) -> list[str]:
    paginator = client.get_paginator("list_objects_v2")

    def pages() -> list[str]:
        return [
            o["Key"]
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])
        ]

    return s3_call(f"listing of s3://{bucket}/{prefix}", pages)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into (bucket, key); refuses path traversal in the key."""
    if not uri.startswith("s3://"):
        raise InvalidInputError(f"not an s3:// URI: {uri!r}")
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise InvalidInputError(f"s3 URI {uri!r} has no bucket")
    if key and ".." in key.split("/"):
        raise InvalidInputError(f"s3 URI {uri!r} contains '..'")
    return bucket, key


def download_uri(uri: str, dest: Path) -> Path:
    """Copy a local path or ``s3://`` object to ``dest`` (a file path)."""
    import shutil

    dest.parent.mkdir(parents=True, exist_ok=True)
    if uri.startswith("s3://"):
        bucket, key = parse_s3_uri(uri)
        if not key:
            raise InvalidInputError(f"{uri} names a bucket, not an object")
        s3_call(f"download of {uri}", s3_client().download_file, bucket, key, str(dest))
        return dest
    src = Path(uri)
    if not src.is_file():
        raise InvalidInputError(f"{uri} does not exist or is not a file")
    shutil.copyfile(src, dest)
    return dest
