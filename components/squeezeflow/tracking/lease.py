"""One process at a time per job: a lease on the job's MLflow parent run.

Two `squeezeflow run` of the same job (the same spec, data and model give the same job key, so the
same parent run) must not build, gate, log and register the same candidates side by side: one would
delete the LoggedModel the other is still writing, and their records and model versions would
collide. So the first process to claim the job's lease runs it, and the others wait for it and then
run the job themselves, which reuses everything it recorded (no duplicate runs, LoggedModels or model
versions).

The claim is a run parameter, ``squeezeflow.lease.<n> = <owner>``: MLflow never changes a parameter's
value, so of the processes claiming lease ``n`` at the same moment exactly one succeeds. The owner
beats a heartbeat (the run tag ``squeezeflow.lease``) every few seconds while it holds the lease and
marks it released when it is done. A waiter claims the next lease when the current one is released,
when its owner was a process on this machine that no longer runs (killed), or when its heartbeat has
not changed for ``SQUEEZEFLOW_JOB_STALE_S`` seconds (default 60: an owner on another machine that
died).
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from squeezeflow.tracking.runs import PARAM_LEASE, TAG_LEASE
from squeezeflow.tracking.tracker import Tracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Owner:
    """A process, identified well enough to tell, from the same machine, whether it still runs: host
    name, PID namespace, PID and start time (Linux; elsewhere the last two are empty)."""

    host: str
    namespace: str
    pid: int
    started: str

    @classmethod
    def me(cls) -> Owner:
        return cls(socket.gethostname(), _pid_namespace(), os.getpid(), _start_time(os.getpid()) or "")

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        try:
            host, namespace, pid, started = text.rsplit(":", 3)
            return cls(host, namespace, int(pid), started)
        except ValueError:
            return None

    def __str__(self) -> str:
        return f"{self.host}:{self.namespace}:{self.pid}:{self.started}"

    def gone(self) -> bool:
        """True only when this process certainly no longer runs: it ran on this machine (same host name
        and PID namespace) and its PID is free, a zombie, or another process's now."""
        me = Owner.me()
        if (self.host, self.namespace) != (me.host, me.namespace):
            return False
        if self.namespace:  # Linux: the PID and its start time
            return _start_time(self.pid) != self.started
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:").strip("[]")
    except OSError:
        return ""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot; None when there is no such (live) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces and parentheses
    if not fields or fields[0] in ("Z", "X"):  # a zombie has ended; only its exit status is left
        return None
    return fields[19]


class JobLease:
    """The lease on one job's parent run, held by this process between `acquire` and `release`."""

    def __init__(
        self, tracker: Tracker, run_id: str, stale_s: float | None = None, poll_s: float = 1.0
    ) -> None:
        self.tracker, self.run_id = tracker, run_id
        self.stale_s = float(os.environ.get("SQUEEZEFLOW_JOB_STALE_S", "60")) if stale_s is None else stale_s
        self.poll_s = poll_s
        self.me = str(Owner.me())
        self.number = 0
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # -- waiting and claiming ---------------------------------------------------------------------
    def acquire(self) -> None:
        """Wait until no other live process holds the job's lease, then hold it (and keep its heartbeat
        going until `release`)."""
        watched: tuple[Any, float] | None = None
        told = False
        while True:
            params, tags = self.tracker.run_params_and_tags(self.run_id)
            number, owner = _current(params)
            state = _state(tags.get(TAG_LEASE))
            beat = state.get("beat") if state.get("n") == number else None
            free = number == 0 or (state.get("n") == number and bool(state.get("released")))
            parsed = Owner.parse(owner)
            dead = owner == self.me or (parsed is not None and parsed.gone())
            now = time.monotonic()
            if watched is None or watched[0] != (number, beat):
                watched = (number, beat), now
            stale = now - watched[1] >= self.stale_s
            if free or dead or stale:
                if stale and not (free or dead):
                    log.warning(
                        "the process running this job (%s) has not been heard of for %.0f s; taking over",
                        owner,
                        self.stale_s,
                    )
                if self._claim(number + 1):
                    return
                continue  # another waiter claimed it first: wait for that one
            if not told:
                log.warning(
                    "another squeezeflow process (%s) is running this job (MLflow run %s); waiting for it "
                    "to finish, then this one reuses what it recorded",
                    owner,
                    self.run_id,
                )
                told = True
            time.sleep(self.poll_s * (0.75 + 0.5 * random.random()))

    def _claim(self, number: int) -> bool:
        if not self.tracker.claim(self.run_id, f"{PARAM_LEASE}{number}", self.me):
            return False  # another process claimed it first
        self.number = number
        self.tracker.log(self.run_id, tags={TAG_LEASE: self._state_json(beat=0, released=False)})
        # The job runs again: RUNNING until it ends (a rerun of a job that failed or was killed).
        self.tracker.set_status(self.run_id, "RUNNING")
        self._stop.clear()
        self._beat = threading.Thread(target=self._beat_until_released, name="squeezeflow-lease", daemon=True)
        self._beat.start()
        return True

    # -- holding and letting go ---------------------------------------------------------------------
    def _state_json(self, beat: int, released: bool) -> str:
        state = {"n": self.number, "owner": self.me, "beat": beat, "released": released}
        return json.dumps(state, sort_keys=True)

    def _write_state(self, beat: int, released: bool) -> None:
        """One attempt (a heartbeat or the release; neither is worth holding the job up for)."""
        self.tracker.client.set_tag(self.run_id, TAG_LEASE, self._state_json(beat, released))

    def _beat_until_released(self) -> None:
        beat = 0
        every = min(5.0, self.stale_s / 4)
        while not self._stop.wait(every):
            beat += 1
            try:
                self._write_state(beat=beat, released=False)
            except Exception:  # MLflow is down: the job's own calls will say so
                log.debug("could not send the job's heartbeat", exc_info=True)

    def release(self) -> None:
        """Stop the heartbeat and let a waiting process take the job. Best effort: when MLflow cannot
        be reached, a waiter takes over once this process has ended or its heartbeat is stale."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=10)
            self._beat = None
        if self.number == 0 or self.tracker.unreachable:
            return
        try:
            self._write_state(beat=-1, released=True)
        except Exception as err:
            log.warning("could not release the job's lease on MLflow run %s: %s", self.run_id, err)


def _current(params: dict[str, str]) -> tuple[int, str]:
    """The highest lease number claimed on the run and its owner; (0, "") when none was."""
    claims = {}
    for key, value in params.items():
        if key.startswith(PARAM_LEASE) and key[len(PARAM_LEASE) :].isdigit():
            claims[int(key[len(PARAM_LEASE) :])] = value
    if not claims:
        return 0, ""
    number = max(claims)
    return number, claims[number]


def _state(text: str | None) -> dict[str, Any]:
    try:
        state = json.loads(text or "{}")
    except ValueError:
        return {}
    return state if isinstance(state, dict) else {}


@contextmanager
def job_lease(tracker: Tracker, run_id: str) -> Iterator[JobLease]:
    """Hold the lease of the job whose parent run is ``run_id`` for the block, after waiting for any
    other live process holding it. The run is RUNNING from then on (its final status is the job's)."""
    lease = JobLease(tracker, run_id)
    lease.acquire()
    try:
        yield lease
    finally:
        lease.release()
