"""The Lightning integration: exploits in place in the same trainer, the values in effect
the decided ones, no restart from step 0, a resumed run continues."""

from __future__ import annotations

import difflib
import importlib
import multiprocessing
import sys
from pathlib import Path
from typing import Any

import pytest

L = pytest.importorskip("lightning")
torch = pytest.importorskip("torch")

import genepool as gp  # noqa: E402
from genepool.integrations import lightning as gpl  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import lightning_pbt as example  # noqa: E402

# Lightning 2.6 on torch 2.13 warns of its own use of a deprecated torch name
pytestmark = pytest.mark.filterwarnings("ignore:.*treespec, LeafSpec.*:FutureWarning")

POPULATION, BUDGET = 4, 8
SPACE = gp.Space(lr=gp.Float(0.005, 0.5, log=True), momentum=gp.Float(0.5, 0.99))


class Recorded(example.Model):
    """The example's model, recording what each training step ran with."""

    made: list[Recorded] = []  # noqa: RUF012 (one list for the test's modules)
    fail_at: int | None = None  # raise at this many steps of all modules together
    steps = 0
    barrier: Any = None  # waited on at the first step (then forgotten)

    def __init__(self, **hparams: Any) -> None:
        super().__init__(**hparams)
        self.seen: list[dict[str, float]] = []
        Recorded.made.append(self)

    def training_step(self, batch: list[Any], i: int) -> Any:
        Recorded.steps += 1
        if Recorded.barrier is not None:
            barrier, Recorded.barrier = Recorded.barrier, None
            barrier.wait(120)
        if Recorded.fail_at is not None and Recorded.steps >= Recorded.fail_at:
            raise RuntimeError("the machine went down")
        group = self.trainer.optimizers[0].param_groups[0]
        sched = self.trainer.lr_scheduler_configs[0].scheduler
        callbacks = getattr(self.trainer, "callbacks", [])
        callback = next(c for c in callbacks if isinstance(c, gpl.Callback))
        assert callback.claim is not None
        self.seen.append(
            {
                "generation": float(callback.claim.generation),
                "global_step": float(self.trainer.global_step),
                "epoch": float(self.trainer.current_epoch),
                "base_lr": float(sched.base_lrs[0]),
                "lr": float(group["lr"]),
                "momentum": float(group["momentum"]),
                "weights": float(sum(p.detach().double().sum() for p in self.parameters())),
            }
        )
        return super().training_step(batch, i)


@pytest.fixture(autouse=True)
def _fresh() -> None:
    Recorded.made, Recorded.fail_at, Recorded.steps = [], None, 0


def trainer(callbacks: list[Any], max_epochs: int = BUDGET, **more: Any) -> Any:
    settings = {"limit_train_batches": 4, **more}
    return L.Trainer(
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        **settings,
    )


def run(storage: str, make_trainer: Any = trainer, **fit: Any) -> gp.Result:
    L.seed_everything(0, verbose=False)
    pbt = gp.AskTell(
        SPACE,
        metric="val_loss",
        mode="min",
        population=POPULATION,
        ready=gp.Every(2),
        budget=gp.Budget(steps=BUDGET),
        seed=3,
        storage=storage,
        **fit,
    )
    with pbt:
        return gpl.fit(pbt, module=Recorded, trainer=make_trainer, **example.loaders())


def test_exploits_happen_in_place_with_the_decided_values(tmp_path: Path) -> None:
    result = run(f"sqlite:///{tmp_path / 'run.db'}")
    exploits = [e for e in result.events if e.kind == "exploit"]
    assert exploits, "the run made no exploit: the test shows nothing"
    assert len(Recorded.made) == POPULATION  # one trainer and module per member, ever
    by_member: dict[int, Recorded] = {}
    for module in Recorded.made:  # each module's first claim is its member's
        by_member[len(by_member)] = module
    checked = 0
    for e in exploits:
        seen = by_member[e.member].seen
        # the first step after the exploit: the donor's counters, the decided values
        after = next(s for s in seen if s["generation"] == e.data["generation"])
        assert after["global_step"] == 4 * e.data["donor_step"]  # 4 batches an epoch
        new = e.data["new_hparams"]
        assert after["base_lr"] == pytest.approx(new["lr"], rel=1e-12)
        assert after["momentum"] == pytest.approx(new["momentum"], rel=1e-12)
        # the donor's weights as it went on from the same step (if it did)
        donor = [
            s for s in by_member[e.data["donor"]].seen if s["global_step"] == after["global_step"]
        ]
        checked += bool(donor)
        assert not donor or after["weights"] == donor[0]["weights"]
    assert checked, "no donor trained on from the step copied: the weights were not compared"
    for module in Recorded.made:
        steps = [s["global_step"] for s in module.seen]
        assert steps[0] == 0.0
        assert all(s > 0 for s in steps[1:])  # never from step 0 again
    assert all(m.step == BUDGET for m in result.members)


def test_exploits_at_validation_runs_in_the_middle_of_epochs(tmp_path: Path) -> None:
    """Validation every 4 batches of 8: half the rounds end in the middle of an epoch."""

    def mid_epoch(callbacks: list[Any]) -> Any:
        return trainer(callbacks, limit_train_batches=8, val_check_interval=4)

    result = run(f"sqlite:///{tmp_path / 'run.db'}", make_trainer=mid_epoch)
    exploits = [e for e in result.events if e.kind == "exploit"]
    assert exploits
    assert all(m.step == BUDGET for m in result.members)
    by_member = dict(enumerate(Recorded.made))
    for e in exploits:
        after = next(s for s in by_member[e.member].seen if s["generation"] == e.data["generation"])
        assert after["global_step"] == 4 * e.data["donor_step"]  # a validation per 4 batches
        assert after["base_lr"] == pytest.approx(e.data["new_hparams"]["lr"], rel=1e-12)


def test_a_seeded_run_is_reproduced(tmp_path: Path) -> None:
    """Each member's trainer keeps its own random states across the others' rounds: the
    same seed gives the same run."""
    first = run(f"sqlite:///{tmp_path / 'a.db'}")
    second = run(f"sqlite:///{tmp_path / 'b.db'}")
    assert [(r.member, r.step, r.metrics["val_loss"]) for r in first.reports] == [
        (r.member, r.step, r.metrics["val_loss"]) for r in second.reports
    ]
    assert [(e.kind, e.member, e.step) for e in first.events] == [
        (e.kind, e.member, e.step) for e in second.events
    ]


def test_a_member_restarts_from_its_checkpoint_not_from_step_0(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'run.db'}"
    Recorded.fail_at = 60
    with pytest.raises(RuntimeError, match="went down"):
        run(storage)
    Recorded.made, Recorded.fail_at = [], None
    result = run(storage)
    assert all(m.step == BUDGET for m in result.members)
    assert Recorded.made
    for module in Recorded.made:  # trainers made on resume start from a checkpoint
        assert module.seen[0]["global_step"] > 0


def pbt_of(space: gp.Space = SPACE, budget: int = BUDGET) -> gp.AskTell:
    return gp.AskTell(
        space, metric="val_loss", population=2, ready=gp.Every(2), budget=gp.Budget(steps=budget)
    )


def _fit_in_a_process(storage: str, barrier: Any, out: Any) -> None:
    Recorded.barrier = barrier  # neither trains on before the other holds a member
    run(storage)
    out.put([module.seen[0]["global_step"] for module in Recorded.made if module.seen])


def test_two_processes_fit_one_run(tmp_path: Path) -> None:
    """Members move between the processes: a trainer that finds its member trained
    elsewhere loads the newer checkpoint; no member starts from step 0 twice."""
    storage = f"sqlite:///{tmp_path / 'run.db'}"
    with gp.AskTell(
        SPACE,
        metric="val_loss",
        mode="min",
        population=POPULATION,
        ready=gp.Every(2),
        budget=gp.Budget(steps=BUDGET),
        seed=3,
        storage=storage,
    ):
        pass  # the run is created once, before both open it
    ctx = multiprocessing.get_context("spawn")
    out, barrier = ctx.Queue(), ctx.Barrier(2)
    procs = [ctx.Process(target=_fit_in_a_process, args=(storage, barrier, out)) for _ in "ab"]
    for p in procs:
        p.start()
    firsts = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert all(firsts)  # both processes trained members
    assert sum(map(len, firsts)) > POPULATION  # some member trained in both
    assert sorted(x for f in firsts for x in f).count(0.0) == POPULATION  # one fresh start each
    with gp.Result.open(storage) as result:
        assert all(m.step == BUDGET and m.status == "finished" for m in result.population)


def test_a_trainer_ending_before_the_budget_is_an_error() -> None:
    def short(callbacks: list[Any]) -> Any:
        return trainer(callbacks, max_epochs=3)

    with pbt_of() as pbt, pytest.raises(gp.TrainableError, match="max_epochs"):
        gpl.fit(pbt, module=Recorded, trainer=short, **example.loaders())


def test_a_trainer_without_its_callback_is_refused() -> None:
    with pbt_of() as pbt, pytest.raises(gp.InvalidArgumentError, match="callbacks"):
        gpl.fit(pbt, module=Recorded, trainer=lambda callbacks: trainer([]))


def test_ckpt_path_is_refused() -> None:
    with pbt_of() as pbt, pytest.raises(gp.InvalidArgumentError, match="ckpt_path"):
        gpl.fit(pbt, module=Recorded, trainer=trainer, ckpt_path="last")


def test_more_than_one_device_is_refused() -> None:
    def two(callbacks: list[Any]) -> Any:
        return L.Trainer(accelerator="cpu", devices=2, strategy="ddp", callbacks=callbacks)

    with pbt_of() as pbt, pytest.raises(gp.InvalidArgumentError, match="world size 2"):
        gpl.fit(pbt, module=Recorded, trainer=two)


def test_a_hyperparameter_no_optimizer_holds_must_be_mapped() -> None:
    space = gp.Space(lr=gp.Float(0.01, 0.1), dropout=gp.Float(0.0, 0.5))
    with pbt_of(space) as pbt, pytest.raises(gp.InvalidArgumentError, match="dropout"):
        gpl.fit(
            pbt, module=lambda lr, dropout: Recorded(lr=lr), trainer=trainer, **example.loaders()
        )


def test_the_pbt_example_adds_at_most_10_lines_to_the_plain_one() -> None:
    """examples/lightning_pbt.py is examples/lightning_plain.py with at most 10 lines
    added or changed (imports and blank lines count; the module docstring does not)."""
    root = Path(__file__).resolve().parents[2] / "examples"
    plain, pbt = (code_lines(root / f"lightning_{name}.py") for name in ("plain", "pbt"))
    diff = difflib.ndiff(plain, pbt)
    added = [line for line in diff if line.startswith("+ ")]
    assert 0 < len(added) <= 10, added


def code_lines(path: Path) -> list[str]:
    """The file's lines after its module docstring."""
    text = path.read_text()
    body = text.split('"""', 2)[2]
    return body.splitlines()


def test_without_lightning_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)  # import now fails
    monkeypatch.delitem(sys.modules, "genepool.integrations.lightning")
    with pytest.raises(gp.MissingDependencyError, match=r"pip install 'genepool\[lightning\]'"):
        importlib.import_module("genepool.integrations.lightning")
