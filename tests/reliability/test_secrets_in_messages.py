"""A password given inside a URI (``postgresql://user:password@host/db`` as a tracking URI, or
``https://user:token@mlflow``) never reaches an error message.

The end-to-end scan of a whole job's logs, MLflow entries, records and reports for credentials given
the usual way (environment) is in `test_mlflow_outage.py`; the output of successful jobs whose tracking
URI carries a password (MLflow prints "View run ... at: <tracking URI>" when a run ends) is scanned in
`test_concurrent_jobs.py` and `test_job_run_status.py`.
"""

from __future__ import annotations

import pytest

from squeezeflow.errors import InfrastructureError
from squeezeflow.tracking.client import redact_uri
from squeezeflow.tracking.tracker import Tracker
from tests.servers import free_port

PASSWORD = "sqf-Pa55word-in-the-uri"


def test_a_password_in_the_tracking_uri_is_left_out_of_the_unreachable_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # one quick refusal is enough here
    uri = f"http://sqf-user:{PASSWORD}@127.0.0.1:{free_port()}"
    with pytest.raises(InfrastructureError) as failed:
        Tracker(uri, "redaction", attempts=1)
    assert PASSWORD not in str(failed.value)
    assert "MLflow at http://sqf-user:***@127.0.0.1:" in str(failed.value)


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (f"postgresql://mlflow:{PASSWORD}@db:5432/mlflow", "postgresql://mlflow:***@db:5432/mlflow"),
        ("https://sqf-user@mlflow.example.com/x", "https://sqf-user@mlflow.example.com/x"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ],
)
def test_redact_uri_hides_the_password_and_keeps_the_rest(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown
