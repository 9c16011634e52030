"""Provider metadata, found by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from squeezeflow import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "squeezeflow",
        "name": "squeezeflow",
        "description": "Automated model compression (quantization, pruning, distillation) with an accuracy "
        "gate, device benchmarks and MLflow registry promotion.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "squeezeflow",
                "external-doc-url": "https://github.com/squeezeflow/squeezeflow",
                "tags": ["ml"],
            }
        ],
        "connection-types": [
            {"connection-type": "mlflow", "hook-class-name": "squeezeflow.airflow.hooks.MlflowHook"},
        ],
        "hooks": [{"integration-name": "squeezeflow", "python-modules": ["squeezeflow.airflow.hooks"]}],
        "operators": [
            {"integration-name": "squeezeflow", "python-modules": ["squeezeflow.airflow.operators"]}
        ],
        "triggers": [{"integration-name": "squeezeflow", "python-modules": ["squeezeflow.airflow.triggers"]}],
        "extra-links": [
            "squeezeflow.airflow.operators.MlflowRunLink",
            "squeezeflow.airflow.operators.CandidateRunLink",
            "squeezeflow.airflow.operators.RegisteredModelLink",
            "squeezeflow.airflow.operators.JobReportLink",
        ],
    }
