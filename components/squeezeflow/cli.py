"""The ``squeezeflow`` command.

Exit codes: 0 a candidate was promoted (or the command succeeded), 1 nothing passed the gate,
2 invalid input (spec, model or data), 3 infrastructure failure (MLflow or S3 unreachable after
retries), 4 an internal error (a bug: please report it with the traceback).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console

from squeezeflow.errors import SqueezeflowError
from squeezeflow.kfp.cli import kfp_app

_Record = TypeVar("_Record", bound=BaseModel)

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Automated model optimization with an accuracy gate."
)
spec_app = typer.Typer(no_args_is_help=True, help="Inspect and validate job specs.")
app.add_typer(spec_app, name="spec")


def _print_version(value: bool) -> None:
    if value:
        from squeezeflow import __version__

        typer.echo(f"squeezeflow {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Automated model optimization with an accuracy gate."""


app.add_typer(kfp_app, name="kfp")
err_console = Console(stderr=True)

TrackingOpt = Annotated[
    str | None, typer.Option("--tracking-uri", help="MLflow tracking URI (default: local SQLite store).")
]
ArtifactsOpt = Annotated[
    str | None, typer.Option("--artifacts", help="Artifact store: a directory or s3://bucket/prefix.")
]
WorkdirOpt = Annotated[Path | None, typer.Option("--workdir", help="Local scratch and cache directory.")]


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)],
        force=True,
    )
    for noisy in ("mlflow", "alembic", "great_expectations", "urllib3", "botocore", "onnxruntime"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _check_writable(path: Path | None, flag: str) -> None:
    """Fail before any work when ``path`` (an output file) cannot be written: a job that promoted must
    not then fail on its last line."""
    if path is None:
        return
    from squeezeflow.errors import InvalidInputError

    probe = path.with_name(f".{path.name}.probe")
    try:
        if path.is_dir():
            raise IsADirectoryError(21, "is a directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise InvalidInputError(
            f"{flag} {path}: cannot write there ({err.strerror or err}); choose a writable path"
        ) from None


def _read_json(path: Path | None, flag: str, stage: str) -> Any:
    """The JSON document in ``path`` (a stage's input); a missing, unreadable or malformed file is an
    input error naming the flag."""
    from squeezeflow.errors import InvalidInputError

    if path is None:
        raise InvalidInputError(f"stage {stage!r} needs {flag}")
    try:
        return json.loads(path.read_text())
    except OSError as err:
        raise InvalidInputError(f"{flag} {path}: cannot read it ({err.strerror or err})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidInputError(f"{flag} {path} is not valid JSON: {err}") from None


def _write_json(path: Path | None, payload: Any) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)


@app.command()
def run(
    spec: Annotated[Path, typer.Argument(help="Job spec (YAML).")],
    tracking_uri: TrackingOpt = None,
    artifacts: ArtifactsOpt = None,
    workdir: WorkdirOpt = None,
    result: Annotated[
        Path | None, typer.Option("--result", help="Write the job result as JSON here.")
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Also write the job's HTML report here (default: report.html beside --result, if given).",
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars (drawn only on a terminal).")] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the whole job: ingest, baseline, optimize, gate, benchmark, promote."""
    from squeezeflow.report import print_summary
    from squeezeflow.runner import run_job
    from squeezeflow.spec.load import load_spec
    from squeezeflow.stages import Settings

    _setup_logging(verbose)
    job = load_spec(spec)
    _check_local_inputs(job, spec)
    _check_writable(result, "--result")
    if report is None and result is not None:
        report = result.with_name("report.html")
    _check_writable(report, "--report")
    settings = Settings.resolve(artifacts=artifacts, tracking_uri=tracking_uri, workdir=workdir)
    outcome = run_job(job, settings, progress=progress, report_to=report)
    print_summary(outcome)
    if report is not None and outcome.report_html and report.exists():
        typer.echo(f"Report, under a stable name: {report}")
    _write_json(result, outcome.model_dump(mode="json"))
    raise typer.Exit(0 if outcome.promotion.promoted else 1)


@app.command()
def stage(
    name: Annotated[
        str,
        typer.Argument(help="ingest | baseline | plan | optimize | gate | benchmark | promote"),
    ],
    spec: Annotated[Path, typer.Option("--spec", help="Job spec (YAML).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the stage's JSON here (default: stdout).")
    ] = None,
    ingest_json: Annotated[Path | None, typer.Option("--ingest", help="Ingest result JSON.")] = None,
    baseline_json: Annotated[Path | None, typer.Option("--baseline", help="Baseline result JSON.")] = None,
    trial_json: Annotated[
        Path | None,
        typer.Option(
            "--trial",
            "--candidate",
            help="The trial so far (gate, benchmark): what the previous stage wrote for one candidate.",
        ),
    ] = None,
    recipe_json: Annotated[Path | None, typer.Option("--recipe", help="Recipe JSON (optimize).")] = None,
    round_index: Annotated[
        int, typer.Option("--round", min=0, help="Search round (plan; optimize with --recipe-index).")
    ] = 0,
    recipe_index: Annotated[
        int | None, typer.Option("--recipe-index", min=0, help="Index into the round's planned recipes.")
    ] = None,
    baseline_benchmark_json: Annotated[
        Path | None,
        typer.Option("--baseline-benchmark", help="Baseline benchmark JSON (promote): by profile, or one."),
    ] = None,
    outcome_json: Annotated[
        list[Path] | None,
        typer.Option("--outcome", help="Candidate outcome JSON (promote; default: every recorded trial)."),
    ] = None,
    tracking_uri: TrackingOpt = None,
    artifacts: ArtifactsOpt = None,
    workdir: WorkdirOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run one stage of the job as an orchestrator task does (the same task functions Airflow's
    operators and Kubeflow's components call), reading its inputs from JSON files. `benchmark` without
    --trial measures the baseline on every profile."""
    from pydantic_core import to_jsonable_python

    from squeezeflow import tasks
    from squeezeflow.errors import InvalidInputError
    from squeezeflow.results import (
        BaselineResult,
        CandidateOutcome,
        IngestResult,
        Trial,
        parse_baseline_benchmarks,
    )
    from squeezeflow.spec.load import load_spec
    from squeezeflow.stages import Settings

    _setup_logging(verbose)
    job = load_spec(spec)
    _check_writable(out, "--out")
    settings = Settings.resolve(artifacts=artifacts, tracking_uri=tracking_uri, workdir=workdir)

    def need(path: Path | None, flag: str) -> Any:
        """A stage input read from its JSON file."""
        return _read_json(path, flag, name)

    def record(path: Path | None, flag: str, expected: type[_Record]) -> _Record:
        """A record read from its JSON file and checked here, so a wrong file is reported against its
        flag."""
        doc = need(path, flag)
        try:
            return expected.model_validate(doc)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in err.errors()[:5]
            )
            raise InvalidInputError(f"{flag} {path} is not a {expected.__name__}: {problems}") from None

    def trial() -> Trial:
        got = need(trial_json, "--trial")
        if not isinstance(got, dict):
            raise InvalidInputError(f"--trial {trial_json} is not a trial (a JSON object)")
        # a bare candidate record (what `stage optimize` wrote before 0.1) is the start of a trial
        return Trial.model_validate({"candidate": got} if got.get("stage") == "optimize" else got)

    try:
        result: Any
        if name == "ingest":
            result = tasks.ingest_task(job, settings)
        elif name == "baseline":
            result = tasks.baseline_task(job, settings, record(ingest_json, "--ingest", IngestResult))
        elif name == "plan":
            result = tasks.plan_task(
                job, settings, record(ingest_json, "--ingest", IngestResult), round_index
            )
        elif name == "optimize":
            ing = record(ingest_json, "--ingest", IngestResult)
            if recipe_json is not None:
                recipe = tasks.parse_recipe(need(recipe_json, "--recipe"))
            elif recipe_index is not None:
                planned = tasks.plan_task(job, settings, ing, round_index)
                if recipe_index >= len(planned):
                    raise InvalidInputError(
                        f"--recipe-index {recipe_index} is out of range: round {round_index} planned "
                        f"{len(planned)} recipes"
                    )
                recipe = planned[recipe_index]
            else:
                raise InvalidInputError("stage 'optimize' needs --recipe or --recipe-index")
            base = record(baseline_json, "--baseline", BaselineResult)
            result = tasks.optimize_task(job, settings, ing, base, recipe)
        elif name == "gate":
            ing = record(ingest_json, "--ingest", IngestResult)
            base = record(baseline_json, "--baseline", BaselineResult)
            result = tasks.gate_task(job, settings, ing, base, trial())
        elif name == "benchmark":
            ing = record(ingest_json, "--ingest", IngestResult)
            base = record(baseline_json, "--baseline", BaselineResult)
            if trial_json is None:
                result = tasks.baseline_benchmark_task(job, settings, ing, base)
            else:
                got = trial()
                if got.gate is None:
                    raise InvalidInputError(
                        f"--trial {trial_json} has no gate verdict: run `stage gate` first"
                    )
                result = tasks.benchmark_task(job, settings, ing, base, got)
        elif name == "promote":
            benches = need(baseline_benchmark_json, "--baseline-benchmark")
            if isinstance(benches, dict) and "profile" in benches:  # one benchmark record
                benches = {benches["profile"]: benches}
            if not isinstance(benches, dict):
                raise InvalidInputError(
                    f"--baseline-benchmark {baseline_benchmark_json} is not a benchmark record, nor one "
                    "per profile"
                )
            outcomes = (
                None
                if not outcome_json
                else [CandidateOutcome.model_validate(need(p, "--outcome")) for p in outcome_json]
            )
            result = tasks.promote_task(
                job,
                settings,
                record(ingest_json, "--ingest", IngestResult),
                record(baseline_json, "--baseline", BaselineResult),
                parse_baseline_benchmarks(benches),
                outcomes,
            )
        else:
            raise InvalidInputError(
                f"unknown stage {name!r}: use ingest, baseline, plan, optimize, gate, benchmark or promote"
            )
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in err.errors()[:5]
        )
        raise InvalidInputError(
            f"stage {name!r}: an input file is not what this stage takes: {problems}"
        ) from None
    payload = to_jsonable_python(result)  # the typed result as JSON, at this door's edge
    if out is None:
        typer.echo(json.dumps(payload, indent=2))
    else:
        _write_json(out, payload)
    if name == "promote" and not result.promotion.promoted:
        raise typer.Exit(1)


@app.command()
def rollback(
    model_name: Annotated[str, typer.Argument(help="Registered model name.")],
    alias: Annotated[str, typer.Option("--alias", help="The alias to move back.")] = "champion",
    to: Annotated[
        str | None,
        typer.Option("--to", help="Version to move the alias to (default: the one it held before)."),
    ] = None,
    tracking_uri: TrackingOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Move an alias back to the version it held before its last promotion (or to --to VERSION);
    the move is recorded in the registered model's alias history."""
    from squeezeflow.stages import Settings
    from squeezeflow.tracking.tracker import Tracker

    _setup_logging(verbose)
    settings = Settings.resolve(tracking_uri=tracking_uri)
    tracker = Tracker(settings.tracking_uri, experiment=None)
    move = tracker.rollback_alias(model_name, alias, to)
    typer.echo(
        f"{model_name}@{alias}: version {move.from_version} -> version {move.to_version} "
        "(recorded in the alias history)"
    )


@app.command()
def agent(
    profile: Annotated[
        list[str] | None,
        typer.Option("--profile", help="Device profile name to serve; repeat. Default: all."),
    ] = None,
    tracking_uri: TrackingOpt = None,
    artifacts: ArtifactsOpt = None,
    workdir: WorkdirOpt = None,
    once: Annotated[bool, typer.Option(help="Exit when no request is pending.")] = False,
    poll: Annotated[float, typer.Option(help="Seconds between polls of the artifact store.")] = 5.0,
    max_idle: Annotated[
        float | None, typer.Option("--max-idle", help="Exit after this many seconds without a request.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Serve benchmark requests on this device (the profiles marked `remote: true` in job specs)."""
    from squeezeflow.agent import serve
    from squeezeflow.stages import Settings

    _setup_logging(verbose)
    settings = Settings.resolve(artifacts=artifacts, tracking_uri=tracking_uri, workdir=workdir)
    n = serve(settings, set(profile or []), once=once, poll_s=poll, max_idle_s=max_idle)
    err_console.print(f"measured {n} model(s)")


def _check_local_inputs(job: Any, spec: Path) -> None:
    """The spec's local model and data exist; a local Hugging Face checkpoint is one squeezeflow loads
    (safetensors weights, no remote code, a supported head, a text model's tokenizer)."""
    from squeezeflow.spec.load import check_local_inputs

    check_local_inputs(job, str(spec))
    if job.model.format == "huggingface" and not job.model.uri.startswith("s3://"):
        from squeezeflow.models.huggingface import check_local_checkpoint

        check_local_checkpoint(Path(job.model.uri), job.model.uri)


@spec_app.command("schema")
def spec_schema() -> None:
    """Print the job spec's JSON Schema."""
    from squeezeflow.spec.load import spec_json_schema

    typer.echo(json.dumps(spec_json_schema(), indent=2))


@spec_app.command("validate")
def spec_validate(
    spec: Annotated[Path, typer.Argument(help="Job spec (YAML).")],
    check_paths: Annotated[
        bool,
        typer.Option(
            help="Check that local model and data paths exist (--no-check-paths for a spec meant for "
            "another machine, such as an orchestrator's workers)."
        ),
    ] = True,
) -> None:
    """Validate a job spec: the verdict on stderr, the spec with its defaults filled in on stdout."""
    from squeezeflow.spec.load import load_spec

    job = load_spec(spec)
    if check_paths:
        _check_local_inputs(job, spec)
    typer.echo(json.dumps(job.model_dump(mode="json", by_alias=True), indent=2))
    err_console.print(
        f"{spec}: valid (job {job.name}, {len(job.devices)} device profile"
        f"{'s' if len(job.devices) != 1 else ''}, registered model {job.registry.model_name}"
        f"@{job.registry.alias})",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@app.command("passes")
def list_passes() -> None:
    """List the registered optimization passes, their parameters and what the search varies."""
    from rich.markup import escape
    from rich.table import Table

    from squeezeflow.passes import describe_passes

    t = Table(title="optimization passes")
    t.add_column("pass")
    t.add_column("input")
    t.add_column("parameters (default)")
    t.add_column("searched (default domain; narrowed by)")
    t.add_column("description")
    for p in describe_passes():
        props = p["params"].get("properties", {})
        params = "\n".join(f"{k} ({v.get('default', '')})" for k, v in props.items())
        searched = "\n".join(
            escape(s["summary"]) + (f"\n[dim]{escape(s['description'])}[/dim]" if s["description"] else "")
            for s in p["searchable"]
        )
        t.add_row(p["name"], p["input"], params, searched or "-", p["description"])
    Console(width=None if sys.stdout.isatty() else 160).print(t)


@app.command("profiles")
def list_profiles() -> None:
    """List the shipped device profiles a spec can name (`devices: [NAME]` or `{profile: NAME, ...}`)."""
    from rich.table import Table

    from squeezeflow.spec.devices import profile_library

    t = Table(title="device profiles")
    for col in ("profile", "runtime", "execution provider", "threads", "batch sizes", "remote"):
        t.add_column(col)
    for name, p in profile_library().items():
        t.add_row(
            name,
            p.runtime,
            p.execution_provider if p.runtime == "onnxruntime" else "-",
            f"{p.intra_op_threads} intra / {p.inter_op_threads} inter",
            ", ".join(str(b) for b in p.batch_sizes),
            "yes" if p.remote else "no",
        )
    Console(width=None if sys.stdout.isatty() else 160).print(t)


def main() -> None:
    """Entry point: run the app and map errors to exit codes."""
    try:
        rc = app(standalone_mode=False)
    except SqueezeflowError as err:
        from rich.markup import escape

        # The message is data, not markup (paths may hold brackets), and it is not hard-wrapped, so a
        # path or URI in it stays whole in logs and can be copied.
        err_console.print(f"[bold red]error[/] ({type(err).__name__}): {escape(str(err))}", soft_wrap=True)
        sys.exit(err.exit_code)
    except typer.Exit as ex:
        sys.exit(ex.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except typer.TyperException as err:
        # A usage error (typer's own click: an unknown option, a missing argument): one line of usage
        # and the error, exit 2, like any command-line tool, never a traceback.
        show = getattr(err, "show", None)
        if callable(show):
            show()
        else:
            err_console.print(f"error: {err}")
        code = getattr(err, "exit_code", 2)
        sys.exit(code if isinstance(code, int) and code else 2)
    except Exception:
        err_console.print_exception()
        sys.exit(4)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
