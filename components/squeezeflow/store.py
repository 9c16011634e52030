"""The artifact store: one interface over a local directory and ``s3://``.

Objects are content-addressed (``objects/<sha256[:2]>/<sha256><suffix>``) and verified against their
SHA-256 on every read. Stage result records live under ``records/<stage>/<key>.json`` and are written
last, after every object they point to, so a record's presence means its stage finished.

S3 credentials, endpoint and region come from the standard AWS environment and config
(``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL_S3``, ``~/.aws/config`` ...).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from squeezeflow.errors import InfrastructureError, IntegrityError, InvalidInputError

_CHUNK = 1 << 20


class ArtifactRef(BaseModel):
    """A pointer to bytes in the store: where they are and what they hash to."""

    model_config = ConfigDict(frozen=True)

    uri: str
    sha256: str
    size: int


log = logging.getLogger(__name__)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _safe_relative_key(key: str) -> str:
    parts = key.replace("\\", "/").split("/")
    if key.startswith("/") or any(p in ("..", "") for p in parts):
        raise InvalidInputError(f"unsafe store key {key!r}: keys are relative, with no '..' or empty parts")
    return "/".join(parts)


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


class ArtifactStore(ABC):
    """Content-addressed objects plus JSON result records."""

    root: str

    @abstractmethod
    def _put_file(self, key: str, src: Path) -> str: ...

    @abstractmethod
    def _get_file(self, key: str, dest: Path) -> None: ...

    @abstractmethod
    def _put_text(self, key: str, text: str) -> None: ...

    @abstractmethod
    def _get_text(self, key: str) -> str | None: ...

    @abstractmethod
    def _exists(self, key: str) -> bool: ...

    @abstractmethod
    def list_keys(self, prefix: str) -> list[str]: ...

    @abstractmethod
    def key_of(self, uri: str) -> str: ...

    def has(self, ref: ArtifactRef) -> bool:
        """Whether the artifact's object is still there (a lifecycle rule may have expired it)."""
        return self._exists(self.key_of(ref.uri))

    def mark(self, ref: ArtifactRef, status: str) -> None:  # noqa: B027 - optional capability
        """Record an artifact's fate where the store supports it (S3: the object tag
        ``squeezeflow-status``, which a bucket lifecycle rule may use to expire failed candidates).
        Objects are content-addressed, so one object can be several candidates: the status only ever
        moves up (failed < passed < promoted) and a promoted model is never marked failed."""

    # -- objects ----------------------------------------------------------------------------------
    def put_file(self, path: Path, suffix: str = "") -> ArtifactRef:
        """Store a file under its content hash; storing the same bytes again is a no-op."""
        digest = sha256_file(path)
        key = f"objects/{digest[:2]}/{digest}{suffix}"
        uri = self._put_file(key, path) if not self._exists(key) else self.uri_of(key)
        return ArtifactRef(uri=uri, sha256=digest, size=path.stat().st_size)

    def put_bytes(self, data: bytes, suffix: str = "") -> ArtifactRef:
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "blob"
            p.write_bytes(data)
            return self.put_file(p, suffix)

    def fetch(self, ref: ArtifactRef, cache_dir: Path) -> Path:
        """A local, verified copy of ``ref`` (cached by content hash)."""
        cache_dir.mkdir(parents=True, exist_ok=True)
        name = ref.uri.rsplit("/", 1)[-1]
        dest = cache_dir / name
        if dest.exists() and sha256_file(dest) == ref.sha256:
            return dest
        tmp = dest.with_name(f".{name}.{os.getpid()}.part")
        self._get_file(self.key_of(ref.uri), tmp)
        got = sha256_file(tmp)
        if got != ref.sha256:
            tmp.unlink(missing_ok=True)
            raise IntegrityError(
                f"artifact {ref.uri} is corrupt: SHA-256 {got} does not match the recorded {ref.sha256}"
            )
        os.replace(tmp, dest)
        return dest

    def read_bytes(self, ref: ArtifactRef, cache_dir: Path) -> bytes:
        return self.fetch(ref, cache_dir).read_bytes()

    # -- records ----------------------------------------------------------------------------------
    def write_record(self, stage: str, key: str, record: BaseModel | dict[str, Any]) -> str:
        """Write a stage's result record (last, after its objects)."""
        k = _safe_relative_key(f"records/{stage}/{key}.json")
        payload = record.model_dump(mode="json") if isinstance(record, BaseModel) else record
        self._put_text(k, json.dumps(payload, indent=2, sort_keys=True))
        return self.uri_of(k)

    def read_record(self, stage: str, key: str) -> dict[str, Any] | None:
        text = self._get_text(_safe_relative_key(f"records/{stage}/{key}.json"))
        if text is None:
            return None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise IntegrityError(f"record {stage}/{key} in {self.root} is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise IntegrityError(f"record {stage}/{key} in {self.root} is not a JSON object")
        return data

    def put_text(self, key: str, text: str) -> str:
        """Write a small named document (reports, summaries) at ``key``; returns its URI."""
        k = _safe_relative_key(key)
        self._put_text(k, text)
        return self.uri_of(k)

    def uri_of(self, key: str) -> str:
        return f"{self.root.rstrip('/')}/{key}"


class LocalStore(ArtifactStore):
    """A directory on the local file system. Writes go to a temporary file and are renamed into place."""

    def __init__(self, root: str | Path) -> None:
        self.path = Path(root).expanduser().resolve()
        self.path.mkdir(parents=True, exist_ok=True)
        self.root = str(self.path)

    def _p(self, key: str) -> Path:
        return self.path / _safe_relative_key(key)

    def key_of(self, uri: str) -> str:
        p = Path(uri).resolve()
        try:
            return p.relative_to(self.path).as_posix()
        except ValueError:
            raise InvalidInputError(f"{uri} is not inside the artifact store {self.root}") from None

    def _atomic_write(self, dest: Path, writer: Any) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        os.close(fd)
        try:
            writer(Path(tmp))
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _put_file(self, key: str, src: Path) -> str:
        dest = self._p(key)
        self._atomic_write(dest, lambda t: shutil.copyfile(src, t))
        return str(dest)

    def _get_file(self, key: str, dest: Path) -> None:
        src = self._p(key)
        if not src.exists():
            raise IntegrityError(f"artifact {src} is missing from the store")
        shutil.copyfile(src, dest)

    def _put_text(self, key: str, text: str) -> None:
        self._atomic_write(self._p(key), lambda t: t.write_text(text))

    def _get_text(self, key: str) -> str | None:
        p = self._p(key)
        return p.read_text() if p.exists() else None

    def _exists(self, key: str) -> bool:
        return self._p(key).exists()

    def list_keys(self, prefix: str) -> list[str]:
        base = self._p(prefix) if prefix else self.path
        if not base.exists():
            return []
        return sorted(
            p.relative_to(self.path).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.endswith(".part")
        )

    def uri_of(self, key: str) -> str:
        return str(self._p(key))


class S3Store(ArtifactStore):
    """An ``s3://bucket/prefix`` store. A PUT is atomic in S3, so no partial object is ever visible."""

    def __init__(self, uri: str, credentials: Mapping[str, str | None] | None = None) -> None:
        from squeezeflow.s3 import s3_client

        self.bucket, prefix = parse_s3_uri(uri)
        self.prefix = prefix.strip("/")
        self.root = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.client = s3_client(credentials)

    def _k(self, key: str) -> str:
        key = _safe_relative_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def key_of(self, uri: str) -> str:
        bucket, key = parse_s3_uri(uri)
        if bucket != self.bucket or (self.prefix and not key.startswith(self.prefix + "/")):
            raise InvalidInputError(f"{uri} is not inside the artifact store {self.root}")
        return key[len(self.prefix) + 1 :] if self.prefix else key

    def _put_file(self, key: str, src: Path) -> str:
        from squeezeflow.s3 import s3_call

        s3_call(f"upload to {self.uri_of(key)}", self.client.upload_file, str(src), self.bucket, self._k(key))
        return self.uri_of(key)

    def _get_file(self, key: str, dest: Path) -> None:
        from squeezeflow.s3 import s3_call

        s3_call(
            f"download of {self.uri_of(key)}", self.client.download_file, self.bucket, self._k(key), str(dest)
        )

    def _put_text(self, key: str, text: str) -> None:
        from squeezeflow.s3 import s3_call

        s3_call(
            f"write of {self.uri_of(key)}",
            self.client.put_object,
            Bucket=self.bucket,
            Key=self._k(key),
            Body=text.encode(),
            ContentType="application/json",
        )

    def _get_text(self, key: str) -> str | None:
        from squeezeflow.s3 import s3_get_optional

        body = s3_get_optional(self.client, self.bucket, self._k(key))
        return None if body is None else body.decode()

    def _exists(self, key: str) -> bool:
        from squeezeflow.s3 import s3_exists

        return s3_exists(self.client, self.bucket, self._k(key))

    def mark(self, ref: ArtifactRef, status: str) -> None:
        try:
            self._mark(ref, status)
        except Exception as err:  # housekeeping: a store without tagging must not fail the job
            log.warning("could not tag %s as %s (%s); lifecycle rules will not see it", ref.uri, status, err)

    def _mark(self, ref: ArtifactRef, status: str) -> None:
        from squeezeflow.s3 import s3_call

        key = self._k(self.key_of(ref.uri))
        current = s3_call(f"tags of {ref.uri}", self.client.get_object_tagging, Bucket=self.bucket, Key=key)
        tags = {t["Key"]: t["Value"] for t in current.get("TagSet", [])}
        if STATUS_RANK.get(tags.get(STATUS_TAG, ""), -1) >= STATUS_RANK[status]:
            return
        tags[STATUS_TAG] = status
        s3_call(
            f"tagging of {ref.uri}",
            self.client.put_object_tagging,
            Bucket=self.bucket,
            Key=key,
            Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in sorted(tags.items())]},
        )

    def list_keys(self, prefix: str) -> list[str]:
        from squeezeflow.s3 import s3_list

        full = self._k(prefix) if prefix else self.prefix
        keys = s3_list(self.client, self.bucket, full)
        cut = len(self.prefix) + 1 if self.prefix else 0
        return sorted(k[cut:] for k in keys)


STATUS_TAG = "squeezeflow-status"
STATUS_RANK = {"failed": 0, "passed": 1, "promoted": 2}


def open_store(uri: str | Path, credentials: Mapping[str, str | None] | None = None) -> ArtifactStore:
    """The store at ``uri``: ``s3://bucket/prefix`` or a local directory. ``credentials`` (AWS variable
    names) replace the environment's for an S3 store."""
    s = str(uri)
    if s.startswith("s3://"):
        return S3Store(s, credentials)
    if "://" in s:
        raise InvalidInputError(f"unsupported artifact store URI {s!r}: use a local directory or s3://")
    try:
        return LocalStore(s)
    except OSError as err:
        raise InfrastructureError(f"cannot use {s} as the artifact store: {err}") from None
