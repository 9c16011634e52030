"""boto3 plumbing shared by the store and the data readers: one client factory, bounded retries,
and errors turned into messages a person can act on."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from squeezeflow.errors import InfrastructureError, InvalidInputError

T = TypeVar("T")

_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}


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
        retries={"max_attempts": int(os.environ.get("SQUEEZEFLOW_S3_MAX_ATTEMPTS", "5")), "mode": "standard"},
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


def s3_call(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn`` and translate botocore failures: missing objects and buckets are the user's input
    (exit 2), unreachable endpoints and server errors are infrastructure (exit 3)."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        return fn(*args, **kwargs)
    except NoCredentialsError:
        raise InfrastructureError(
            f"S3 {what} failed: no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
            "or an AWS profile)"
        ) from None
    except ClientError as err:
        code = _error_code(err)
        if code in _MISSING_CODES or code == "NoSuchBucket":
            raise InvalidInputError(f"S3 {what} failed: {code} (check the bucket and key)") from None
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise InfrastructureError(
                f"S3 {what} failed: {code} (check credentials and permissions)"
            ) from None
        raise InfrastructureError(f"S3 {what} failed: {code or err}") from None
    except (BotoCoreError, S3UploadFailedError) as err:
        raise InfrastructureError(f"S3 {what} failed after retries: {err}") from None


def s3_exists(client: Any, bucket: str, key: str) -> bool:
    """Whether the object exists. (A HEAD on a missing bucket is also a 404: the next write says so.)"""
    from botocore.exceptions import ClientError

    try:
        client.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as err:
        if _error_code(err) in _MISSING_CODES:
            return False
        return s3_call(f"check of s3://{bucket}/{key}", _reraise, err)
    except Exception as err:
        return s3_call(f"check of s3://{bucket}/{key}", _reraise, err)


def s3_get_optional(client: Any, bucket: str, key: str) -> bytes | None:
    """The object's bytes, or None when the key does not exist (a missing bucket is still an error)."""
    from botocore.exceptions import ClientError

    try:
        resp = client.get_object(Bucket=bucket, Key=key)
        return bytes(resp["Body"].read())
    except ClientError as err:
        if _error_code(err) in _MISSING_CODES:
            return None
        return s3_call(f"read of s3://{bucket}/{key}", _reraise, err)
    except Exception as err:
        return s3_call(f"read of s3://{bucket}/{key}", _reraise, err)


def _reraise(err: Exception) -> Any:
    raise err


def s3_list(client: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    paginator = client.get_paginator("list_objects_v2")

    def _pages() -> None:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(o["Key"] for o in page.get("Contents", []))

    s3_call(f"listing of s3://{bucket}/{prefix}", _pages)
    return keys


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
