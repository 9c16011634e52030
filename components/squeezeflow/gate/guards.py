"""The secondary guards: each is measured and reported on every verdict, and decides only when the
spec sets its limit (the robustness and on-device checks run only when asked for)."""

from __future__ import annotations

from squeezeflow.results import GuardCheck
from squeezeflow.spec.devices import DeviceProfile
from squeezeflow.spec.gate import RobustnessCheck, Tolerance


def class_recall_check(tol: Tolerance, worst: tuple[int, float]) -> GuardCheck:
    """No class may lose more than ``max_class_recall_drop`` of its recall; ``worst`` is the class whose
    recall dropped most, and by how much."""
    cls, cls_drop = worst
    limit = tol.max_class_recall_drop
    ok = limit is None or cls_drop <= limit + 1e-12
    return GuardCheck(
        name="class_recall",
        value=cls_drop,
        limit=limit,
        passed=ok,
        detail=f"class {cls} loses {cls_drop:.4f} of its recall"
        + (f", more than the allowed {limit:.4f} per class" if not ok and limit is not None else ""),
    )


def agreement_check(tol: Tolerance, agreement: float) -> GuardCheck:
    """The candidate's top-1 answers must agree with the baseline's on at least ``min_agreement``."""
    floor = tol.min_agreement
    ok = floor is None or agreement >= floor - 1e-12
    return GuardCheck(
        name="agreement",
        value=agreement,
        limit=floor,
        passed=ok,
        detail=f"top-1 agreement with the baseline {agreement:.4f}"
        + (f", below the required {floor:.4f}" if not ok and floor is not None else ""),
    )


def robustness_check(
    rob: RobustnessCheck, kind: str, metric_name: str, n: int, base_metric: float, cand_metric: float
) -> GuardCheck:
    """On ``n`` inputs perturbed by ``kind``, the candidate's metric may fall at most ``rob.max_drop``
    below the baseline's on the same inputs."""
    d = base_metric - cand_metric
    ok = d <= rob.max_drop + 1e-12
    return GuardCheck(
        name=f"robustness:{kind}",
        value=d,
        limit=rob.max_drop,
        passed=ok,
        detail=f"under {kind} (severity {rob.severity:g}, n={n}) {metric_name} "
        f"{cand_metric:.4f} vs baseline {base_metric:.4f} (drop {d:+.4f})"
        + (f", more than the allowed {rob.max_drop:.4f}" if not ok else ""),
    )


def device_check(
    tol: Tolerance,
    profile: DeviceProfile,
    metric_name: str,
    n: int,
    same: float,
    max_diff: float,
    device_metric: float,
) -> GuardCheck:
    """On the device of ``profile``, the candidate's top-1 answers must equal this machine's on at least
    ``min_device_agreement`` (``same``) of the ``n`` held-out samples."""
    floor = tol.min_device_agreement
    ok = same >= floor - 1e-12
    return GuardCheck(
        name=f"device:{profile.name}",
        value=same,
        limit=floor,
        passed=ok,
        detail=f"on {profile.name} ({profile.execution_provider}) the top-1 answers equal this "
        f"machine's on {same:.4f} of n={n} samples ({metric_name} there "
        f"{device_metric:.4f}, largest output difference {max_diff:.3g})"
        + ("" if ok else f", below the required {floor:.4f}"),
    )
