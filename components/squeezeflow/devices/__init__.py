"""Measuring models on target devices.

* `worker`: the benchmark worker, run as ``python -m squeezeflow.devices.worker`` in a fresh process per
  measurement (pinned threads, the profile's runtime and batch sizes).
* `energy`: an estimated energy per inference from a stated per-operation energy model.

The device profiles themselves are part of the job spec (`squeezeflow.spec`, shipped ones under
``squeezeflow/profiles/``); the benchmark stage (`squeezeflow.stages.benchmark`) decides what to measure
where, and the device agent (`squeezeflow.agent`) serves remote profiles.
"""
