"""The MLflow model registry: registered models and their descriptions, model versions and their tags,
and moving an alias (all or nothing with what records the move).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from squeezeflow.errors import InfrastructureError
from squeezeflow.tracking.client import TrackingClient, redact_password
from squeezeflow.tracking.registry_tags import TAG_DESCRIPTION_SHA256
from squeezeflow.tracking.runs import TAG_CANDIDATE

log = logging.getLogger(__name__)


class Registry(TrackingClient):
    """Registered models, their versions, and the aliases that point at them."""

    def find_version(self, model_name: str, candidate_key: str) -> Any | None:
        def do() -> Any | None:
            found = self.client.search_model_versions(
                f"name = '{model_name}' and tags.`{TAG_CANDIDATE}` = '{candidate_key}'"
            )
            return found[0] if found else None

        return self._call("search model versions", do)

    def register(
        self, model_id: str, model_name: str, run_id: str, tags: dict[str, str], description: str
    ) -> Any:
        from mlflow.exceptions import MlflowException

        def do() -> Any:
            try:
                self.client.create_registered_model(model_name)
            except MlflowException as err:
                if "RESOURCE_ALREADY_EXISTS" not in str(err.error_code):
                    raise
            model = self.client.get_logged_model(model_id)
            return self.client.create_model_version(
                model_name,
                source=model.artifact_location,
                run_id=run_id,
                tags=tags,
                description=description,
                model_id=model_id,
            )

        return self._call("register the model version", do)

    def set_alias(self, model_name: str, alias: str, version: str | None) -> None:
        """Point ``alias`` at ``version``; None removes the alias."""
        if version is None:
            self._call("remove the alias", self.client.delete_registered_model_alias, model_name, alias)
        else:
            self._call("move the alias", self.client.set_registered_model_alias, model_name, alias, version)

    @contextmanager
    def alias_moved(
        self,
        model_name: str,
        alias: str,
        version: str,
        back_to: str | None,
        undo: Callable[[], None] | None = None,
        retry: str = "Run the job again to promote",
    ) -> Iterator[None]:
        """Point ``alias`` at ``version`` for a block that records the move (history, verdict tags): all
        or nothing. When moving or recording fails, ``undo`` takes back what the block recorded, the
        alias goes back to ``back_to`` (removed when None) if it still points at ``version``, and an
        InfrastructureError says what failed, where the alias is now, and ``retry``. MLflow cannot move an
        alias and write a tag in one transaction; this keeps a half-recorded move from staying behind."""
        try:
            self.set_alias(model_name, alias, version)
            yield
        except Exception as err:
            raise self._put_alias_back(model_name, alias, version, back_to, undo, err, retry) from err

    def _put_alias_back(
        self,
        model_name: str,
        alias: str,
        version: str,
        back_to: str | None,
        undo: Callable[[], None] | None,
        err: Exception,
        retry: str,
    ) -> InfrastructureError:
        def said(e: Exception, n: int) -> str:
            return " ".join(redact_password(str(e), self.tracking_uri).split())[:n]

        failed = f"moving {model_name}@{alias} to version {version} could not be recorded ({said(err, 300)})"
        back = f"version {back_to}" if back_to is not None else "no version (the alias was not set)"
        try:
            if self.alias_version(model_name, alias) == version:
                self.set_alias(model_name, alias, back_to)
        except Exception as undo_err:
            log.debug("putting %s@%s back failed", model_name, alias, exc_info=True)
            to = f" --to {back_to}" if back_to is not None else ""
            return InfrastructureError(
                f"{failed}, and putting @{alias} back to {back} failed too ({said(undo_err, 200)}): it may "
                f"point at version {version} with no record of the move. {retry} (that records or redoes "
                f"the move), or set it back with `squeezeflow rollback {model_name} --alias {alias}{to}`"
            )
        leftover = ""
        try:
            if undo is not None:
                undo()
        except Exception as undo_err:
            log.debug("taking back the records of %s@%s failed", model_name, alias, exc_info=True)
            leftover = f" (a record of the refused move may remain: {said(undo_err, 200)})"
        return InfrastructureError(
            f"{failed}; @{alias} was put back to {back}, so the registry is as it was before"
            f"{leftover}. {retry}"
        )

    def alias_version(self, model_name: str, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        def do() -> str | None:
            try:
                return str(self.client.get_model_version_by_alias(model_name, alias).version)
            except MlflowException as err:
                if "RESOURCE_DOES_NOT_EXIST" in str(err.error_code) or "INVALID_PARAMETER_VALUE" in str(
                    err.error_code
                ):
                    return None
                raise

        return self._call("read the alias", do)

    def model_version(self, model_name: str, version: str) -> Any:
        return self._call("read a model version", self.client.get_model_version, model_name, version)

    def set_version_tags(self, model_name: str, version: str, tags: dict[str, str]) -> None:
        def do() -> None:
            for k, v in tags.items():
                self.client.set_model_version_tag(model_name, version, k, v)

        self._call("tag the model version", do)

    def describe_registered_model(self, model_name: str, description: str) -> bool:
        """Give the registered model ``description`` unless a person wrote its description; True when it
        was written. squeezeflow writes a description only while the model has none, or has exactly the
        one squeezeflow wrote last: each write records the text's SHA-256 in the registered-model tag
        ``squeezeflow.description_sha256``, so a description edited or written in the MLflow UI (or by
        anyone else) no longer matches and is never overwritten. Best effort: a failure is logged, never
        fails a promotion."""
        digest = hashlib.sha256(description.encode()).hexdigest()

        def do() -> bool:
            model = self.client.get_registered_model(model_name)
            current = model.description or ""
            if current == description and (model.tags or {}).get(TAG_DESCRIPTION_SHA256) == digest:
                return False
            ours = hashlib.sha256(current.encode()).hexdigest() == (model.tags or {}).get(
                TAG_DESCRIPTION_SHA256
            )
            # The same text as ours without the tag: a write interrupted before tagging (retry it).
            if current.strip() and not ours and current != description:
                log.info("%s has a description squeezeflow did not write; leaving it as it is", model_name)
                return False
            if current != description:
                self.client.update_registered_model(model_name, description)
            self.client.set_registered_model_tag(model_name, TAG_DESCRIPTION_SHA256, digest)
            return True

        try:
            return self._call("describe the registered model", do)
        except Exception as err:
            log.warning(
                "could not write the description of the registered model %s: %s",
                model_name,
                redact_password(str(err), self.tracking_uri)[:300],
            )
            return False
