"""LoggedModels: a candidate's ONNX file logged once as an MLflow LoggedModel of its run."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from squeezeflow.tracking.runs import PARAM_LEASE, TAG_MODEL_ID, Runs

log = logging.getLogger(__name__)


def _served_requirements() -> list[str]:
    """What serving an ONNX candidate needs, pinned to this environment's versions. Stated rather than
    left to MLflow's inference, which loads every model again in a subprocess of its own to see what it
    imports (about 2 seconds per candidate) and finds these same packages."""
    from importlib.metadata import version

    import mlflow.onnx

    return [*mlflow.onnx.get_default_pip_requirements(), f"numpy=={version('numpy')}"]


class LoggedModels(Runs):
    """A candidate run's LoggedModel: logged once, an interrupted attempt's leftovers adopted or deleted."""

    def log_onnx_model(
        self, run_id: str, onnx_path: Path, name: str, input_example: np.ndarray, tags: dict[str, str]
    ) -> str:
        """Log the ONNX file as an MLflow LoggedModel of the run (once); returns its model id."""
        import mlflow
        import onnx
        from mlflow.models import infer_signature

        known = self.run_tags(run_id).get(TAG_MODEL_ID)
        if known:
            return known
        finished = self._adopt_or_drop_earlier_models(run_id, name, tags)
        if finished is not None:
            self.log(run_id, tags={TAG_MODEL_ID: finished})
            return finished

        def do() -> str:
            from squeezeflow.onnx_heads import served_outputs, takes_any_rank

            model = onnx.load(str(onnx_path))
            # A graph that takes one sample as well as a batch has no input schema: MLflow's checks a
            # tensor's rank against it, and the graph itself checks the element type and sample shape.
            signature = infer_signature(
                None if takes_any_rank(onnx_path) else input_example, served_outputs(onnx_path, input_example)
            )
            # The LoggedModel is created here, in the run's experiment, and handed to the flavor with
            # the run (both passed through to mlflow.models.Model.log), instead of resuming the run as
            # MLflow's active ("fluent") run: ending that marks the run FINISHED, so a job killed
            # afterwards would look finished, and prints the tracking URI, password included.
            pending = self.client.create_logged_model(
                self.experiment_id,
                name=name,
                source_run_id=run_id,
                tags=tags,
                params={
                    k: v
                    for k, v in self.client.get_run(run_id).data.params.items()
                    if not k.startswith(PARAM_LEASE)
                },
            )
            info = mlflow.onnx.log_model(
                model,
                name=name,
                signature=signature,
                input_example=input_example,
                onnx_execution_providers=["CPUExecutionProvider"],
                save_as_external_data=False,
                pip_requirements=_served_requirements(),
                run_id=run_id,
                model_id=pending.model_id,
            )
            return str(info.model_id)

        model_id = self._call("log the candidate model", do)
        self.log(run_id, tags={TAG_MODEL_ID: model_id})
        return model_id

    def _adopt_or_drop_earlier_models(self, run_id: str, name: str, tags: dict[str, str]) -> str | None:
        """What an earlier attempt left of this run's model ``name`` when it stopped before tagging the
        run (a killed worker): a finished model of the same bytes is returned for reuse; unfinished
        ones are deleted, so that a retry leaves exactly one LoggedModel per candidate."""
        from mlflow.entities import LoggedModelStatus

        def do() -> str | None:
            earlier = self.client.search_logged_models(
                [self.experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{name}'"
            )
            keep = None
            for m in earlier:
                same_bytes = all(m.tags.get(k) == v for k, v in tags.items())
                if keep is None and m.status == LoggedModelStatus.READY and same_bytes:
                    keep = str(m.model_id)
                else:
                    log.info(
                        "deleting LoggedModel %s of run %s left by an interrupted attempt", m.model_id, run_id
                    )
                    self.client.delete_logged_model(m.model_id)
            return keep

        return self._call("look for models of an interrupted attempt", do)

    def logged_model_ready(self, model_id: str) -> bool:
        """Whether the LoggedModel exists and finished logging (an interrupted log leaves it PENDING)."""
        from mlflow.entities import LoggedModelStatus
        from mlflow.exceptions import MlflowException

        def do() -> bool:
            try:
                return bool(self.client.get_logged_model(model_id).status == LoggedModelStatus.READY)
            except MlflowException as err:
                if "RESOURCE_DOES_NOT_EXIST" in str(err.error_code):
                    return False
                raise

        return self._call("read the logged model", do)
