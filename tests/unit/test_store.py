"""The local artifact store: content addressing, verification on read, records, safe keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from squeezeflow.errors import IntegrityError, InvalidInputError
from squeezeflow.store.artifacts import LocalStore, open_store, parse_s3_uri


def test_put_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    a = store.put_bytes(b"weights", suffix=".onnx")
    b = store.put_bytes(b"weights", suffix=".onnx")
    assert a == b
    assert a.uri.endswith(f"objects/{a.sha256[:2]}/{a.sha256}.onnx")
    assert len(store.list_keys("objects")) == 1


def test_fetch_returns_verified_bytes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    ref = store.put_bytes(b"model bytes")
    assert store.read_bytes(ref, tmp_path / "cache") == b"model bytes"


def test_fetch_refuses_bytes_that_do_not_match_their_hash(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    ref = store.put_bytes(b"model bytes")
    Path(ref.uri).write_bytes(b"tampered")
    with pytest.raises(IntegrityError, match="corrupt"):
        store.fetch(ref, tmp_path / "cache")


def test_records_round_trip_and_missing_records_read_as_none(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    assert store.read_record("gate", "k1") is None
    store.write_record("gate", "k1", {"passed": True})
    assert store.read_record("gate", "k1") == {"passed": True}


def test_no_temporary_files_are_left_behind(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put_bytes(b"x")
    store.write_record("ingest", "k", {"a": 1})
    assert not [p for p in (tmp_path / "store").rglob("*") if p.name.endswith(".part")]


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "/abs"])
def test_record_keys_with_path_traversal_are_refused(tmp_path: Path, key: str) -> None:
    store = LocalStore(tmp_path / "store")
    with pytest.raises(InvalidInputError, match="unsafe store key"):
        store.write_record("gate", key, {})


def test_s3_uris_with_traversal_are_refused() -> None:
    with pytest.raises(InvalidInputError, match=r"\.\."):
        parse_s3_uri("s3://bucket/data/../../etc")
    assert parse_s3_uri("s3://bucket/a/b") == ("bucket", "a/b")


def test_unknown_store_scheme_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="unsupported artifact store"):
        open_store("gs://bucket/x")
