"""LoggedModels: a candidate's ONNX file logged once as an MLflow LoggedModel of its run."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from squeezeflow.tracking.runs import PARAM_LEASE, TAG_MODEL_ID, Runs

log = logging.getLogger(__name__)


def _requirement(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{package}=={version(package)}"
    except PackageNotFoundError:
        return package


def _served_requirements() -> list[str]:
    """What serving an ONNX candidate needs, pinned to this environment's versions. Stated rather than
    left to MLflow's inference, which loads every model again in a subprocess of its own to see what it
    imports (about 2 seconds per candidate) and finds these same packages."""
    import mlflow.onnx

    return [*mlflow.onnx.get_default_pip_requirements(), _requirement("numpy")]


class RawTextServing(Protocol):
    """What a text classifier's pyfunc needs to answer raw text (`squeezeflow.models.huggingface`
    builds it): the tokenizer's files, how texts are padded and cut with the class names, and a few
    texts for the input example."""

    @property
    def tokenizer_dir(self) -> Path: ...
    @property
    def config(self) -> dict[str, Any]: ...
    @property
    def example_texts(self) -> list[str]: ...


# The model's code (MLflow's "models from code": nothing is pickled), run by mlflow.pyfunc.load_model:
# the standalone `raw_text_pyfunc` module, then the line that names its model.
_SET_MODEL = """

# squeezeflow: the model of this MLflow model, a Hugging Face text classifier answering raw text
import mlflow.models  # noqa: E402

mlflow.models.set_model(RawTextClassifier())
"""


@contextlib.contextmanager
def _no_artifact_progress_bars() -> Iterator[None]:
    """Without MLflow's "Downloading artifacts" bars, which it draws while copying local artifacts."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


class _RawTextFlavor:
    """What ``mlflow.models.Model.log`` saves a Hugging Face text classifier with: a pyfunc that takes raw
    text (`squeezeflow.tracking.raw_text_pyfunc`, logged as code with the tokenizer, the ONNX file and
    the text settings as artifacts), and the ``onnx`` flavor on that same ONNX file."""

    @staticmethod
    def save_model(path: str, mlflow_model: Any, onnx_path: Path, raw_text: RawTextServing, **_: Any) -> None:
        import mlflow.pyfunc
        import onnx
        import pandas as pd
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, Schema

        with tempfile.TemporaryDirectory() as tmp:
            model_code = Path(tmp) / "squeezeflow_raw_text_model.py"
            model_code.write_text(Path(__file__).with_name("raw_text_pyfunc.py").read_text() + _SET_MODEL)
            config = Path(tmp) / "raw_text.json"
            config.write_text(json.dumps(raw_text.config, indent=1))
            requirements = [_requirement("onnxruntime"), _requirement("pandas"), _requirement("numpy")]
            requirements.append(_requirement("tokenizers" if raw_text.config.get("fast") else "transformers"))
            with warnings.catch_warnings(), _no_artifact_progress_bars():
                # MLflow suggests type hints on predict; the signature below is the model's schema
                warnings.simplefilter("ignore", UserWarning)
                mlflow.pyfunc.save_model(
                    path,
                    python_model=str(model_code),
                    artifacts={
                        "onnx_model": str(onnx_path),
                        "tokenizer": str(raw_text.tokenizer_dir),
                        "config": str(config),
                    },
                    mlflow_model=mlflow_model,
                    signature=ModelSignature(
                        # one unnamed string column: a DataFrame with a `text` column and a list of
                        # strings both meet it (a named one would refuse the list)
                        inputs=Schema([ColSpec("string")]),
                        outputs=Schema(
                            [
                                ColSpec("string", "label"),
                                ColSpec("double", "score"),
                                ColSpec("long", "label_id"),
                            ]
                        ),
                    ),
                    input_example=pd.DataFrame({"text": raw_text.example_texts}),
                    pip_requirements=requirements,
                )
        # The onnx flavor reads the pyfunc's own copy of the ONNX file: one file, two faces.
        artifact = mlflow_model.flavors["python_function"]["artifacts"]["onnx_model"]["path"]
        mlflow_model.add_flavor(
            "onnx",
            onnx_version=onnx.__version__,
            data=artifact,
            providers=["CPUExecutionProvider"],
            onnx_session_options=None,
            code=None,
        )
        mlflow_model.save(str(Path(path) / "MLmodel"))


class LoggedModels(Runs):
    """A candidate run's LoggedModel: logged once, an interrupted attempt's leftovers adopted or deleted."""

    def log_onnx_model(
        self,
        run_id: str,
        onnx_path: Path,
        name: str,
        input_example: np.ndarray,
        tags: dict[str, str],
        raw_text: RawTextServing | None = None,
    ) -> str:
        """Log the ONNX file as an MLflow LoggedModel of the run (once); returns its model id.

        With ``raw_text`` (a Hugging Face text classifier) the model keeps its ``onnx`` flavor (the same
        file) and its ``python_function`` flavor answers raw text (`raw_text_pyfunc`) instead of token
        ids: ``mlflow.pyfunc.load_model`` tokenizes as ingest did and runs the ONNX graph."""
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
            if raw_text is not None:
                info = mlflow.models.Model.log(
                    artifact_path=None,
                    name=name,
                    flavor=_RawTextFlavor,
                    run_id=run_id,
                    model_id=pending.model_id,
                    onnx_path=onnx_path,
                    raw_text=raw_text,
                )
                return str(info.model_id)
            model = onnx.load(str(onnx_path))
            # A graph that takes one sample as well as a batch has no input schema: MLflow's checks a
            # tensor's rank against it, and the graph itself checks the element type and sample shape.
            signature = infer_signature(
                None if takes_any_rank(onnx_path) else input_example, served_outputs(onnx_path, input_example)
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
