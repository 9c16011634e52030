"""Pure rules of the artifact store: the media type each object is stored with, which file-system
errors are the store's faults (and what the message says), and which S3 answers cannot be S3's.
The same rules against real file systems and real endpoints: tests/reliability/test_store_faults.py."""

from __future__ import annotations

import errno

import pytest

from squeezeflow.errors import InfrastructureError
from squeezeflow.store.artifacts import content_type_for, store_fault
from squeezeflow.store.s3 import NotS3Answer, check_s3_answer


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("objects/ab/abc.html", "text/html; charset=utf-8"),
        ("objects/ab/abc.md", "text/markdown; charset=utf-8"),
        ("objects/ab/abc.json", "application/json"),
        ("records/gate/k.json", "application/json"),
        ("objects/ab/abc.png", "image/png"),
        ("objects/ab/abc.svg", "image/svg+xml"),
        ("objects/ab/abc.onnx", "application/octet-stream"),
        ("objects/ab/abc.pt", "application/octet-stream"),
        ("objects/ab/abc.npy", "application/octet-stream"),
        ("objects/ab/abc.PNG", "image/png"),
    ],
)
def test_objects_are_stored_with_the_media_type_of_their_suffix(name: str, media_type: str) -> None:
    assert content_type_for(name) == media_type


@pytest.mark.parametrize("name", ["objects/ab/abc", "objects/ab/abc.weird-suffix", "objects/ab/abc.json.gz"])
def test_objects_of_unknown_or_compressed_types_are_opaque_bytes(name: str) -> None:
    assert content_type_for(name) == "application/octet-stream"


@pytest.mark.parametrize(
    ("code", "advice"),
    [
        (errno.ENOSPC, "free space"),
        (errno.EDQUOT, "quota"),
        (errno.EFBIG, "ulimit -f"),
        (errno.EROFS, "read-only"),
        (errno.EACCES, "permissions"),
        (errno.EPERM, "permissions"),
    ],
)
def test_a_store_that_refuses_a_write_is_an_infrastructure_error_naming_the_store_and_the_write(
    code: int, advice: str
) -> None:
    fault = store_fault("/data/store", "write", "records/gate/k.json", OSError(code, "ignored"))
    assert isinstance(fault, InfrastructureError) and fault.exit_code == 3
    name = errno.errorcode[code]
    assert str(fault).startswith("cannot write records/gate/k.json to the artifact store /data/store: "), (
        fault
    )
    assert f"({name}); " in str(fault) and advice in str(fault), fault


def test_other_file_system_errors_are_not_store_faults() -> None:
    assert store_fault("/data/store", "write", "k", OSError(errno.ENOENT, "gone")) is None
    assert store_fault("/data/store", "read", "k", OSError(errno.ENOSPC, "full")) is None
    fault = store_fault("/data/store", "read", "k", OSError(errno.EACCES, "denied"))
    assert fault is not None and str(fault).startswith("cannot read k from the artifact store /data/store: ")


PAGE = b"<html><body>Sign in to the guest network</body></html>"
HTML = {"content-type": "text/html; charset=utf-8"}


@pytest.mark.parametrize(
    ("operation", "headers", "body", "why"),
    [
        ("HeadObject", HTML, b"", "without the ETag"),
        ("GetObject", HTML, None, "without the ETag"),
        ("PutObject", HTML, PAGE, "with a web page"),
        ("PutObject", {**HTML, "etag": '"x"'}, PAGE, "with a web page"),
        ("ListObjectsV2", HTML, PAGE, "with a web page"),
        ("PutObjectTagging", HTML, PAGE, "with a web page"),
    ],
)
def test_a_successful_answer_that_s3_would_never_give_is_not_s3(
    operation: str, headers: dict[str, str], body: bytes | None, why: str
) -> None:
    with pytest.raises(NotS3Answer, match="that is not S3") as raised:
        check_s3_answer("http://portal:80", operation, 200, headers, body)
    assert str(raised.value).startswith(f"the endpoint http://portal:80 answered {operation} with HTTP 200")
    assert why in str(raised.value)


@pytest.mark.parametrize(
    ("operation", "status", "headers", "body"),
    [
        ("PutObject", 200, {**HTML, "etag": '"x"'}, b""),  # moto labels its empty answers text/html
        ("PutObjectTagging", 200, HTML, b""),
        ("GetObject", 200, {**HTML, "etag": '"x"'}, None),  # a stored HTML report
        ("HeadObject", 200, {"content-type": "application/json", "etag": '"x"'}, b""),
        ("ListObjectsV2", 200, {"content-type": "application/xml"}, b"<ListBucketResult/>"),
        ("HeadObject", 404, HTML, b""),  # errors are S3's to explain (and translated as such)
        ("HeadObject", 301, {}, b""),  # S3's redirect to the bucket's region
    ],
)
def test_answers_s3_gives_pass(
    operation: str, status: int, headers: dict[str, str], body: bytes | None
) -> None:
    check_s3_answer("http://s3:80", operation, status, headers, body)
