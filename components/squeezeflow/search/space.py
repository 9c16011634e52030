"""What the adaptive search varies, and the recipe a trial's parameters describe."""

from __future__ import annotations

from typing import Any

from squeezeflow.recipes import TEXT_INT8, TRIM
from squeezeflow.spec import PassStep, Recipe, SearchSpace

LOWRANK_RATIOS = [0.0, 0.25, 0.5]
# What the study minimises for a trial: (validation-metric drop, MACs, bytes). All three are properties of
# the built model, the same wherever it was built, so the study (and the next round's asks) are too.
Objectives = tuple[float, float, float]


def distributions(space: SearchSpace) -> dict[str, Any]:
    """The study's parameters and their values, from the spec's search space."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    dists: dict[str, Any] = {
        "prune_ratio": FloatDistribution(*space.prune_ratio, step=0.05),
        "importance": CategoricalDistribution(list(space.importance)),
        "distill": CategoricalDistribution(list(space.distill)),
        "quantize": CategoricalDistribution(list(space.quantize)),
    }
    if space.lowrank:
        dists["lowrank_ratio"] = CategoricalDistribution(LOWRANK_RATIOS)
    return dists


def suggest(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """The parameters of an asked trial (``optuna.Trial``), over `distributions`."""
    params: dict[str, Any] = {
        "prune_ratio": trial.suggest_float("prune_ratio", *space.prune_ratio, step=0.05),
        "importance": trial.suggest_categorical("importance", list(space.importance)),
        "distill": trial.suggest_categorical("distill", list(space.distill)),
        "quantize": trial.suggest_categorical("quantize", list(space.quantize)),
    }
    if space.lowrank:
        params["lowrank_ratio"] = trial.suggest_categorical("lowrank_ratio", LOWRANK_RATIOS)
    return params


def recovery_epochs(ratio: float, space: SearchSpace) -> int:
    """Recovery epochs for a candidate pruned by ``ratio``.

    Channel pruning by ``r`` leaves about ``(1 - r)^2`` of the MACs, so an epoch of the pruned model
    costs that much less to train, and strongly pruned models need more epochs to recover (measured on
    the ResNet-18 reference: pruned by 80% it was back to the baseline's test accuracy after 11-12
    epochs, not 6; by 82%, 97.9% against 97.7% after 18).
    The engine spends the same training compute as ``finetune_epochs`` epochs at 50% pruning, capped
    at ``max_recovery_scale`` times ``finetune_epochs``.
    """
    base = space.finetune_epochs
    if ratio <= 0.5:
        return base
    scale = min(space.max_recovery_scale, (0.5 / (1.0 - ratio)) ** 2)
    return max(base, round(base * scale))


def recipe_from_params(params: dict[str, Any], space: SearchSpace, token_ids: bool = False) -> Recipe:
    """The recipe a search trial's parameters describe. For a token-id (text) model every recipe starts
    with vocabulary pruning, trims padding after recovery, and int8 is ONNX Runtime's dynamic
    quantization."""
    steps = []
    label = []
    if token_ids:
        steps.append(PassStep(name="vocab_prune"))
        label.append("vocab")
    if params.get("lowrank_ratio"):
        steps.append(PassStep(name="lowrank_svd", params={"rank_ratio": params["lowrank_ratio"]}))
        label.append(f"lowrank{params['lowrank_ratio']:.2f}")
    ratio = round(float(params["prune_ratio"]), 2)
    if ratio > 0:
        steps.append(
            PassStep(name="structured_prune", params={"ratio": ratio, "importance": params["importance"]})
        )
        label.append(f"prune{int(ratio * 100)}-{params['importance']}")
    steps.append(
        PassStep(
            name="finetune",
            params={
                "epochs": recovery_epochs(ratio, space),
                "lr": space.finetune_lr or (1e-4 if token_ids else 3e-3),
                "distill": bool(params["distill"]),
                **({"trim_padding": True} if token_ids else {}),
                # dynamic int8 follows: train under it (quantization-aware), see training.fake_int8_dynamic
                **({"quant_aware": True} if token_ids and params["quantize"] != "none" else {}),
            },
        )
    )
    label.append("kd" if params["distill"] else "ft")
    if token_ids:
        steps.append(TRIM)
        label.append("trim")
    if params["quantize"] in ("int8", "int8_accuracy_aware") and token_ids:
        steps.append(TEXT_INT8)
        label.append("int8dyn")
    elif params["quantize"] == "int8":
        steps.append(
            PassStep(name="ort_static_int8", params={"activation_type": "quint8", "weight_type": "qint8"})
        )
        label.append("int8")
    elif params["quantize"] == "int8_accuracy_aware":
        steps.append(PassStep(name="ort_static_int8_accuracy_aware"))
        label.append("int8aa")
    return Recipe(name="-".join(label), steps=steps)


def first_trials(space: SearchSpace) -> list[dict[str, Any]]:
    """Two known-sensible first trials that bracket the front: the strongest pruning first (the smallest
    model is also the cheapest to fine-tune, and the one that can reach large size and latency gains),
    then moderate pruning; both with the space's first importance and distillation choices, then int8
    when the space allows it (whatever order the space lists its quantize choices in)."""
    lo, hi = space.prune_ratio
    quantize = "int8" if "int8" in space.quantize else space.quantize[-1]
    ratios = dict.fromkeys([round(hi - 0.05 if hi - lo >= 0.1 else hi, 2), round((lo + hi) / 2, 2)])
    return [
        {
            "prune_ratio": ratio,
            "importance": space.importance[0],
            "distill": space.distill[0],
            "quantize": quantize,
        }
        for ratio in ratios
    ]


def pareto_front(points: dict[str, Objectives]) -> set[str]:
    """Keys of the points no other point dominates."""

    def dominates(a: Objectives, b: Objectives) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and a != b

    return {k for k, v in points.items() if not any(dominates(w, v) for j, w in points.items() if j != k)}
