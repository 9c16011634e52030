"""One bench job spec through two front doors: the CLI and Airflow, each with its own stores.

    .venv/bin/python bench/front_doors.py                  # resnet18, the bench's full-mode budgets
    .venv/bin/python bench/front_doors.py --quick          # compact, quick-mode budgets (a smoke run)
    .venv/bin/python bench/front_doors.py --model compact  # any model of bench/run.py's table

Prepares the data, the trained model and the job spec exactly as ``bench/run.py`` does (same functions,
same mode tables, seed 0), writes the spec once, then runs that one file through

  cli      ``squeezeflow run`` (which calls ``squeezeflow.runner.run_job``)
  airflow  ``airflow dags test squeezeflow_compress_on_new_model`` on the repo's dags/ folder, with the
           environment the tests give it (``tests/airflow_env.py``: a throwaway AIRFLOW_HOME, the MLflow
           connection, a local artifact store, ``SQUEEZEFLOW_SPEC``)

each door with its own ``mlflow server`` (SQLite, on loopback, as the tests start it) and its own artifact
store, so neither can replay the other's records. Prints one row per door (promoted recipe, size and speed
ratios against the job's own baseline measurement, accuracy delta on the test split, wall seconds,
candidates built) and whether both doors tried the same recipes and promoted the same one; writes the
rows as JSON under ``.squeezeflow/bench/<model>/front-doors/front_doors.json`` (or ``--out``).

The search is bounded by ``search.max_seconds`` as well as by trials and rounds: on a loaded machine a
door can plan one round fewer than the other, and the comparison then says so rather than hide it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import run as bench

DOORS = ("cli", "airflow")
SQUEEZEFLOW = str(Path(sys.executable).with_name("squeezeflow"))


def run_cli(spec: Path, base: Path, tracking_uri: str, timeout: float) -> dict[str, Any]:
    out = base / "result.json"
    with (base / "cli.log").open("w") as log:
        proc = subprocess.run(
            [SQUEEZEFLOW, "run", str(spec), "--no-progress", "--tracking-uri", tracking_uri,
             "--artifacts", str(base / "artifacts"), "--workdir", str(base / "work"), "--result", str(out)],
            stdout=log, stderr=subprocess.STDOUT, timeout=timeout, check=False,
        )  # fmt: skip
    if proc.returncode not in (0, 1) or not out.is_file():  # 1: ran, nothing promoted
        raise RuntimeError(f"squeezeflow run exited {proc.returncode}; log {base / 'cli.log'}")
    return dict(json.loads(out.read_text()))


def run_airflow(spec: Path, base: Path, tracking_uri: str, timeout: float) -> dict[str, Any]:
    from tests.airflow_env import DAG_ID, airflow, airflow_env, task_instances, xcom_value

    home = base / "home"
    env = airflow_env(home, tracking_uri=tracking_uri, s3=None, artifacts=str(base / "artifacts"), spec=spec)
    airflow(env, "db", "migrate")
    out = airflow(env, "dags", "test", DAG_ID, timeout=timeout, check=False)
    (base / "airflow.log").write_text(out.stdout + out.stderr)
    result = xcom_value(home, DAG_ID, "promote")
    if out.returncode != 0 or result is None:
        raise RuntimeError(f"airflow dags test exited {out.returncode}; log {base / 'airflow.log'}")
    failed = [t for t in task_instances(home, DAG_ID) if t["state"] not in ("success", "skipped")]
    return {**result, "_failed_tasks": failed}


RUNNERS = {"cli": run_cli, "airflow": run_airflow}


def summarize(door: str, result: dict[str, Any], seconds: float) -> dict[str, Any]:
    """One table row from a door's job result (ratios against the job's own baseline measurement)."""
    promotion = result["promotion"]
    label = promotion.get("candidate_label") if promotion["promoted"] else None
    row: dict[str, Any] = {
        "door": door,
        "promoted": promotion["promoted"],
        "recipe": label,
        "reason": promotion["reason"],
        "size_ratio": None,
        "speed_ratio": None,
        "delta": None,
        "wall_seconds": round(seconds, 1),
        "job_seconds": round(result["seconds"], 1),
        "trials": len(result["candidates"]),
        "recipes_tried": [c["label"] for c in result["candidates"]],
        "search_rounds": result.get("search_rounds"),
        "search_stop": result.get("search_stop"),
        "baseline_metric": result["baseline_metric"],
        "baseline_size_bytes": result["baseline_size_bytes"],
        "baseline_p50_ms": result["baseline_p50_ms"],
    }
    chosen = next(
        (c for c in result["candidates"] if c["candidate_key"] == promotion.get("candidate_key")), None
    )
    if chosen is not None:
        if chosen["size_bytes"]:
            row["size_ratio"] = round(result["baseline_size_bytes"] / chosen["size_bytes"], 2)
        if chosen["p50_ms"]:
            row["speed_ratio"] = round(result["baseline_p50_ms"] / chosen["p50_ms"], 2)
        row["delta"] = chosen["delta"]
        row["metric"] = chosen["metric"]
    if result.get("_failed_tasks"):
        row["failed_tasks"] = result["_failed_tasks"]
    return row


def print_table(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for col in ("door", "promoted recipe", "size x", "speed x", "Δ acc", "wall s", "trials"):
        t.add_column(col, justify="left" if col in ("door", "promoted recipe") else "right")

    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for r in rows:
        if r.get("error"):
            t.add_row(r["door"], f"[red]{r['error']}[/]", "-", "-", "-", f(r.get("wall_seconds"), ".0f"), "-")
            continue
        t.add_row(
            r["door"],
            r["recipe"] or f"(none: {r['reason']})",
            f(r["size_ratio"], ".1f"),
            f(r["speed_ratio"], ".1f"),
            f(r["delta"], "+.4f"),
            f(r["wall_seconds"], ".0f"),
            str(r["trials"]),
        )
    Console(width=160).print(t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(bench.MODELS), help="default resnet18 (compact with --quick)")
    ap.add_argument("--quick", action="store_true", help="bench/run.py's quick mode (and compact by default)")
    ap.add_argument("--doors", default=",".join(DOORS), help=f"comma-separated subset of {DOORS}")
    ap.add_argument("--timeout", type=float, default=7200.0, help="seconds per door")
    ap.add_argument("--out", type=Path, help="the JSON file (default beside the doors' stores)")
    args = ap.parse_args(argv)
    m = bench.MODELS[args.model or ("compact" if args.quick else "resnet18")]
    mode = bench.QUICK if args.quick else bench.FULL
    doors = [d.strip() for d in args.doors.split(",") if d.strip()]
    if not doors or any(d not in DOORS for d in doors):
        ap.error(f"--doors: choose from {DOORS}")

    import yaml
    from rich.console import Console

    from tests.servers import MlflowServer

    console = Console(width=160)
    data = bench.prepare_data(m)
    state_dict, record = bench.prepare_model(m, data, console)
    console.print(f"{m.key}: {m.zoo} ({'cached' if record['cached'] else 'trained'}), mode {mode.name}")
    root = bench.ROOT / m.key / "front-doors"
    shutil.rmtree(root, ignore_errors=True)  # recorded stage results would replay the last run
    root.mkdir(parents=True)
    doc = bench.job_doc(m, state_dict, data, mode)
    spec = root / "job.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))  # one file, read by every door

    rows: list[dict[str, Any]] = []
    results: dict[str, dict[str, Any]] = {}
    out = args.out or root / "front_doors.json"
    for door in doors:
        base = root / door
        base.mkdir()
        console.print(f"[bold]{door}[/]: running {spec} ...")
        t0 = time.perf_counter()
        with MlflowServer(base / "mlflow") as server:
            try:
                result = RUNNERS[door](spec, base, server.tracking_uri, args.timeout)
            except Exception as err:  # keep the row, say why
                rows.append({"door": door, "error": f"{type(err).__name__}: {err}",
                             "wall_seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
                console.print(f"[red]{door} failed[/]: {err}")
                continue
        results[door] = result
        rows.append(summarize(door, result, time.perf_counter() - t0))
        console.print(f"{door}: done in {rows[-1]['wall_seconds']:.0f} s, promoted {rows[-1]['recipe']}")
        out.write_text(json.dumps({"spec": str(spec), "rows": rows}, indent=2) + "\n")  # partial rows survive

    ok = [r for r in rows if not r.get("error")]
    same = {
        "recipes_tried": len({json.dumps(r["recipes_tried"]) for r in ok}) == 1 if len(ok) > 1 else None,
        "promoted": len({r["recipe"] for r in ok}) == 1 if len(ok) > 1 else None,
    }
    report = {
        "model": m.key,
        "factory": m.factory,
        "mode": mode.name,
        "spec": str(spec),
        "job": doc,
        "training": record,
        "rows": rows,
        "same": same,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(
        rows, f"{m.key} ({mode.name} mode): one spec, seed {doc['search']['seed']}, through each door"
    )
    for r in ok:
        console.print(f"{r['door']}: tried {', '.join(r['recipes_tried'])} ({r['search_stop']})")
    console.print(f"same recipes tried: {same['recipes_tried']}; same promoted recipe: {same['promoted']}")
    console.print(f"wrote {out}")
    return 0 if ok and len(ok) == len(rows) and same["promoted"] is not False else 1


if __name__ == "__main__":
    raise SystemExit(main())
