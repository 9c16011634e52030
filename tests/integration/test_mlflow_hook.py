"""The MLflow connection's *Test* button (`MlflowHook.test_connection`) against a real tracking server,
and against a port where nothing listens: an answer either way, fast, and never the password."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.servers import free_port

pytestmark = pytest.mark.integration

airflow = pytest.importorskip("airflow")

SECRET = "hook-Secret-9d21"


def _hook(monkeypatch: pytest.MonkeyPatch, host: str) -> Any:
    from squeezeflow.airflow.hooks import MlflowHook

    conn = {"conn_type": "mlflow", "host": host, "login": "someone", "password": SECRET}
    monkeypatch.setenv("AIRFLOW_CONN_SQUEEZEFLOW_MLFLOW", json.dumps(conn))
    return MlflowHook()


def test_the_test_button_connects_to_a_live_tracking_server(
    monkeypatch: pytest.MonkeyPatch, mlflow_server: Any
) -> None:
    ok, message = _hook(monkeypatch, mlflow_server.tracking_uri).test_connection()
    assert ok, message
    assert message.startswith("connected to MLflow at http://")
    assert SECRET not in message


def test_the_test_button_says_when_nothing_answers_without_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t0 = time.monotonic()
    ok, message = _hook(monkeypatch, f"http://127.0.0.1:{free_port()}").test_connection()
    assert not ok
    assert "did not answer" in message and SECRET not in message
    assert time.monotonic() - t0 < 30, "a person is waiting for the Test button"
