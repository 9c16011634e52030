"""How the compression DAG's tasks are named, shared by the operator DAG (`factory`) and pod mode (`pods`)."""

from __future__ import annotations

# Mapped task instances are labelled by their recipe in the UI (set in the operator's context).
CANDIDATE_LABEL = "{{ squeezeflow_candidate }}"


def round_task_id(stage: str, index: int) -> str:
    """The task id of a search round's stage: ``plan``, ``optimize`` ... for round 0 (the cheap
    candidates), ``plan_r1``, ``optimize_r1`` ... for the searched rounds."""
    return stage if index == 0 else f"{stage}_r{index}"


__all__ = ["CANDIDATE_LABEL", "round_task_id"]
