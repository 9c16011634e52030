"""The artifact store: one interface over a local directory and ``s3://``.

Objects are content-addressed (``objects/<sha256[:2]>/<sha256><suffix>``) and verified against their
SHA-256 on every read. Stage result records live under ``records/<stage>/<key>.json`` and are written
last, after every object they point to, so a record's presence means its stage finished.

Objects carry the media type of their suffix (``content_type_for``: a stored HTML report opens in a
browser), and on S3 their SHA-256 as metadata, so that an existence check verifies what it finds.
A store that cannot take a write (disk full, quota, file-size limit, read-only, permissions) is an
infrastructure error (exit 3) that names the store and what was being written.

S3 credentials, endpoint and region come from the standard AWS environment and config
(``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL_S3``, ``~/.aws/config`` ...).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import mimetypes
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict

from squeezeflow.errors import InfrastructureError, IntegrityError, InvalidInputError
from squeezeflow.store.s3 import parse_s3_uri

_CHUNK = 1 << 20


class ArtifactRef(BaseModel):
    """A pointer to bytes in the store: where they are and what they hash to."""

    model_config = ConfigDict(frozen=True)

    uri: str
    sha256: str
    size: int


log = logging.getLogger(__name__)


_HEX64 = re.compile(r"[0-9a-f]{64}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Media types by suffix, for the ones squeezeflow stores; `mimetypes` (which depends on the host's
# /etc/mime.types) answers for the rest. Model and array files are opaque bytes.
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".json": "application/json",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".onnx": "application/octet-stream",
    ".pt": "application/octet-stream",
    ".pt2": "application/octet-stream",
    ".pth": "application/octet-stream",
    ".npy": "application/octet-stream",
    ".npz": "application/octet-stream",
    ".bin": "application/octet-stream",
}


def content_type_for(name: str) -> str:
    """The media type an object named ``name`` is stored with (by its suffix; text is UTF-8)."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in _CONTENT_TYPES:
        return _CONTENT_TYPES[suffix]
    guessed, encoding = mimetypes.guess_type(f"object{suffix}", strict=False)
    if guessed is None or encoding is not None:  # unknown, or compressed (.gz): opaque bytes
        return "application/octet-stream"
    return f"{guessed}; charset=utf-8" if guessed.startswith("text/") else guessed


# What a person can do about a store that refuses a write, by errno.
_WRITE_FAULTS = {
    errno.ENOSPC: "free space on its file system, or use another artifact store",
    errno.EDQUOT: "free space or raise the disk quota, or use another artifact store",
    errno.EFBIG: "the file is larger than its file system or the file-size limit (ulimit -f) allows",
    errno.EROFS: "its file system is mounted read-only: remount it read-write or use another artifact store",
    errno.EACCES: "this user may not write there: check the directory's owner and permissions",
    errno.EPERM: "this user may not write there: check the directory's owner, permissions and attributes",
}
_READ_FAULTS = {
    errno.EACCES: "this user may not read there: check the directory's owner and permissions",
    errno.EPERM: "this user may not read there: check the directory's owner and permissions",
}


def store_fault(root: str, action: str, what: str, err: OSError) -> InfrastructureError | None:
    """The infrastructure error for ``err`` met while ``action`` ("write" or "read") ``what`` in the local
    store at ``root``, or None when ``err`` is not a fault of the store's file system."""
    table = _WRITE_FAULTS if action == "write" else _READ_FAULTS
    if err.errno not in table:
        return None
    name = errno.errorcode.get(err.errno, str(err.errno))
    where = "to" if action == "write" else "from"
    return InfrastructureError(
        f"cannot {action} {what} {where} the artifact store {root}: {os.strerror(err.errno)} ({name}); "
        f"{table[err.errno]}"
    )


def _safe_relative_key(key: str) -> str:
    parts = key.replace("\\", "/").split("/")
    if key.startswith("/") or any(p in ("..", "") for p in parts):
        raise InvalidInputError(f"unsafe store key {key!r}: keys are relative, with no '..' or empty parts")
    return "/".join(parts)


class ArtifactStore(ABC):
    """Content-addressed objects plus JSON result records."""

    root: str

    @abstractmethod
    def _put_file(self, key: str, src: Path) -> str:
        """Store ``src`` at the content-addressed ``key`` (``objects/<sha256[:2]>/<sha256><suffix>``)."""

    @abstractmethod
    def _get_file(self, key: str, dest: Path) -> None: ...

    @abstractmethod
    def _put_text(self, key: str, text: str) -> None: ...

    @abstractmethod
    def _get_text(self, key: str) -> str | None: ...

    @abstractmethod
    def _holds(self, key: str, sha256: str, size: int) -> bool:
        """Whether ``key`` holds an object of ``size`` bytes with this content hash, as far as the
        store can tell without reading it (a partial or foreign object does not count)."""

    @abstractmethod
    def list_keys(self, prefix: str) -> list[str]: ...

    @abstractmethod
    def key_of(self, uri: str) -> str: ...

    def has(self, ref: ArtifactRef) -> bool:
        """Whether the artifact's object is still there (a lifecycle rule may have expired it)."""
        return self._holds(self.key_of(ref.uri), ref.sha256, ref.size)

    def mark(self, ref: ArtifactRef, status: str) -> None:  # noqa: B027 - optional capability
        """Record an artifact's fate where the store supports it (S3: the object tag
        ``squeezeflow-status``, which a bucket lifecycle rule may use to expire failed candidates).
        Objects are content-addressed, so one object can be several candidates: the status only ever
        moves up (failed < passed < promoted) and a promoted model is never marked failed."""

    def mark_record(self, stage: str, key: str, status: str) -> None:  # noqa: B027 - optional capability
        """`mark` for a stage's result record (a failed candidate's records expire with its model)."""

    # -- objects ----------------------------------------------------------------------------------
    def put_file(self, path: Path, suffix: str = "") -> ArtifactRef:
        """Store a file under its content hash; storing the same bytes again is a no-op (when the
        store verifiably holds them: the right size and, on S3, the recorded SHA-256)."""
        digest = sha256_file(path)
        size = path.stat().st_size
        key = f"objects/{digest[:2]}/{digest}{suffix}"
        uri = self.uri_of(key) if self._holds(key, digest, size) else self._put_file(key, path)
        return ArtifactRef(uri=uri, sha256=digest, size=size)

    def put_file_at(self, key: str, path: Path) -> str:
        """Store a file at a named ``key`` (a folder of files that must sit together, such as a
        dataset's descriptor and splits); returns its URI. Callers name keys by content."""
        return self._put_file(_safe_relative_key(key), path)

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

    @contextlib.contextmanager
    def _io(self, action: str, what: str) -> Iterator[None]:
        """Turn a fault of the store's file system into an infrastructure error naming it and ``what``."""
        try:
            yield
        except OSError as err:
            fault = store_fault(self.root, action, what, err)
            if fault is None:
                raise
            raise fault from None

    def _atomic_write(self, dest: Path, writer: Any, what: str) -> None:
        """Write ``dest`` through a temporary file beside it: a failed write leaves nothing under ``dest``."""
        with self._io("write", what):
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
            os.close(fd)
            try:
                writer(Path(tmp))
                os.replace(tmp, dest)
            except BaseException:
                with contextlib.suppress(OSError):
                    Path(tmp).unlink(missing_ok=True)
                raise

    def _put_file(self, key: str, src: Path) -> str:
        dest = self._p(key)
        self._atomic_write(dest, lambda t: shutil.copyfile(src, t), f"{key} (from {src})")
        return str(dest)

    def _get_file(self, key: str, dest: Path) -> None:
        src = self._p(key)
        if not src.exists():
            raise IntegrityError(f"artifact {src} is missing from the store")
        with self._io("read", key):  # only opening the store's file: ``dest`` is not the store
            f = open(src, "rb")  # noqa: SIM115 - closed just below
        with f, open(dest, "wb") as out:
            shutil.copyfileobj(f, out, _CHUNK)

    def _put_text(self, key: str, text: str) -> None:
        self._atomic_write(self._p(key), lambda t: t.write_text(text), key)

    def _get_text(self, key: str) -> str | None:
        p = self._p(key)
        with self._io("read", key):
            return p.read_text() if p.exists() else None

    def _holds(self, key: str, sha256: str, size: int) -> bool:
        p = self._p(key)
        with self._io("read", key):
            return p.is_file() and p.stat().st_size == size

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
        from squeezeflow.store.s3 import s3_client

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
        from squeezeflow.store.s3 import s3_call

        sha256 = PurePosixPath(key).name[:64]  # a content-addressed key names its hash
        if not _HEX64.fullmatch(sha256):  # a named key (`put_file_at`)
            sha256 = sha256_file(src)
        s3_call(
            f"upload to {self.uri_of(key)}",
            self.client.upload_file,
            str(src),
            self.bucket,
            self._k(key),
            ExtraArgs={"ContentType": content_type_for(key), "Metadata": {"sha256": sha256}},
        )
        return self.uri_of(key)

    def _get_file(self, key: str, dest: Path) -> None:
        from squeezeflow.store.s3 import s3_call

        s3_call(
            f"download of {self.uri_of(key)}", self.client.download_file, self.bucket, self._k(key), str(dest)
        )

    def _put_text(self, key: str, text: str) -> None:
        from squeezeflow.store.s3 import s3_call

        s3_call(
            f"write of {self.uri_of(key)}",
            self.client.put_object,
            Bucket=self.bucket,
            Key=self._k(key),
            Body=text.encode(),
            ContentType=content_type_for(key),
        )

    def _get_text(self, key: str) -> str | None:
        from squeezeflow.store.s3 import s3_get_optional

        body = s3_get_optional(self.client, self.bucket, self._k(key), content_type=content_type_for(key))
        return None if body is None else body.decode()

    def _holds(self, key: str, sha256: str, size: int) -> bool:
        from squeezeflow.store.s3 import s3_head

        head = s3_head(self.client, self.bucket, self._k(key))
        if head is None:
            return False
        # Objects stored before squeezeflow recorded the hash have no sha256 metadata: the size decides.
        recorded = (head.get("Metadata") or {}).get("sha256")
        if head.get("ContentLength") == size and recorded in (None, sha256):
            return True
        log.warning(
            "%s holds %s bytes (SHA-256 %s), not the %d bytes of SHA-256 %s: storing them again",
            self.uri_of(key),
            head.get("ContentLength"),
            recorded or "not recorded",
            size,
            sha256,
        )
        return False

    def mark(self, ref: ArtifactRef, status: str) -> None:
        self._tag(self.key_of(ref.uri), status)

    def mark_record(self, stage: str, key: str, status: str) -> None:
        self._tag(_safe_relative_key(f"records/{stage}/{key}.json"), status)

    def _tag(self, key: str, status: str) -> None:
        try:
            self._raise_tag(key, status)
        except Exception as err:  # housekeeping: a store without tagging must not fail the job
            log.warning(
                "could not tag %s as %s (%s); lifecycle rules will not see it", self.uri_of(key), status, err
            )

    def _raise_tag(self, key: str, status: str) -> None:
        from squeezeflow.store.s3 import s3_call

        uri, full = self.uri_of(key), self._k(key)
        current = s3_call(f"tags of {uri}", self.client.get_object_tagging, Bucket=self.bucket, Key=full)
        tags = {t["Key"]: t["Value"] for t in current.get("TagSet", [])}
        if STATUS_RANK.get(tags.get(STATUS_TAG, ""), -1) >= STATUS_RANK[status]:
            return
        tags[STATUS_TAG] = status
        s3_call(
            f"tagging of {uri}",
            self.client.put_object_tagging,
            Bucket=self.bucket,
            Key=full,
            Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in sorted(tags.items())]},
        )

    def list_keys(self, prefix: str) -> list[str]:
        from squeezeflow.store.s3 import s3_list

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
