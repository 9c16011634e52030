"""Default recipes: what the engine tries when the spec names none. Cheap candidates come first."""

from __future__ import annotations

from squeezeflow.spec.job import JobSpec
from squeezeflow.spec.search import PassStep, Recipe

# int8 for token-id (text) models: ONNX Runtime dynamic quantization with per-channel weight scales.
TEXT_INT8 = PassStep(name="ort_dynamic_int8", params={"per_channel": True})
# Token-id models run on their input cut after the last non-pad token (exact; see passes/text.py).
TRIM = PassStep(name="trim_padding")
# A short quantization-aware pass before dynamic int8: half an epoch (140 batches of 32) distilling from
# the baseline at a low rate, under simulated int8 (see training.fake_int8_dynamic).
TEXT_QAT = PassStep(
    name="finetune",
    params={
        "epochs": 1,
        "lr": 1e-5,
        "batch_size": 32,
        "distill": True,
        "trim_padding": True,
        "quant_aware": True,
        "max_steps": 140,
    },
)

# Half the transformer layers dropped (3 of MiniLM-L6's 6, ranked by their influence on the validation
# loss), then a recovery that distils the baseline's logits and, at every kept layer, its hidden states
# (see training.HiddenStates), on trimmed padding and under simulated int8, since dynamic int8 follows.
TEXT_DEPTH = PassStep(name="depth_prune", params={"ratio": 0.5})
TEXT_DEPTH_RECOVERY = PassStep(
    name="finetune",
    params={
        "epochs": 2,
        "lr": 1e-4,
        "batch_size": 32,
        "distill": True,
        "hidden_weight": 1.0,
        "trim_padding": True,
        "quant_aware": True,
        "patience": 1,
        "max_seconds": 900.0,
    },
)

# Vocabulary pruning, half the layers dropped (`TEXT_DEPTH`), a recovery distilling logits and hidden states
# under simulated int8 (`TEXT_DEPTH_RECOVERY`), trimmed padding, dynamic int8: for a spec to list when its
# model has layers to spare. On the MiniLM reference (2 recovery epochs): 7.8x smaller, -2.09 points.
TEXT_DEPTH_RECIPE = Recipe(
    name="vocab-depth50-kd-hid-qat-trim-int8-dynamic-pc",
    steps=[PassStep(name="vocab_prune"), TEXT_DEPTH, TEXT_DEPTH_RECOVERY, TRIM, TEXT_INT8],
)


def default_recipes(input_dtype: str = "float32", torch_module: bool = True) -> list[Recipe]:
    """The first candidates, cheap ones first: ONNX Runtime int8 variants of the baseline.

    For token-id models (``input_dtype`` int64, a text encoder) dynamic int8 with per-channel weight
    scales: static QDQ int8 collapses a fine-tuned MiniLM's accuracy and slows it down, so it is not
    worth a trial's time there (the gate would refuse it anyway). When the model is a PyTorch module:
    - the padding is trimmed at run time in every recipe (exact, see ``trim_padding``);
    - the trimmed float model is a candidate too: no accuracy risk, about 1.2x faster on inputs whose
      lengths spread evenly over the padded width;
    - last, the expensive one: vocabulary pruning, then a short quantization-aware pass (``TEXT_QAT``),
      then dynamic int8. On the fine-tuned MiniLM reference (test split, batch 1) vocabulary pruning
      and int8 lost 0.58 points without it and 0.16 with a full epoch of it.

    Dropping layers (`TEXT_DEPTH_RECIPE`) is not among them: on the MiniLM reference it lost 1.7-2.1
    points after the 2 recovery epochs (about 10 minutes) a default can afford, and the gate refused it."""
    if input_dtype == "int64":
        if not torch_module:
            return [Recipe(name="int8-dynamic-pc", steps=[TEXT_INT8])]
        return [
            Recipe(name="trim-int8-dynamic-pc", steps=[TRIM, TEXT_INT8]),
            Recipe(name="trim", steps=[TRIM]),
            Recipe(
                name="vocab-qat-trim-int8-dynamic-pc",
                steps=[PassStep(name="vocab_prune"), TEXT_QAT, TRIM, TEXT_INT8],
            ),
        ]
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


def plan_recipes(spec: JobSpec, input_dtype: str = "float32") -> list[Recipe]:
    """The recipes a job will try, in order, capped by the search budget's trial count. ``input_dtype``
    is the ingested dataset's (``IngestResult.dataset.input_dtype``): token-id models get the text
    defaults."""
    if spec.search.recipes:
        recipes = list(spec.search.recipes)
    else:
        recipes = default_recipes(input_dtype, torch_module=spec.model.is_module)
    return recipes[: spec.search.max_trials]
