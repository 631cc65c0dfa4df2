"""The Keras 3 integration (PyTorch backend): exploits in place in the same model and
optimizer, the values in effect the decided ones, no restart from step 0, a resumed run
continues, a seeded run is reproduced."""

from __future__ import annotations

import difflib
import importlib
import itertools
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

gpk = pytest.importorskip("genepool.integrations.keras", exc_type=ImportError)  # torch backend
import keras  # noqa: E402
from sklearn.datasets import load_digits  # type: ignore[import-untyped]  # noqa: E402

import genepool as gp  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))
import keras_pbt as example  # noqa: E402

POPULATION, BUDGET, BATCHES = 4, 6, 4  # BATCHES: batches an epoch
SPACE = gp.Space(
    learning_rate=gp.Float(1e-4, 1e-1, log=True),
    beta_1=gp.Float(0.5, 0.99),
    dropout=gp.Float(0.0, 0.5),
)
HPARAMS = {"dropout": gpk.Layers(keras.layers.Dropout, "rate")}


def make_model(
    learning_rate: float = 1e-3, beta_1: float = 0.9, dropout: float = 0.1, **more: Any
) -> Any:
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(dropout),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate, beta_1=beta_1, **more),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def tiny_data() -> dict[str, Any]:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    n = 32 * BATCHES
    val = (x[1400:1464], y[1400:1464])
    return {"x": x[:n], "y": y[:n], "validation_data": val, "batch_size": 32, "verbose": 0}


DATA = tiny_data()


def values(variables: list[Any]) -> list[np.ndarray[Any, Any]]:
    return [v.value.detach().cpu().numpy().copy() for v in variables]


class Recorder(keras.callbacks.Callback):  # type: ignore[misc]
    """What each member's model ran with, by the claim the driver asked for last (the
    one training: one at a time)."""

    def __init__(self) -> None:
        super().__init__()
        self.claim: Any = None
        self.rounds: list[dict[str, Any]] = []  # at the first batch of each round
        self.epochs: dict[int, list[tuple[int, int, int]]] = {}  # member: (gen, epoch, step)
        self.ends: dict[tuple[int, int, int], dict[str, Any]] = {}  # (member, gen, step)
        self.batches = 0
        self.fail_at: int | None = None
        self._first = False

    def on_train_begin(self, logs: Any = None) -> None:
        self._first = True

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        c = self.claim
        self.epochs.setdefault(c.member, []).append((c.generation, epoch, c.step))

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        self.batches += 1
        if self.fail_at is not None and self.batches >= self.fail_at:
            raise RuntimeError("the machine went down")
        if not self._first:
            return
        self._first = False
        c, opt = self.claim, self.model.optimizer
        dropout = next(x for x in self.model.layers if isinstance(x, keras.layers.Dropout))
        self.rounds.append(
            {
                "member": c.member,
                "generation": c.generation,
                "step": c.step,
                "checkpoint": None if c.checkpoint is None else (c.checkpoint.member, c.step),
                "model": id(self.model),
                "learning_rate": opt.learning_rate.value.item(),
                "beta_1": opt.beta_1,
                "dropout": dropout.rate,
                "weights": values(self.model.weights),
                "optimizer": values(opt.variables),
            }
        )

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        c = self.claim  # reported and told by the member's callback, which runs first
        self.ends[(c.member, c.generation, c.step)] = {
            "weights": values(self.model.weights),
            "optimizer": values(self.model.optimizer.variables),
        }


def run(storage: str, recorder: Recorder, **settings: Any) -> gp.Result:
    pbt = gp.AskTell(
        SPACE,
        metric="val_loss",
        mode="min",
        population=POPULATION,
        ready=gp.Every(2),
        budget=gp.Budget(steps=BUDGET),
        seed=3,
        storage=storage,
        **settings,
    )
    ask = pbt.ask

    def asked(**kwargs: Any) -> Any:
        recorder.claim = ask(**kwargs)
        return recorder.claim

    pbt.ask = asked  # type: ignore[method-assign]
    with pbt:
        result: gp.Result = gpk.fit(
            pbt, model=make_model, hparams=HPARAMS, callbacks=[recorder], **DATA
        )
    return result


def equal(a: list[np.ndarray[Any, Any]], b: list[np.ndarray[Any, Any]]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[gp.Result, Recorder]:
    recorder = Recorder()
    folder = tmp_path_factory.mktemp("keras")
    return run(f"sqlite:///{folder / 'run.db'}", recorder), recorder


def test_after_an_exploit_the_values_in_effect_are_the_decided_ones(
    first_run: tuple[gp.Result, Recorder],
) -> None:
    result, rec = first_run
    exploits = [e for e in result.events if e.kind == "exploit"]
    assert exploits, "the run made no exploit: the test shows nothing"
    assert len({r["model"] for r in rec.rounds}) == POPULATION  # one model per member, ever
    lr_index = next(
        i for i, v in enumerate(make_model().optimizer.variables) if "learning_rate" in v.path
    )
    for e in exploits:
        after = next(
            r
            for r in rec.rounds
            if r["member"] == e.member and r["generation"] == e.data["generation"]
        )
        new = e.data["new_hparams"]
        # the decided values, read from the live optimizer and layers at the first batch
        assert after["learning_rate"] == np.float32(new["learning_rate"])
        assert after["beta_1"] == new["beta_1"]
        assert after["dropout"] == new["dropout"]
        assert after["step"] == e.data["donor_step"]  # it goes on from the donor's step
        # the donor's weights and optimizer variables as checkpointed, in place
        donor = rec.ends[(e.data["donor"], e.data["donor_generation"], e.data["donor_step"])]
        assert equal(after["weights"], donor["weights"])
        mine, theirs = list(after["optimizer"]), list(donor["optimizer"])
        assert mine.pop(lr_index) == np.float32(new["learning_rate"])  # the new one
        theirs.pop(lr_index)
        assert equal(mine, theirs)  # iterations, Adam's moments and velocities
        assert int(after["optimizer"][0]) == BATCHES * e.data["donor_step"]  # iterations


def test_no_member_restarts_from_step_0(first_run: tuple[gp.Result, Recorder]) -> None:
    """Each member reports each step once, in order, but after an exploit: it goes on
    from the donor's step (back, where the donor is behind it). Keras' epoch is the
    member's step throughout."""
    result, rec = first_run
    exploits = {
        (e.member, e.data["generation"]): e.data["donor_step"]
        for e in result.events
        if e.kind == "exploit"
    }
    for member, seen in rec.epochs.items():
        assert all(epoch == step for _, epoch, step in seen)
        assert seen[0] == (0, 0, 0)
        for (gen_a, _, a), (gen_b, _, b) in itertools.pairwise(seen):
            if gen_a == gen_b:
                assert b == a + 1
            else:
                assert b == exploits[(member, gen_b)]
        assert [s for _, _, s in seen].count(0) == 1  # from step 0 once
    # a member that goes on (no exploit) holds its own state: nothing reloaded, nothing lost
    held = [(r, rec.ends.get((r["member"], r["generation"], r["step"]))) for r in rec.rounds]
    assert any(own is not None for _, own in held)
    assert all(own is None or equal(r["weights"], own["weights"]) for r, own in held)
    assert all(m.step == BUDGET and m.status == "finished" for m in result.population)


def test_a_seeded_run_is_reproduced(first_run: tuple[gp.Result, Recorder], tmp_path: Path) -> None:
    first, _ = first_run
    second = run(f"sqlite:///{tmp_path / 'b.db'}", Recorder())
    assert [(r.member, r.step, r.metrics["val_loss"]) for r in first.reports] == [
        (r.member, r.step, r.metrics["val_loss"]) for r in second.reports
    ]
    assert [(e.kind, e.member, e.step, decided(e.data)) for e in first.events] == [
        (e.kind, e.member, e.step, decided(e.data)) for e in second.events
    ]


def decided(data: Any) -> Any:
    """An event's data but the checkpoint's id (random)."""
    return {k: v for k, v in data.items() if k != "checkpoint"} if isinstance(data, dict) else data


def test_a_resumed_run_continues_from_the_checkpoints(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'run.db'}"
    crashed = Recorder()
    crashed.fail_at = 2 * POPULATION * BATCHES + 5  # each member's first round told
    with pytest.raises(RuntimeError, match="went down"):
        run(storage, crashed)
    resumed = Recorder()
    result = run(storage, resumed)
    assert all(m.step == BUDGET and m.status == "finished" for m in result.population)
    firsts = {r["member"]: r for r in reversed(resumed.rounds)}
    assert sorted(firsts) == list(range(POPULATION))
    for r in firsts.values():
        assert r["step"] > 0  # from its checkpoint, not from step 0
        told = [  # its own checkpoint, or a donor's it was to exploit
            end
            for (whose, _, step), end in crashed.ends.items()
            if (whose, step) == r["checkpoint"]
        ]
        assert any(equal(r["weights"], end["weights"]) for end in told)


def test_an_optimizer_with_ema_keeps_its_trained_weights(tmp_path: Path) -> None:
    """Keras puts the averages into the model at the end of a fit; a round ends one."""
    rec = Recorder()
    pbt = gp.AskTell(
        SPACE,
        metric="val_loss",
        mode="min",
        population=2,
        ready=gp.Every(1),
        budget=gp.Budget(steps=3),
        seed=1,
    )
    ask = pbt.ask

    def asked(**kwargs: Any) -> Any:
        rec.claim = ask(**kwargs)
        return rec.claim

    pbt.ask = asked  # type: ignore[method-assign]

    def ema(**hparams: Any) -> Any:
        return make_model(**hparams, use_ema=True, ema_overwrite_frequency=None)

    with pbt:
        gpk.fit(pbt, model=ema, hparams=HPARAMS, callbacks=[rec], **DATA)
    held = [r for r in rec.rounds if (r["member"], r["generation"], r["step"]) in rec.ends]
    assert held
    for r in held:
        assert equal(r["weights"], rec.ends[(r["member"], r["generation"], r["step"])]["weights"])


def pbt_of(space: gp.Space = SPACE, population: int = 1) -> gp.AskTell:
    return gp.AskTell(
        space,
        metric="val_loss",
        population=population,
        ready=gp.Every(2),
        budget=gp.Budget(steps=4),
    )


def test_a_hyperparameter_that_maps_to_nothing_is_refused() -> None:
    with pbt_of() as pbt, pytest.raises(gp.InvalidArgumentError) as err:
        gpk.fit(pbt, model=make_model, **DATA)  # dropout: no attribute of Adam
    message = str(err.value)
    assert all(part in message for part in ("'dropout'", "Adam", "gpk.Layers"))
    with (
        pbt_of() as pbt,
        pytest.raises(gp.InvalidArgumentError, match="attribute of the model's Dense layers"),
    ):
        gpk.fit(pbt, model=make_model, hparams={"dropout": gpk.Layers(keras.layers.Dense, "p")})


def test_a_learning_rate_schedule_is_refused_with_the_fix() -> None:
    def scheduled(**hparams: Any) -> Any:
        model = make_model()
        schedule = keras.optimizers.schedules.ExponentialDecay(0.01, 10, 0.9)
        model.compile(optimizer=keras.optimizers.Adam(schedule), loss="mse")
        return model

    with pbt_of() as pbt, pytest.raises(gp.InvalidArgumentError, match="schedule") as err:
        gpk.fit(pbt, model=scheduled, hparams=HPARAMS, **DATA)
    assert all(part in str(err.value) for part in ("'learning_rate'", "gpk.Custom"))


def test_a_value_not_in_effect_after_it_is_set_raises() -> None:
    hparams = {**HPARAMS, "beta_1": gpk.Custom(set=lambda model, v: None, get=lambda model: 0.1)}
    with pbt_of() as pbt, pytest.raises(gp.HyperparameterNotAppliedError, match="beta_1"):
        gpk.fit(pbt, model=make_model, hparams=hparams, **DATA)


def test_a_fit_ending_before_the_round_is_an_error() -> None:
    with pbt_of() as pbt, pytest.raises(gp.TrainableError, match="epochs=1"):
        gpk.fit(pbt, model=make_model, hparams=HPARAMS, epochs=1, **DATA)


def test_initial_epoch_and_a_model_not_compiled_are_refused() -> None:
    with pbt_of() as pbt, pytest.raises(gp.InvalidArgumentError, match="initial_epoch"):
        gpk.fit(pbt, model=make_model, initial_epoch=3)
    with pbt_of() as pbt, pytest.raises(gp.InvalidArgumentError, match="compile"):
        gpk.fit(pbt, model=lambda **hp: keras.Sequential([keras.layers.Dense(1)]))


def test_the_pbt_example_adds_at_most_10_lines_to_the_plain_one() -> None:
    """examples/keras_pbt.py is examples/keras_plain.py with at most 10 lines added or
    changed (imports and blank lines count; the module docstring does not)."""
    plain, pbt = (code_lines(EXAMPLES / f"keras_{name}.py") for name in ("plain", "pbt"))
    added = [line for line in difflib.ndiff(plain, pbt) if line.startswith("+ ")]
    assert 0 < len(added) <= 10, added


def code_lines(path: Path) -> list[str]:
    """The file's lines after its module docstring."""
    return path.read_text().split('"""', 2)[2].splitlines()


def test_the_examples_run() -> None:
    import keras_plain

    assert 0.0 <= keras_plain.main(epochs=1) <= 1.0
    score = example.main(epochs=2, population=2)
    assert score is not None
    assert 0.0 <= score <= 1.0


def test_without_keras_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "keras", None)  # import now fails
    monkeypatch.delitem(sys.modules, "genepool.integrations.keras")
    with pytest.raises(gp.MissingDependencyError, match=r"pip install 'genepool\[keras\]'"):
        importlib.import_module("genepool.integrations.keras")


def test_keras_on_another_backend_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    monkeypatch.delitem(sys.modules, "genepool.integrations.keras")
    with pytest.raises(gp.InvalidArgumentError, match="KERAS_BACKEND=torch"):
        importlib.import_module("genepool.integrations.keras")
