"""The gate's metrics: built-in ones agree with scikit-learn's definitions, user metrics are imported
by reference and refused clearly when they are not usable, and perturbations are deterministic."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, top_k_accuracy_score

from squeezeflow.errors import SpecError
from squeezeflow.gate.perturb import perturb
from squeezeflow.gate.stats import paired_bootstrap_metric_drop, samples_needed
from squeezeflow.metrics import macro_f1, resolve_metric, top1_accuracy, top5_accuracy
from squeezeflow.spec.load import parse_spec


def _outputs(n: int = 600, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes))
    logits[np.arange(n), y] += rng.normal(1.0, 1.0, n)  # better than chance, far from perfect
    return y, logits


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_macro_f1_and_top5_match_scikit_learn(seed: int) -> None:
    y, logits = _outputs(seed=seed)
    assert macro_f1(y, logits) == pytest.approx(f1_score(y, logits.argmax(1), average="macro"))
    assert top5_accuracy(y, logits) == pytest.approx(top_k_accuracy_score(y, logits, k=5, labels=range(10)))


def test_macro_f1_weighs_a_neglected_rare_class_as_much_as_a_frequent_one() -> None:
    y = np.array([0] * 95 + [1] * 5)
    never_one = np.zeros((100, 2))
    never_one[:, 0] = 1.0
    assert top1_accuracy(y, never_one) == 0.95
    assert macro_f1(y, never_one) < 0.5


def test_a_user_metric_is_resolved_from_its_module_reference() -> None:
    fn = resolve_metric("tests.user_metrics:balanced_accuracy")
    y, logits = _outputs()
    assert 0.0 < fn(y, logits) < 1.0


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("f1", "unknown metric 'f1'"),
        ("no_such_module_xyz:fn", "cannot import 'no_such_module_xyz'"),
        ("tests.user_metrics:missing", "has no callable named 'missing'"),
        ("tests.user_metrics:NOT_CALLABLE", "has no callable named 'NOT_CALLABLE'"),
        ("tests.user_metrics:fn:extra", "must look like 'package.module:callable'"),
    ],
)
def test_an_unusable_metric_is_refused_by_the_spec_naming_the_field(name: str, message: str) -> None:
    doc = {
        "name": "m",
        "model": {"format": "onnx", "uri": "/m.onnx"},
        "data": {"uri": "/d"},
        "task": {"metric": name},
        "registry": {"model_name": "m"},
    }
    with pytest.raises(SpecError, match=r"task\.metric") as err:
        parse_spec(doc)
    assert message in str(err.value)


def test_a_user_metric_that_returns_no_number_fails_clearly() -> None:
    fn = resolve_metric("tests.user_metrics:not_a_number")
    y, logits = _outputs()
    with pytest.raises(SpecError, match="must return a number, returned str"):
        fn(y, logits)


def test_metric_level_bootstrap_bounds_a_macro_f1_drop_and_estimates_the_samples_needed() -> None:
    y, base = _outputs(n=1000, seed=3)
    cand = base.copy()
    flip = np.random.default_rng(4).choice(1000, 30, replace=False)
    cand[flip] = np.roll(cand[flip], 1, axis=1)  # 30 answers changed, most of them now wrong
    est = paired_bootstrap_metric_drop(macro_f1, y, base, cand, confidence=0.95, samples=500, seed=0)
    assert est.drop == pytest.approx(macro_f1(y, base) - macro_f1(y, cand))
    assert est.lower < est.drop < est.upper
    assert est.std is not None and est.std > 0
    needed = samples_needed(est, allowed=est.drop + 0.002)
    assert needed is not None and needed > 1000
    assert samples_needed(est, allowed=est.drop / 2) is None  # no sample size passes a larger drop

    same = paired_bootstrap_metric_drop(macro_f1, y, base, base.copy(), confidence=0.95, samples=500)
    assert same.drop == same.upper == same.lower == 0.0


@pytest.mark.parametrize("kind", ["gaussian_noise", "blur", "brightness"])
def test_image_perturbations_keep_shape_dtype_and_range_and_are_deterministic(kind: str) -> None:
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    a, b = perturb(x, kind, 0.1, seed=7), perturb(x, kind, 0.1, seed=7)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert np.array_equal(a, b) and not np.array_equal(a, x)
    assert a.min() >= x.min() and a.max() <= x.max()


def test_token_dropout_replaces_about_the_requested_fraction_with_the_pad_id() -> None:
    x = np.random.default_rng(0).integers(5, 1000, size=(200, 64), dtype=np.int64)
    out = perturb(x, "token_dropout", 0.2, seed=0, pad_token_id=0)
    assert out.dtype == np.int64 and out.shape == x.shape
    assert 0.17 < float(np.mean(out == 0)) < 0.23
    assert np.array_equal(out[out != 0], x[out != 0])


def test_an_image_perturbation_on_token_inputs_is_refused() -> None:
    with pytest.raises(SpecError, match="'blur' needs float"):
        perturb(np.zeros((2, 8), dtype=np.int64), "blur", 0.1)
