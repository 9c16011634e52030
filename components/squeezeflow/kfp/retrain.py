"""The sample training entry point, kept importable here for pipelines compiled with this path; it lives in
`squeezeflow.zoo.train` (the same contract serves the Airflow DAG)."""

from squeezeflow.zoo.train import train_zoo_model

__all__ = ["train_zoo_model"]
