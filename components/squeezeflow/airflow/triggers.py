"""Deferrable waits: a trigger that polls the artifact store for a record, in Airflow's triggerer.

A benchmark on a ``remote`` device profile is measured by the device's `squeezeflow agent`; the operator
submits the request and defers to `StoreRecordTrigger`, so the wait (minutes to hours on a busy device
farm) holds no worker slot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class StoreRecordTrigger(BaseTrigger):
    """Fires when every record ``records/<stage>/<key>.json`` exists in the store at ``artifacts``, or
    when ``timeout_s`` passes.

    :param artifacts: the artifact store root (``s3://bucket/prefix`` or a directory).
    :param stage: the record stage (``benchmark`` for device measurements).
    :param keys: the record keys to wait for.
    :param aws_conn_id: Amazon connection for ``s3://`` stores (read in the triggerer; None: boto3's chain).
    """

    def __init__(
        self,
        artifacts: str,
        stage: str,
        keys: list[str],
        aws_conn_id: str | None = None,
        poll_interval_s: float = 10.0,
        timeout_s: float = 3600.0,
        started: float | None = None,
    ) -> None:
        super().__init__()
        self.artifacts = artifacts
        self.stage = stage
        self.keys = list(keys)
        self.aws_conn_id = aws_conn_id
        self.poll_interval_s = poll_interval_s
        self.timeout_s = timeout_s
        self.started = time.time() if started is None else started

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "artifacts": self.artifacts,
                "stage": self.stage,
                "keys": self.keys,
                "aws_conn_id": self.aws_conn_id,
                "poll_interval_s": self.poll_interval_s,
                "timeout_s": self.timeout_s,
                "started": self.started,
            },
        )

    def _missing(self) -> list[str]:
        from squeezeflow.airflow.hooks import aws_environment
        from squeezeflow.store.artifacts import open_store

        creds = None
        if self.artifacts.startswith("s3://"):
            # explicit credentials: the triggerer's environment is shared by every trigger
            creds = aws_environment(self.aws_conn_id) or None
        store = open_store(self.artifacts, creds)
        return [k for k in self.keys if store.read_record(self.stage, k) is None]

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            missing = await asyncio.to_thread(self._missing)
            if not missing:
                yield TriggerEvent({"status": "done", "keys": self.keys})
                return
            if time.time() - self.started > self.timeout_s:
                yield TriggerEvent({"status": "timeout", "missing": missing})
                return
            await asyncio.sleep(self.poll_interval_s)
