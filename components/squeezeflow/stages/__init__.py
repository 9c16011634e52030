"""The six pipeline stages: plain functions, typed inputs and results, no orchestration logic."""

from squeezeflow.stages.baseline import baseline
from squeezeflow.stages.benchmark import benchmark
from squeezeflow.stages.context import Settings, StageContext
from squeezeflow.stages.gate import gate
from squeezeflow.stages.ingest import ingest
from squeezeflow.stages.optimize import optimize
from squeezeflow.stages.promote import promote

__all__ = ["Settings", "StageContext", "baseline", "benchmark", "gate", "ingest", "optimize", "promote"]
