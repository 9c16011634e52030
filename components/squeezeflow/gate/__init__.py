"""The accuracy gate's logic; the stage that runs it is ``squeezeflow.stages.gate``.

- ``stats``: the paired bootstrap bound on the metric's drop, and how many samples would show it.
- ``perturb``: perturbed copies of held-out inputs, for the robustness guard.
"""
