"""Default recipes: what the engine tries when the spec names none. Cheap candidates come first."""

from __future__ import annotations

from squeezeflow.spec import JobSpec, PassStep, Recipe


def default_recipes() -> list[Recipe]:
    return [
        Recipe(
            name="int8-static-u8s8",
            steps=[
                PassStep(name="ort_static_int8", params={"activation_type": "quint8", "weight_type": "qint8"})
            ],
        ),
        Recipe(
            name="int8-static-u8s8-percentile",
            steps=[
                PassStep(
                    name="ort_static_int8",
                    params={
                        "activation_type": "quint8",
                        "weight_type": "qint8",
                        "calibration_method": "percentile",
                    },
                )
            ],
        ),
        Recipe(
            name="int8-static-s8s8",
            steps=[
                PassStep(name="ort_static_int8", params={"activation_type": "qint8", "weight_type": "qint8"})
            ],
        ),
        Recipe(name="int8-dynamic", steps=[PassStep(name="ort_dynamic_int8")]),
    ]


def plan_recipes(spec: JobSpec) -> list[Recipe]:
    """The recipes a job will try, in order, capped by the search budget's trial count."""
    recipes = list(spec.search.recipes) if spec.search.recipes else default_recipes()
    return recipes[: spec.search.max_trials]
