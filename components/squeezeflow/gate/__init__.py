"""The accuracy gate's logic; the stage that runs it is ``squeezeflow.stages.gate``.

- ``stats``: the paired bootstrap bound on the metric's drop, and how many samples would show it.
- ``perturb``: perturbed copies of held-out inputs, for the robustness guard.
- ``scoring``: what is measured of a candidate: drop and its bootstrap estimate, worst class, confusion.
- ``verdicts``: verdicts given without measuring (a candidate the engine never sent to the gate).
"""
