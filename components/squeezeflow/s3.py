"""boto3 plumbing shared by the store and the data readers: one client factory, bounded retries,
and errors turned into messages a person can act on.

Retries come in two layers. botocore retries each request quickly (``SQUEEZEFLOW_S3_MAX_ATTEMPTS``
attempts in all, its backoff starting at 50 ms), which covers a dropped connection but not an endpoint
that is away for a few seconds (a restarting gateway, a load balancer failing over). So `s3_call`
repeats the whole operation when the endpoint could not be reached, after 1 s and again after 2 s
(``OUTAGE_WAITS_S``), then gives up with an infrastructure error: at most
``len(OUTAGE_WAITS_S) + 1`` times ``SQUEEZEFLOW_S3_MAX_ATTEMPTS`` requests per operation.
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
# Server-side failures that botocore already retried and that a later attempt may not see.
_UNAVAILABLE_CODES = {"500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown"}
OUTAGE_WAITS_S = (1.0, 2.0)


def s3_client(credentials: Mapping[str, str | None] | None = None) -> Any:
    """An S3 client from the standard AWS environment, or from ``credentials`` (the same variable names:
    ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL_S3``,
    ``AWS_DEFAULT_REGION``) when given, which leaves the process environment alone. Path-style
    addressing when an endpoint is set (MinIO, Ceph RGW, moto), bounded retries with backoff, short
    connect timeouts."""
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
        return boto3.session.Session().client("s3", endpoint_url=endpoint or None, config=cfg)
    session = boto3.session.Session(
        aws_access_key_id=src.get("AWS_ACCESS_KEY_ID") or None,
        aws_secret_access_key=src.get("AWS_SECRET_ACCESS_KEY") or None,
        aws_session_token=src.get("AWS_SESSION_TOKEN") or None,
        region_name=src.get("AWS_DEFAULT_REGION") or None,
    )
    return session.client("s3", endpoint_url=endpoint or None, config=cfg)


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


def s3_exists(client: Any, bucket: str, key: str) -> bool:
    """Whether the object exists. (A HEAD on a missing bucket is also a 404: the next write says so.)"""
    from botocore.exceptions import ClientError

    def head() -> bool:
        try:
            client.head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as err:
            if _error_code(err) in _MISSING_CODES:
                return False
            raise

    return s3_call(f"check of s3://{bucket}/{key}", head)


def s3_get_optional(client: Any, bucket: str, key: str) -> bytes | None:
    """The object's bytes, or None when the key does not exist (a missing bucket is still an error)."""
    from botocore.exceptions import ClientError

    def get() -> bytes | None:
        try:
            resp = client.get_object(Bucket=bucket, Key=key)
            return bytes(resp["Body"].read())
        except ClientError as err:
            if _error_code(err) in _MISSING_CODES:
                return None
            raise

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


def download_uri(uri: str, dest: Path) -> Path:
    """Copy a local path or ``s3://`` object to ``dest`` (a file path)."""
    import shutil

    from squeezeflow.store import parse_s3_uri

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
