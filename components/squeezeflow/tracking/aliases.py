"""Promotion bookkeeping for an alias: the contest in which promotions to one alias take turns, the
alias's history of moves (one registered-model tag each) with its rollback chain, and rollback.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import secrets
import time
from typing import Any

from squeezeflow.tracking.client import now_ms, redact_password
from squeezeflow.tracking.registry import Registry
from squeezeflow.tracking.registry_tags import (
    DEFAULT_HISTORY_LIMIT,
    HISTORY_NONCE_BYTES,
    contest_tag,
    history_prefix,
    history_tag,
    rolled_back_tag,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class AliasMove:
    """One move of an alias, as recorded in the registered model's tags."""

    at_ms: int
    kind: str  # "promote" | "rollback"
    from_version: str | None
    to_version: str
    reason: str
    # How many entries the alias's history keeps (the promoting job's registry.history_limit), and the
    # rollback chain after this move (`chain_after`); both None in entries written before squeezeflow
    # bounded the history.
    history_limit: int | None = None
    chain: list[str] | None = None


def history_limit_of(history: list[AliasMove]) -> int:
    """How many entries the alias's history keeps: what its newest entry recorded, else the default."""
    recorded = [m.history_limit for m in history if m.history_limit is not None]
    return recorded[-1] if recorded else DEFAULT_HISTORY_LIMIT


def rollback_chain(history: list[AliasMove]) -> list[str]:
    """The versions the alias went through that a rollback goes back to, newest last: the chain the
    newest event recorded, else the history replayed as a stack (a promotion pushes, a rollback pops
    back to its target), so that rolling back twice goes back two promotions."""
    stack: list[str] = []
    for move in history:
        if move.chain is not None:
            stack = list(move.chain)
        elif move.kind == "rollback" and move.to_version in stack:
            del stack[len(stack) - stack[::-1].index(move.to_version) :]
        else:
            stack.append(move.to_version)
    return stack


def chain_after(
    history: list[AliasMove], from_version: str | None, to_version: str, kind: str, limit: int
) -> list[str]:
    """The rollback chain after moving the alias from ``from_version`` to ``to_version``: a rollback to a
    version in the chain goes back to it (dropping what came after), any other move pushes. When the
    alias was moved outside squeezeflow (the chain does not end where it pointed), the chain starts
    again from that version. Keeps the newest ``limit + 1`` versions: ``limit`` moves back."""
    stack = rollback_chain(history)
    if not stack or stack[-1] != from_version:
        stack = [] if from_version is None else [from_version]
    if kind == "rollback" and to_version in stack:
        del stack[len(stack) - stack[::-1].index(to_version) :]
    else:
        stack.append(to_version)
    return stack[-(max(1, limit) + 1) :]


def previous_holder(history: list[AliasMove], current: str) -> str | None:
    """The version the alias held before ``current`` got it, by the rollback chain (`rollback_chain`).
    None when the chain does not end at ``current`` (the alias was moved outside squeezeflow since) or
    holds nothing before it."""
    stack = rollback_chain(history)
    if not stack or stack[-1] != current:
        return None
    earlier = [v for v in stack[:-1] if v != current]
    return earlier[-1] if earlier else None


class Aliases(Registry):
    """The contest for an alias, its history, and rollback."""

    # -- promotion contests -----------------------------------------------------------------------
    # MLflow has no conditional ("compare-and-set") alias update, so promotions to one alias take
    # turns: a version registers with the tag ``squeezeflow.contest.<alias> = pending`` in the same
    # call that creates it, and the registry numbers versions atomically, so the version number is a
    # ticket. A contender waits until no lower-numbered version is still pending, then (in
    # `squeezeflow.stages.promote.contest_alias`) compares itself with the holder and the contenders
    # still waiting, sets the alias, re-reads it, and resolves its tag (won/lost). Pending versions
    # whose contender stopped sending heartbeats (it was killed) stop blocking after ``stale_s``.

    def contest_turn(
        self, model_name: str, version: str, alias: str, stale_s: float, settle_s: float
    ) -> list[Any]:
        """Block until it is ``version``'s turn to decide ``alias``: at least ``settle_s`` after the call
        (so that contenders registering at about the same time are all seen), and once every
        lower-numbered version still contending has resolved or gone stale (no heartbeat for
        ``stale_s``). Returns the other live contenders (their turns come after this one).

        The heartbeat re-saves this version's description, which moves its server-side
        ``last_updated_timestamp``, so staleness is judged on the registry's clock alone."""
        key = contest_tag(alias)
        mine = int(version)
        started = time.monotonic()
        last_beat = -1e9
        server_now = now_ms()
        while True:
            if time.monotonic() - last_beat > min(5.0, stale_s / 4):
                mv = self.model_version(model_name, version)
                beat = self._call(
                    "send a promotion heartbeat",
                    self.client.update_model_version,
                    model_name,
                    version,
                    mv.description or "",
                )
                server_now = int(beat.last_updated_timestamp or now_ms())
                last_beat = time.monotonic()
            pending = self._call(
                "list pending promotions",
                self.client.search_model_versions,
                f"name = '{model_name}' and tags.`{key}` = 'pending'",
            )
            others = [p for p in pending if int(p.version) != mine]
            live = [p for p in others if server_now - int(p.last_updated_timestamp or 0) <= stale_s * 1000]
            stale = sorted(str(p.version) for p in others if p not in live)
            ahead = [p for p in live if int(p.version) < mine]
            if not ahead and time.monotonic() - started >= settle_s:
                if stale:
                    log.warning(
                        "%s: versions %s are still marked as contending for @%s but their promotion "
                        "stopped (no heartbeat for %.0f s); not waiting for them",
                        model_name,
                        ", ".join(stale),
                        alias,
                        stale_s,
                    )
                return live
            time.sleep(0.1 + 0.2 * random.random())

    def record_alias_move(
        self,
        model_name: str,
        alias: str,
        from_version: str | None,
        to_version: str,
        kind: str,
        reason: str,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
    ) -> AliasMove:
        """Append one event to the alias's history: a registered-model tag of its own
        (``squeezeflow.alias_history.<alias>.<ms>-<nonce>``), so concurrent writers never overwrite
        each other's events. Events are ordered by the writing host's clock.

        The event carries the rollback chain after the move (`chain_after`), so that rollback reads the
        newest event instead of replaying a history that `prune_alias_history` shortens, and
        ``history_limit``, the number of entries the history keeps, so that a rollback, which has no
        job spec, keeps as many as the promotion before it did."""
        history = self.alias_history(model_name, alias)
        move = AliasMove(
            at_ms=now_ms(),
            kind=kind,
            from_version=from_version,
            to_version=to_version,
            reason=reason[:1000],
            history_limit=history_limit,
            chain=chain_after(history, from_version, to_version, kind, history_limit),
        )
        key = history_tag(alias, move.at_ms, secrets.token_hex(HISTORY_NONCE_BYTES))
        self._call(
            "record the alias history",
            self.client.set_registered_model_tag,
            model_name,
            key,
            json.dumps(dataclasses.asdict(move), sort_keys=True),
        )
        return move

    def forget_alias_move(self, model_name: str, alias: str, move: AliasMove) -> None:
        """Delete the history entry of ``move``: a move that was taken back before it was complete."""
        entry = json.dumps(dataclasses.asdict(move), sort_keys=True)
        prefix = history_prefix(alias)

        def do() -> None:
            tags = self.client.get_registered_model(model_name).tags
            for key in [k for k, v in tags.items() if k.startswith(prefix) and v == entry]:
                self.client.delete_registered_model_tag(model_name, key)

        self._call("take back the alias history entry", do)

    def prune_alias_history(self, model_name: str, alias: str, keep: int) -> int:
        """Delete all but the newest ``keep`` entries of the alias's history (one registered-model tag
        each); returns how many were deleted. Called after a move is complete, never during one, so a
        move that is taken back (`alias_moved`) cannot cost an older entry. Best effort: the move is
        already recorded, so a failure is logged and the next move prunes again. Two processes pruning
        at once delete the same oldest tags (deleting a deleted tag is a no-op in MLflow)."""
        prefix = history_prefix(alias)

        def do() -> int:
            tags = self.client.get_registered_model(model_name).tags
            keys = sorted(k for k in tags if k.startswith(prefix))
            oldest = keys[: max(0, len(keys) - max(1, keep))]
            for key in oldest:
                self.client.delete_registered_model_tag(model_name, key)
            return len(oldest)

        try:
            dropped = self._call("prune the alias history", do)
        except Exception as err:
            log.warning(
                "could not delete the oldest alias history entries of %s@%s (the move itself is recorded; "
                "the next move tries again): %s",
                model_name,
                alias,
                redact_password(str(err), self.tracking_uri)[:300],
            )
            return 0
        if dropped:
            log.info(
                "%s@%s: deleted the %d oldest alias history entries (keeping %d)",
                model_name,
                alias,
                dropped,
                keep,
            )
        return dropped

    def alias_history(self, model_name: str, alias: str) -> list[AliasMove]:
        """Every recorded move of ``alias`` that the history still keeps, oldest first."""
        prefix = history_prefix(alias)
        tags = self._call("read the alias history", self.client.get_registered_model, model_name).tags
        moves = []
        for k in sorted(k for k in tags if k.startswith(prefix)):
            try:
                moves.append(AliasMove(**json.loads(tags[k])))
            except (TypeError, ValueError):
                log.warning("ignoring an unreadable alias history entry %s on %s", k, model_name)
        return moves

    def rollback_alias(self, model_name: str, alias: str, to_version: str | None = None) -> AliasMove:
        """Move ``alias`` back to the version it pointed at before its last promotion (or to
        ``to_version``), and record the move in the alias's history. The version moved away from is
        tagged ``squeezeflow.rolled_back.<alias>`` and squeezeflow does not promote it again (unless it
        is rolled back to with ``to_version``). A rollback does not take a turn in the promotion queue:
        run it when no promotion to the alias is under way."""
        from mlflow.exceptions import MlflowException

        from squeezeflow.errors import InvalidInputError

        def missing(err: MlflowException) -> bool:
            return "RESOURCE_DOES_NOT_EXIST" in str(err.error_code)

        try:
            history = self.alias_history(model_name, alias)
        except MlflowException as err:
            if missing(err):
                raise InvalidInputError(f"no registered model named {model_name!r}") from None
            raise
        current = self.alias_version(model_name, alias)
        if current is None:
            raise InvalidInputError(f"{model_name} has no alias @{alias}: nothing to roll back")
        if to_version is None:
            to_version = previous_holder(history, current)
            if to_version is None:
                recorded = history[-1].to_version if history else None
                why = (
                    "its history records no version before it"
                    if recorded in (None, current)
                    else f"its history last recorded version {recorded} there (the alias was moved "
                    "outside squeezeflow)"
                )
                raise InvalidInputError(
                    f"{model_name}@{alias} points at version {current} and {why}; "
                    "name the version to go back to with --to VERSION"
                )
        else:
            try:
                self.model_version(model_name, to_version)
            except MlflowException as err:
                if missing(err) or "INVALID_PARAMETER_VALUE" in str(err.error_code):
                    raise InvalidInputError(f"{model_name} has no version {to_version!r}") from None
                raise
        if to_version == current:
            raise InvalidInputError(f"{model_name}@{alias} already points at version {current}")
        mark = rolled_back_tag(alias)

        def unmark() -> None:
            self._call(
                "clear the rolled-back mark", self.client.delete_model_version_tag, model_name, current, mark
            )

        keep = history_limit_of(history)
        with self.alias_moved(
            model_name, alias, to_version, back_to=current, undo=unmark, retry="Run the rollback again"
        ):
            self.set_version_tags(model_name, current, {mark: str(now_ms())})
            if mark in (self.model_version(model_name, to_version).tags or {}):
                self._call(  # moved back there deliberately: it may be promoted again
                    "clear the rolled-back mark",
                    self.client.delete_model_version_tag,
                    model_name,
                    to_version,
                    mark,
                )
            # the history last: a move it records is complete
            move = self.record_alias_move(
                model_name,
                alias,
                current,
                to_version,
                "rollback",
                f"rolled back from version {current}",
                history_limit=keep,
            )
        self.prune_alias_history(model_name, alias, keep)
        return move
