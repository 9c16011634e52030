"""One operator per stage, thin over `squeezeflow.tasks`.

Every operator takes the resolved job spec (a small JSON document) and the records of earlier stages,
usually as ``XComArg``s, and returns its own record, so XCom carries URIs and hashes, never models or data.
Candidates fan out with dynamic task mapping::

    plan = SqueezeflowPlanOperator(task_id="plan", spec=spec.output)
    built = SqueezeflowOptimizeOperator.partial(task_id="optimize", spec=..., ingest=..., baseline=...)
        .expand(recipe=plan.output)

Failures follow the CLI's exit codes: bad input (spec, model, data) fails the task without retries
(`AirflowFailException`), an unreachable service raises and lets Airflow's retries work, and a
candidate that fails its pass or the gate is a recorded outcome, not a task failure.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from airflow.sdk import BaseOperator, BaseOperatorLink, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from squeezeflow import tasks
from squeezeflow.airflow.hooks import DEFAULT_AWS_CONN_ID, DEFAULT_MLFLOW_CONN_ID, stage_settings
from squeezeflow.errors import InvalidInputError
from squeezeflow.results import (
    BaselineBenchmarks,
    BaselineResult,
    CandidateOutcome,
    IngestResult,
    JobResult,
    Pending,
    Trial,
    parse_baseline_benchmarks,
)
from squeezeflow.spec.job import JobSpec
from squeezeflow.spec.search import Recipe
from squeezeflow.stages import Settings

log = logging.getLogger(__name__)


def params_to_overrides(params: Mapping[str, Any]) -> dict[str, Any]:
    """Spec overrides from a DAG run's params: the run form's fields (`squeezeflow.spec.run_form`), the same
    function the Kubeflow pipelines call; unset (None or empty) params change nothing."""
    from squeezeflow.spec.run_form import form_overrides

    return form_overrides(params)


def to_xcom(value: Any) -> Any:
    """A task's typed result as the JSON an XCom holds: each record's ``model_dump(mode="json")``, in
    the lists and mappings it comes in."""
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(value)


def mlflow_ui_url(tracking_uri: str, route: str) -> str | None:
    """The MLflow UI's page ``route`` (its hash route, e.g. ``runs/<id>``) on the tracking server of
    ``tracking_uri``, or None when the URI is not an ``http(s)://`` server (a SQLite or file store has no
    UI). Only the scheme, host, port and path are kept: never the user-info (credentials), query or
    fragment of the tracking URI."""
    try:
        parts = urlsplit(tracking_uri.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    base = urlunsplit((parts.scheme.lower(), netloc, parts.path.rstrip("/"), "", ""))
    return f"{base}/#/{route.lstrip('/')}"


def mlflow_run_url(tracking_uri: str, run_id: str, experiment_id: str | None = None) -> str | None:
    """The run's page in the MLflow UI (`mlflow_ui_url`)."""
    where = f"experiments/{quote(experiment_id, safe='')}/" if experiment_id else ""
    return mlflow_ui_url(tracking_uri, f"{where}runs/{quote(run_id, safe='')}")


def mlflow_model_version_url(tracking_uri: str, model_name: str, version: str) -> str | None:
    """The registered model version's page in the MLflow UI (`mlflow_ui_url`)."""
    return mlflow_ui_url(
        tracking_uri, f"models/{quote(model_name, safe='')}/versions/{quote(version, safe='')}"
    )


class _XComLink(BaseOperatorLink):
    """A link whose URL the operator pushes to XCom while it runs (`persist`), under the link's own
    ``xcom_key`` (``_link_<class name>``). In Airflow 3 the UI never calls `get_link`: the worker calls
    it when the task ends and stores the answer under ``xcom_key``, where the UI reads it; here it reads
    back what the operator pushed. Empty when nothing was pushed (no run yet, nothing promoted, or a
    tracking store without a UI)."""

    def get_link(self, operator: BaseOperator, *, ti_key: Any) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return str(XCom.get_value(ti_key=ti_key, key=self.xcom_key) or "")

    @classmethod
    def persist(cls, context: Context, url: str | None) -> None:
        """Push ``url`` for this link of the running task (nothing when None)."""
        if url:
            context["ti"].xcom_push(key=cls().xcom_key, value=url)


class MlflowRunLink(_XComLink):
    """The job's MLflow run (the parent of every candidate's run), on every stage operator after the
    spec is resolved."""

    name = "MLflow run"


class CandidateRunLink(_XComLink):
    """The candidate's own MLflow run (nested under the job's), on the optimize, gate and benchmark
    operators."""

    name = "MLflow candidate run"


class RegisteredModelLink(_XComLink):
    """The model version the job promoted, in the MLflow registry (the promote operator; empty when
    nothing was promoted)."""

    name = "Registered model"


class JobReportLink(_XComLink):
    """The job's HTML report, as an artifact of the job's MLflow run (the promote operator)."""

    name = "Job report"


class SqueezeflowBaseOperator(BaseOperator):
    """What every stage operator shares: connections, the artifact store, and error mapping.

    :param spec: the resolved job spec (the output of `SqueezeflowResolveSpecOperator`).
    :param mlflow_conn_id: MLflow connection (type ``mlflow``).
    :param aws_conn_id: Amazon connection for ``s3://`` artifacts; None uses boto3's default chain.
    :param artifacts: artifact store root (``s3://bucket/prefix`` or a directory shared by the workers).
        Unset, each run takes the Airflow Variable ``squeezeflow_artifacts``, else the worker's
        ``SQUEEZEFLOW_ARTIFACTS`` environment variable; with neither the task fails
        (`squeezeflow.airflow.hooks.artifacts_location`).
    :param workdir: local scratch directory (a cache; the store is the source of truth).
    """

    template_fields: Sequence[str] = ("spec", "artifacts")
    ui_color = "#e3f1ea"
    # The links each operator fills in (`_persist_links`); the Airflow UI shows them on the task.
    operator_extra_links: tuple[BaseOperatorLink, ...] = (MlflowRunLink(),)

    def __init__(
        self,
        *,
        spec: Any,
        mlflow_conn_id: str | None = DEFAULT_MLFLOW_CONN_ID,
        aws_conn_id: str | None = DEFAULT_AWS_CONN_ID,
        artifacts: str | None = None,
        workdir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.mlflow_conn_id = mlflow_conn_id
        self.aws_conn_id = aws_conn_id
        self.artifacts = artifacts
        self.workdir = workdir

    def execute(self, context: Context) -> Any:
        self._pushed_links: dict[type[_XComLink], str] = {}
        with stage_settings(self.mlflow_conn_id, self.aws_conn_id, self.artifacts, self.workdir) as settings:
            # Before the stage: a task that fails still links to the job's run it was working for.
            self._persist_links(context, settings.tracking_uri, None)
            try:
                result = self.run_stage(settings, context)
            except InvalidInputError as err:
                # The input is wrong: retrying cannot help, so fail now and say why.
                raise AirflowFailException(f"{type(err).__name__}: {err}") from err
            if isinstance(result, Pending):
                self._defer(settings, result)
            doc = to_xcom(result)
            self._persist_links(context, settings.tracking_uri, doc)
            return doc

    def run_stage(self, settings: Settings, context: Context) -> Any:
        """The stage call, on the typed records parsed from this operator's JSON arguments (`job`,
        ``IngestResult.model_validate(self.ingest)``, ...); every concrete operator below defines it. Its
        typed result goes to XCom as JSON (`to_xcom`), except `Pending`, on which the task defers."""
        raise NotImplementedError(f"{type(self).__name__} does not define run_stage")

    def job(self) -> JobSpec:
        """The resolved job spec, from its JSON (``spec``)."""
        return tasks.job_of(self.spec)

    def _defer(self, settings: Settings, pending: Pending) -> None:
        """Hand the wait for remote device measurements (or on-device evaluations) to the triggerer (no
        worker slot is held); the task resumes in `execute_complete`, which finds every record written.
        The triggerer polls the store every ``$SQUEEZEFLOW_AGENT_POLL_S`` seconds (default 10)."""
        from squeezeflow.airflow.triggers import StoreRecordTrigger

        timeout = max((float(d.remote_timeout_s) for d in self.job().devices if d.remote), default=3600.0)
        log.info("waiting (deferred) for device agents: %s", ", ".join(sorted(pending.keys)))
        self.defer(
            trigger=StoreRecordTrigger(
                artifacts=settings.artifacts,
                stage=pending.stage,
                keys=sorted(pending.keys.values()),
                aws_conn_id=self.aws_conn_id,
                poll_interval_s=float(os.environ.get("SQUEEZEFLOW_AGENT_POLL_S", "10")),
                timeout_s=timeout,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=timeout + 60),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        if event and event.get("status") == "timeout":
            raise AirflowException(
                f"device agents did not answer in time; still missing: {event.get('missing')} "
                "(is `squeezeflow agent` running for the remote profiles?)"
            )
        return self.execute(context)

    def _persist_links(self, context: Context, tracking_uri: str, result: Any) -> None:
        """Push the URLs of this operator's extra links (those it declares) to XCom, from what it knows
        so far: its inputs before the stage runs (``result`` None), and the stage's result after."""
        declared = {type(link) for link in self.operator_extra_links}
        urls: dict[type[_XComLink], str | None] = {}
        records = [r for r in (getattr(self, "ingest", None), result) if isinstance(r, Mapping)]
        job_run = next((str(r["parent_run_id"]) for r in reversed(records) if r.get("parent_run_id")), None)
        experiment = next((str(r["experiment_id"]) for r in records if r.get("experiment_id")), None)
        if job_run:
            urls[MlflowRunLink] = mlflow_run_url(tracking_uri, job_run, experiment)
        outcome = result if isinstance(result, Mapping) else getattr(self, "outcome", None)
        candidate = outcome.get("candidate") if isinstance(outcome, Mapping) else None
        if isinstance(candidate, Mapping) and candidate.get("run_id"):
            urls[CandidateRunLink] = mlflow_run_url(tracking_uri, str(candidate["run_id"]))
        for link, url in urls.items():
            if link in declared and url and self._pushed_links.get(link) != url:
                link.persist(context, url)
                self._pushed_links[link] = url


class SqueezeflowResolveSpecOperator(BaseOperator):
    """Load a job spec (a file on the worker or ``s3://``), apply the run's overrides, validate it, and
    return it with defaults filled in. Invalid overrides fail here, naming the spec field.

    :param spec_source: path or ``s3://`` URI of the YAML job spec.
    :param overrides: spec fields to change (a nested mapping).
    :param use_params: also take overrides from the DAG run's params (the run form's fields,
        `squeezeflow.spec.run_form.FIELDS`) and from the triggering asset event's ``model_uri`` extra.
    """

    template_fields: Sequence[str] = ("spec_source", "overrides")
    ui_color = "#f4f1de"

    def __init__(
        self,
        *,
        spec_source: str,
        overrides: dict[str, Any] | None = None,
        use_params: bool = True,
        aws_conn_id: str | None = DEFAULT_AWS_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.spec_source = spec_source
        self.overrides = overrides
        self.use_params = use_params
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        # Later wins: the run's params, then a triggering asset event's model, then the DAG's wiring.
        form: Mapping[str, Any] = {}
        uris: list[str | None] = []
        if self.use_params:
            form = context.get("params") or {}
            for events in (context.get("triggering_asset_events") or {}).values():
                uris += [(getattr(event, "extra", None) or {}).get("model_uri") for event in events]
        overrides = tasks.run_overrides(form, uris, self.overrides)
        from squeezeflow.airflow.hooks import aws_environment, patched_environ

        try:
            with patched_environ(aws_environment(self.aws_conn_id)):
                spec = tasks.resolve_spec(self.spec_source, overrides or None)
        except InvalidInputError as err:
            raise AirflowFailException(str(err)) from err
        log.info("job %s: model %s, tolerance %s", spec["name"], spec["model"]["uri"], spec["tolerance"])
        return spec


class SqueezeflowIngestOperator(SqueezeflowBaseOperator):
    """Validate the dataset (structure and a Great Expectations suite) and record the inputs' hashes."""

    def run_stage(self, settings: Settings, context: Context) -> IngestResult:
        return tasks.ingest_task(self.job(), settings)


class SqueezeflowBaselineOperator(SqueezeflowBaseOperator):
    """Export the baseline to ONNX and score it on the held-out split."""

    template_fields: Sequence[str] = ("spec", "artifacts", "ingest")

    def __init__(self, *, ingest: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ingest = ingest

    def run_stage(self, settings: Settings, context: Context) -> BaselineResult:
        return tasks.baseline_task(self.job(), settings, IngestResult.model_validate(self.ingest))


class SqueezeflowBaselineBenchmarkOperator(SqueezeflowBaseOperator):
    """Measure the baseline on every device profile of the spec."""

    template_fields: Sequence[str] = ("spec", "artifacts", "ingest", "baseline")

    def __init__(self, *, ingest: Any, baseline: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ingest = ingest
        self.baseline = baseline

    def run_stage(self, settings: Settings, context: Context) -> BaselineBenchmarks | Pending:
        return tasks.baseline_benchmark_task(
            self.job(),
            settings,
            IngestResult.model_validate(self.ingest),
            BaselineResult.model_validate(self.baseline),
            defer_remote=True,
        )


class SqueezeflowPlanOperator(SqueezeflowBaseOperator):
    """Ask the search for the recipes of one round, to fan out over (``.expand``). Round 0 is the cheap
    candidates (the spec's recipes, or the int8 defaults for the ingested data); each later round asks the
    study, rebuilt from every trial recorded so far, for ``search.parallel_trials`` recipes. An empty list
    when the search has stopped (its mapped tasks are then skipped). The plan is recorded: a retry gets
    the same recipes.

    :param round_index: the search round (the DAG is unrolled to ``1 + search.rounds`` of them).
    """

    template_fields: Sequence[str] = ("spec", "artifacts", "ingest")

    def __init__(self, *, ingest: Any, round_index: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ingest = ingest
        self.round_index = round_index

    def run_stage(self, settings: Settings, context: Context) -> list[Recipe]:
        recipes = tasks.plan_task(
            self.job(), settings, IngestResult.model_validate(self.ingest), self.round_index
        )
        log.info(
            "round %d: %d candidates: %s",
            self.round_index,
            len(recipes),
            ", ".join(r.name or "?" for r in recipes) or "(the search has stopped)",
        )
        return recipes


def _label(recipe: Mapping[str, Any]) -> str:
    name = recipe.get("name")
    if name:
        return str(name)
    return "+".join(str(s.get("name")) for s in recipe.get("steps", [])) or "candidate"


class SqueezeflowOptimizeOperator(SqueezeflowBaseOperator):
    """Build one candidate from one recipe (map it over the plan with ``.expand(recipe=...)``)."""

    template_fields: Sequence[str] = ("spec", "artifacts", "ingest", "baseline", "recipe")
    operator_extra_links = (MlflowRunLink(), CandidateRunLink())

    def __init__(self, *, ingest: Any, baseline: Any, recipe: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ingest = ingest
        self.baseline = baseline
        self.recipe = recipe

    def run_stage(self, settings: Settings, context: Context) -> Trial:
        context["squeezeflow_candidate"] = _label(self.recipe)  # type: ignore[typeddict-unknown-key]
        out = tasks.optimize_task(
            self.job(),
            settings,
            IngestResult.model_validate(self.ingest),
            BaselineResult.model_validate(self.baseline),
            tasks.parse_recipe(self.recipe),
        )
        cand = out.candidate
        if cand.status != "ok":
            log.warning("candidate %s was not built: %s", cand.recipe.name, cand.error)
        return out


def _candidate_label(outcome: Mapping[str, Any]) -> str:
    return _label(outcome.get("candidate", {}).get("recipe", {}))


class SqueezeflowGateOperator(SqueezeflowBaseOperator):
    """Score one candidate against the accuracy gate (map it over the optimize task's output)."""

    template_fields: Sequence[str] = ("spec", "artifacts", "ingest", "baseline", "outcome")
    operator_extra_links = (MlflowRunLink(), CandidateRunLink())

    def __init__(self, *, ingest: Any, baseline: Any, outcome: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ingest = ingest
        self.baseline = baseline
        self.outcome = outcome

    def run_stage(self, settings: Settings, context: Context) -> Trial | Pending:
        context["squeezeflow_candidate"] = _candidate_label(self.outcome)  # type: ignore[typeddict-unknown-key]
        out = tasks.gate_task(
            self.job(),
            settings,
            IngestResult.model_validate(self.ingest),
            BaselineResult.model_validate(self.baseline),
            Trial.model_validate(self.outcome),
            defer_remote=True,
        )
        if isinstance(out, Trial) and out.gate is not None:
            log.info("%s: %s", _candidate_label(self.outcome), out.gate.reason)
        return out


class SqueezeflowBenchmarkOperator(SqueezeflowBaseOperator):
    """Measure one candidate on the spec's device profiles when it passed the gate (the others go through
    unmeasured: they cannot be promoted), end its MLflow run and record the trial for the search."""

    template_fields: Sequence[str] = ("spec", "artifacts", "ingest", "baseline", "outcome")
    operator_extra_links = (MlflowRunLink(), CandidateRunLink())

    def __init__(self, *, ingest: Any, baseline: Any, outcome: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ingest = ingest
        self.baseline = baseline
        self.outcome = outcome

    def run_stage(self, settings: Settings, context: Context) -> CandidateOutcome | Pending:
        context["squeezeflow_candidate"] = _candidate_label(self.outcome)  # type: ignore[typeddict-unknown-key]
        return tasks.benchmark_task(
            self.job(),
            settings,
            IngestResult.model_validate(self.ingest),
            BaselineResult.model_validate(self.baseline),
            Trial.model_validate(self.outcome),
            defer_remote=True,
        )


def summary_markdown(result: Mapping[str, Any] | JobResult) -> str:
    """The job's result as Markdown (for XCom, the task's log and the UI): `squeezeflow.report`'s summary,
    the same table every front door shows."""
    from squeezeflow.report import summary_markdown as render

    return render(result if isinstance(result, JobResult) else JobResult.model_validate(dict(result)))


class SqueezeflowPromoteOperator(SqueezeflowBaseOperator):
    """Promote the best eligible candidate (passed the gate on matching evidence, faster and smaller
    on the target profile) in the MLflow registry, and return the job's result. Pushes a Markdown
    summary under the XCom key ``summary``."""

    template_fields: Sequence[str] = (
        "spec",
        "artifacts",
        "ingest",
        "baseline",
        "baseline_benchmarks",
        "outcomes",
    )
    operator_extra_links = (MlflowRunLink(), RegisteredModelLink(), JobReportLink())
    ui_color = "#cde7f0"

    def __init__(
        self, *, ingest: Any, baseline: Any, baseline_benchmarks: Any, outcomes: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.ingest = ingest
        self.baseline = baseline
        self.baseline_benchmarks = baseline_benchmarks
        self.outcomes = outcomes

    def run_stage(self, settings: Settings, context: Context) -> JobResult:
        started = None
        dag_run = context.get("dag_run")
        start_date = getattr(dag_run, "start_date", None)
        if start_date is not None:
            started = start_date.timestamp()
        result = tasks.promote_task(
            self.job(),
            settings,
            IngestResult.model_validate(self.ingest),
            BaselineResult.model_validate(self.baseline),
            parse_baseline_benchmarks(self.baseline_benchmarks),
            None if self.outcomes is None else [CandidateOutcome.model_validate(o) for o in self.outcomes],
            started=started or time.time(),
        )
        md = summary_markdown(result)
        for line in md.splitlines():
            log.info("%s", line)
        context["ti"].xcom_push(key="summary", value=md)
        p = result.promotion
        uri = settings.tracking_uri
        if result.report_html:
            run = mlflow_run_url(uri, result.parent_run_id, result.experiment_id)
            JobReportLink.persist(context, run and f"{run}/artifacts")
        if p.promoted:
            RegisteredModelLink.persist(context, mlflow_model_version_url(uri, p.model_name, str(p.version)))
        return result


__all__ = [
    "CandidateRunLink",
    "JobReportLink",
    "MlflowRunLink",
    "RegisteredModelLink",
    "SqueezeflowBaseOperator",
    "SqueezeflowBaselineBenchmarkOperator",
    "SqueezeflowBaselineOperator",
    "SqueezeflowBenchmarkOperator",
    "SqueezeflowChampionOperator",
    "SqueezeflowGateOperator",
    "SqueezeflowIngestOperator",
    "SqueezeflowOptimizeOperator",
    "SqueezeflowPlanOperator",
    "SqueezeflowPromoteOperator",
    "SqueezeflowResolveSpecOperator",
    "SqueezeflowRetrainOperator",
    "mlflow_model_version_url",
    "mlflow_run_url",
    "mlflow_ui_url",
    "params_to_overrides",
    "summary_markdown",
]


class SqueezeflowChampionOperator(BaseOperator):
    """Announce a new champion on the outlet assets (`factory.champion_asset`), so that deploy DAGs can be
    scheduled on it: the event's extra holds ``model_name``, ``version``, ``alias``, ``model_uri``
    (``models:/<name>/<version>``) and the candidate. Skipped when the job promoted nothing, so the
    asset only ever hears of real promotions.

    :param result: the promote task's job result.
    """

    template_fields: Sequence[str] = ("result",)
    ui_color = "#cde7f0"

    def __init__(self, *, result: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.result = result

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        p = (self.result or {}).get("promotion") or {}
        if not p.get("promoted"):
            raise AirflowSkipException(f"nothing promoted: {p.get('reason', 'no promotion result')}")
        extra = {
            "model_name": p["model_name"],
            "version": str(p["version"]),
            "alias": p["alias"],
            "model_uri": f"models:/{p['model_name']}/{p['version']}",
            "candidate": p.get("candidate_label"),
        }
        for asset in self.outlets or []:
            context["outlet_events"][asset].extra = extra
        log.info("announced %s@%s = version %s", p["model_name"], p["alias"], p["version"])
        return extra


class SqueezeflowRetrainOperator(SqueezeflowBaseOperator):
    """Retrain the baseline with the user's entry point, store the new model in the artifact store and
    return its URI; announces it on the outlet assets (event extra ``model_uri``).

    :param entrypoint: ``module:callable``, called as ``fn(data_dir=..., output_path=...,
        base_model_uri=..., **train_kwargs)``; it writes a ``state_dict`` the spec's factory builds (see
        `squeezeflow.zoo.train.train_zoo_model`). It is DAG-author code, run in the worker.
    :param train_kwargs: keyword arguments for the entry point.
    """

    template_fields: Sequence[str] = ("spec", "artifacts", "entrypoint", "train_kwargs")
    operator_extra_links = ()  # a retrain is not one job's: no run to link to
    ui_color = "#fff3b0"

    def __init__(self, *, entrypoint: str, train_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entrypoint = entrypoint
        self.train_kwargs = train_kwargs or {}

    def run_stage(self, settings: Settings, context: Context) -> str:
        record = tasks.retrain_task(self.job(), settings, str(self.entrypoint), dict(self.train_kwargs))
        for asset in self.outlets or []:
            context["outlet_events"][asset].extra = {
                "model_uri": record.model_uri,
                "sha256": record.model.sha256,
            }
        return record.model_uri
