"""The accuracy gate's logic; the stage that runs the models and keeps the records is
``squeezeflow.stages.gate``.

- ``scoring``: what is measured of a candidate on the held-out split (metric, drop and its bootstrap
  estimate, agreement, worst class, confusion matrix).
- ``stats``: the paired bootstrap bound on the drop, and how many samples would show it.
- ``rules``: the verdict rules: the tolerance on the drop, then the secondary guards.
- ``guards``: each secondary guard's check (class recall, agreement, robustness, on-device).
- ``perturb``: perturbed copies of held-out inputs, for the robustness guard.
- ``evidence``: the evidence document and the MLflow metrics and tags of a measured verdict.
- ``verdicts``: the verdict records: their key, and the verdict on a candidate not built, measured, or
  never sent to the gate.
"""
