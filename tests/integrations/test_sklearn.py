"""genepool.integrations.sklearn: estimators trained through partial_fit, at a tiny size.

Every listed estimator's state goes through the safe checkpoint format and comes back
whole (the next step from the restored estimator is the next step from the original);
after an exploit the values the estimator reads (a perceptron's inner optimizer's among
them) are the decided ones; an interrupted run resumes with no member at step 0.
"""

from __future__ import annotations

import difflib
import importlib
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from sklearn import linear_model, naive_bayes, neural_network  # type: ignore[import-untyped]
from sklearn.datasets import load_digits  # type: ignore[import-untyped]

import genepool as gp
from genepool.checkpoints import decode, encode
from genepool.integrations import sklearn as gps
from genepool.trainable import Member

X, Y = load_digits(return_X_y=True)
X, Y = X[:300] / 16.0, Y[:300]
X_VAL, Y_VAL = (
    load_digits(return_X_y=True)[0][300:450] / 16.0,
    load_digits(return_X_y=True)[1][300:450],
)
Y_REG = X[:, 20]  # a regression target: one pixel from the others
CLASSES = np.arange(10)


def classify(model: Any) -> None:
    model.partial_fit(X, Y, classes=CLASSES)


def regress(model: Any) -> None:
    model.partial_fit(X, Y_REG)


def accuracy(model: Any) -> float:
    return float(model.score(X_VAL, Y_VAL))


def fit_score(model: Any) -> float:
    return float(model.score(X, Y_REG))


@pytest.fixture(autouse=True)
def _passive_aggressive_is_deprecated() -> Iterator[None]:
    with warnings.catch_warnings():  # scikit-learn 1.8 deprecated it; still listed
        warnings.filterwarnings("ignore", "Class PassiveAggressive", FutureWarning)
        yield


def _pa(kind: str) -> Any:
    cls = getattr(linear_model, f"PassiveAggressive{kind}", None)
    if cls is None:  # pragma: no cover - scikit-learn 1.10 and later
        pytest.skip("this scikit-learn has no PassiveAggressive estimators")
    return cls()


ESTIMATORS: list[Any] = [
    pytest.param(lambda: linear_model.SGDClassifier(), classify, {"alpha": 1e-3}, id="sgd-clf"),
    pytest.param(
        lambda: linear_model.SGDClassifier(average=True, loss="log_loss"),
        classify,
        {"eta0": 0.02},
        id="sgd-clf-averaged",
    ),
    pytest.param(lambda: linear_model.SGDRegressor(), regress, {"alpha": 1e-3}, id="sgd-reg"),
    pytest.param(lambda: linear_model.Perceptron(), classify, {"eta0": 0.5}, id="perceptron"),
    pytest.param(lambda: _pa("Classifier"), classify, {"C": 0.5}, id="pa-clf"),
    pytest.param(lambda: _pa("Regressor"), regress, {"C": 0.5}, id="pa-reg"),
    pytest.param(
        lambda: neural_network.MLPClassifier(
            hidden_layer_sizes=(16,), solver="sgd", learning_rate="invscaling"
        ),
        classify,
        {"learning_rate_init": 0.05, "momentum": 0.8, "power_t": 0.3},
        id="mlp-clf-sgd",
    ),
    pytest.param(
        lambda: neural_network.MLPClassifier(hidden_layer_sizes=(16,), solver="adam"),
        classify,
        {"learning_rate_init": 0.01, "beta_1": 0.8, "epsilon": 1e-7},
        id="mlp-clf-adam",
    ),
    pytest.param(
        lambda: neural_network.MLPRegressor(
            hidden_layer_sizes=(8,), solver="sgd", learning_rate="adaptive"
        ),
        regress,
        {"learning_rate_init": 0.01, "nesterovs_momentum": False},
        id="mlp-reg-sgd",
    ),
]


def member_of(cls: type[gp.Trainable], hparams: dict[str, Any], seed: int = 0) -> Any:
    """A member of the class, set up as a run sets one up."""
    m = cls()
    m.member = Member(id=0, hparams=hparams, rng=np.random.default_rng(seed))
    m.setup(hparams)
    m.apply_hparams(hparams)
    return m


def outputs(model: Any) -> np.ndarray:
    if hasattr(model, "predict_proba") and getattr(model, "loss", None) != "hinge":
        return np.asarray(model.predict_proba(X_VAL))
    if hasattr(model, "decision_function"):
        return np.asarray(model.decision_function(X_VAL))
    return np.asarray(model.predict(X_VAL))


@pytest.mark.parametrize(("make", "fit", "hparams"), ESTIMATORS)
def test_a_listed_estimator_round_trips_through_the_safe_format_whole(
    make: Callable[[], Any], fit: Callable[[Any], None], hparams: dict[str, Any]
) -> None:
    cls = gps.trainable(make(), fit=fit, score=lambda m: 0.0)
    original = member_of(cls, hparams)
    for _ in range(3):
        original.step()
    blob = encode({"state": original.save()})  # no trust: plain data only
    copy = member_of(cls, hparams, seed=99)
    copy.load(decode(blob)["state"])
    copy.apply_hparams(hparams)
    np.testing.assert_array_equal(outputs(copy.model), outputs(original.model))
    # the next step from each is the same step: optimizer state and counters came back
    original.model.random_state = copy.model.random_state = 7
    fit(original.model)
    fit(copy.model)
    np.testing.assert_allclose(outputs(copy.model), outputs(original.model), rtol=0, atol=0)
    assert copy.hparams_in_effect() == original.hparams_in_effect()


def test_an_exploit_loads_the_donors_weights_and_optimizer_and_sets_the_recipients_values():
    model = neural_network.MLPClassifier(hidden_layer_sizes=(16,), solver="sgd", momentum=0.9)
    cls = gps.trainable(model, fit=classify, score=accuracy)
    donor = member_of(cls, {"learning_rate_init": 0.1, "momentum": 0.9})
    for _ in range(2):
        donor.step()
    recipient = member_of(cls, {"learning_rate_init": 0.001, "momentum": 0.5}, seed=1)
    recipient.step()
    recipient.load(decode(encode({"s": donor.save()}))["s"])
    decided = {"learning_rate_init": 0.02, "momentum": 0.6}
    recipient.apply_hparams(decided)
    opt, donors = recipient.model._optimizer, donor.model._optimizer
    for mine, theirs in zip(recipient.model.coefs_, donor.model.coefs_, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    for mine, theirs in zip(opt.velocities, donors.velocities, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert recipient.model.t_ == donor.model.t_ == 2 * len(X)  # the donor's counters
    # where the perceptron reads them: its optimizer, not the estimator's parameters
    assert (opt.learning_rate_init, opt.learning_rate, opt.momentum) == (0.02, 0.02, 0.6)
    recipient.member = Member(id=0, hparams=decided, rng=np.random.default_rng(1))
    assert recipient.hparams_in_effect() == decided


def test_an_adaptive_rate_keeps_its_reductions_and_an_inverse_scaling_one_its_step():
    cls = gps.trainable(
        neural_network.MLPRegressor(
            hidden_layer_sizes=(8,), solver="sgd", learning_rate="adaptive"
        ),
        fit=regress,
        score=fit_score,
    )
    m = member_of(cls, {"learning_rate_init": 0.01})
    m.step()
    m.model._optimizer.learning_rate = 0.002  # reduced twice by the schedule
    m.apply_hparams({"learning_rate_init": 0.05})
    assert m.model._optimizer.learning_rate == pytest.approx(0.01)
    cls = gps.trainable(
        neural_network.MLPRegressor(
            hidden_layer_sizes=(8,), solver="sgd", learning_rate="invscaling", power_t=0.5
        ),
        fit=regress,
        score=fit_score,
    )
    m = member_of(cls, {"learning_rate_init": 0.01})
    m.step()
    m.apply_hparams({"learning_rate_init": 0.04})
    assert m.model._optimizer.learning_rate == pytest.approx(0.04 / (m.model.t_ + 1) ** 0.5)


class Seen:
    """What ``fit`` saw of each estimator before each step: (steps so far, the values the
    perceptron's optimizer reads, the values its parameters say)."""

    calls: ClassVar[list[tuple[int, tuple[float, float], tuple[float, float]]]] = []

    @staticmethod
    def fit(model: Any) -> None:
        opt = getattr(model, "_optimizer", None)
        in_opt = (opt.learning_rate, opt.momentum) if opt is not None else (np.nan, np.nan)
        decided = (model.learning_rate_init, model.momentum)
        Seen.calls.append((int(getattr(model, "t_", 0)) // len(X), in_opt, decided))
        classify(model)


MLP_SPACE = gp.Space(
    learning_rate_init=gp.Float(0.001, 0.3, log=True), momentum=gp.Float(0.5, 0.95)
)


def mlp_run(tmp_path: Path, fit: Callable[[Any], None] = Seen.fit, **options: Any) -> gp.Result:
    cls = gps.trainable(
        neural_network.MLPClassifier(hidden_layer_sizes=(16,), solver="sgd"),
        fit=fit,
        score=accuracy,
    )
    settings: dict[str, Any] = {
        "metric": "score",
        "population": 4,
        "ready": gp.Every(2),
        "budget": gp.Budget(steps=8),
        "seed": 3,
        "storage": f"sqlite:///{tmp_path / 'pbt.db'}",
        "progress": False,
    }
    return gp.run(cls, MLP_SPACE, **{**settings, **options})


def test_in_a_run_every_step_after_an_exploit_trains_with_the_decided_values(tmp_path: Path):
    Seen.calls = []
    result = mlp_run(tmp_path)
    assert sum(e.kind == "exploit" for e in result.events) >= 2
    assert all(m.step == 8 for m in result.members)
    later = [(opt, decided) for steps, opt, decided in Seen.calls if steps > 0]
    assert len(later) >= 4 * 7  # and the steps trained again after copying a donor behind
    for in_opt, decided in later:  # constant schedule: the rate in effect is the decided one
        assert in_opt == pytest.approx(decided, rel=1e-12)
    # no member trained from scratch after its first step: a fresh estimator only at step 0
    assert sum(steps == 0 for steps, _, _ in Seen.calls) == 4


def test_setting_the_estimators_parameters_alone_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Without the inner optimizer set, the check after an exploit finds the old rate."""
    monkeypatch.setattr(gps, "_apply", lambda model, hparams: model.set_params(**hparams))
    with pytest.raises(gp.HyperparameterNotAppliedError, match="learning_rate_init"):
        mlp_run(tmp_path, fit=classify)


def test_a_seeded_run_repeats(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = mlp_run(tmp_path / "a", fit=classify)
    second = mlp_run(tmp_path / "b", fit=classify)
    assert [(m.score, m.hparams, m.generation) for m in first.members] == [
        (m.score, m.hparams, m.generation) for m in second.members
    ]


class Interrupt:
    """``fit`` that sends SIGINT to this process at its ``at``-th call (once)."""

    at, calls = 0, 0
    started: ClassVar[list[int]] = []

    @staticmethod
    def fit(model: Any) -> None:
        Interrupt.calls += 1
        Interrupt.started.append(int(getattr(model, "t_", 0)) // len(X))
        if Interrupt.calls == Interrupt.at:
            os.kill(os.getpid(), signal.SIGINT)
        classify(model)


def test_an_interrupted_run_resumes_and_no_member_starts_again_from_step_0(tmp_path: Path):
    Interrupt.at, Interrupt.calls, Interrupt.started = 14, 0, []
    first = mlp_run(tmp_path, fit=Interrupt.fit)
    assert first.stop_reason == "interrupted"
    stopped = {m.id: m.step for m in first.members}
    assert all(0 < s < 8 for s in stopped.values()), stopped
    Interrupt.started = []
    second = mlp_run(tmp_path, fit=Interrupt.fit)
    assert second.stop_reason == "budget"
    assert all(m.step == 8 for m in second.members)
    assert 0 not in Interrupt.started  # every member went on from its checkpoint
    assert len(Interrupt.started) >= sum(8 - s for s in stopped.values())


def test_an_unlisted_estimator_needs_the_trust_opt_in(tmp_path: Path):
    def fit(model: Any) -> None:
        model.partial_fit(X, Y, classes=CLASSES)

    with pytest.raises(gp.InvalidArgumentError, match=r"trust=True.*trust_checkpoints=True"):
        gps.trainable(naive_bayes.GaussianNB(), fit=fit, score=accuracy)
    cls = gps.trainable(naive_bayes.GaussianNB(), fit=fit, score=accuracy, trust=True)
    space = gp.Space(var_smoothing=gp.Float(1e-10, 1e-6, log=True))
    settings: dict[str, Any] = {"metric": "score", "population": 2, "ready": gp.Every(1)}
    settings.update(budget=gp.Budget(steps=2), seed=0, progress=False)
    db = f"sqlite:///{tmp_path / 'pbt.db'}"
    with pytest.raises(gp.CheckpointError, match="trust"):  # the run must trust them too
        gp.run(cls, space, storage=db, **settings)
    result = gp.run(cls, space, trust_checkpoints=True, **settings)
    assert all(m.step == 2 for m in result.members)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("hidden_layer_sizes", "shape"),
        ("random_state", "random stream"),
        ("dropout", "none of its parameters"),
    ],
)
def test_a_hyperparameter_the_estimator_cannot_take_is_refused(name: str, why: str):
    cls = gps.trainable(
        neural_network.MLPClassifier(hidden_layer_sizes=(4,)), fit=classify, score=accuracy
    )
    with pytest.raises(gp.InvalidArgumentError, match=rf"{name!r} \(.*{why}"):
        member_of(cls, {name: 1})


def test_what_is_not_an_estimator_with_partial_fit_is_refused():
    with pytest.raises(gp.InvalidArgumentError, match="partial_fit"):
        gps.trainable(linear_model.LogisticRegression(), fit=classify, score=accuracy)
    with pytest.raises(gp.InvalidArgumentError, match="'score'"):
        gps.trainable(linear_model.SGDClassifier(), fit=classify, score=0.5)  # type: ignore[arg-type]


def test_a_checkpoint_of_a_newer_layout_or_another_estimator_is_refused():
    cls = gps.trainable(linear_model.SGDClassifier(), fit=classify, score=accuracy)
    m = member_of(cls, {})
    m.step()
    state = m.save()
    with pytest.raises(gp.CheckpointError, match="upgrade genepool"):
        m.load({**state, "version": gps.STATE_VERSION + 1})
    with pytest.raises(gp.CheckpointError, match="SGDRegressor"):
        m.load({**state, "estimator": "SGDRegressor"})
    with pytest.raises(gp.CheckpointError, match="not a scikit-learn member"):
        m.load({"weights": 1})


def test_the_pbt_example_adds_at_most_10_lines_to_the_plain_one() -> None:
    root = Path(__file__).resolve().parents[2] / "examples"
    plain, pbt = (code_lines(root / f"sklearn_{name}.py") for name in ("plain", "pbt"))
    added = [line for line in difflib.ndiff(plain, pbt) if line.startswith("+ ")]
    assert 0 < len(added) <= 10, added


def code_lines(path: Path) -> list[str]:
    """The file's lines after its module docstring."""
    return path.read_text().split('"""', 2)[2].splitlines()


def test_the_pbt_example_runs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    root = Path(__file__).resolve().parents[2] / "examples"
    monkeypatch.syspath_prepend(str(root))
    example = importlib.import_module("sklearn_pbt")
    result = example.main(steps=4)
    assert all(m.step == 4 for m in result.members)
    assert result.best.score > 0.8


def test_without_scikit_learn_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import now fails
    monkeypatch.delitem(sys.modules, "genepool.integrations.sklearn")
    with pytest.raises(gp.MissingDependencyError, match=r"pip install 'genepool\[sklearn\]'"):
        importlib.import_module("genepool.integrations.sklearn")
