"""The Hugging Face integration: exploits in place in the same Trainer, the values in
effect the decided ones (the rate and the schedule's base, weight decay on the decaying
groups only, warm-up), no restart from step 0, a resumed run continues."""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

import transformers  # noqa: E402

import genepool as gp  # noqa: E402
from genepool.integrations import huggingface as gph  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import huggingface_pbt as example  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")

POPULATION, BUDGET, EVAL_STEPS = 4, 8, 5
SPACE = gp.Space(
    learning_rate=gp.Float(1e-4, 3e-3, log=True),
    weight_decay=gp.Float(0.001, 0.1),
    warmup_steps=gp.Int(0, 10),
)


class Recorder(transformers.TrainerCallback):
    """What each optimizer step of one member's Trainer ran with."""

    made: list[Recorder] = []  # noqa: RUF012 (one list for the test's trainers)
    fail_at: int | None = None  # raise at this many steps of all trainers together
    steps = 0

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.member: gph.Callback | None = None
        Recorder.made.append(self)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        Recorder.steps += 1
        if Recorder.fail_at is not None and Recorder.steps >= Recorder.fail_at:
            raise RuntimeError("the machine went down")
        opt, sched, model = kw["optimizer"], kw["lr_scheduler"], kw["model"]
        assert self.member is not None
        self.seen.append(
            {
                "generation": self.member.claim.generation,
                "global_step": state.global_step,
                "base_lr": sched.base_lrs[0],
                "decays": [g["weight_decay"] for g in opt.param_groups],
                "warmup": sched.lr_lambdas[0].keywords["num_warmup_steps"],
                "weights": float(sum(p.detach().double().sum() for p in model.parameters())),
            }
        )


@pytest.fixture(autouse=True)
def _fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Recorder.made, Recorder.fail_at, Recorder.steps = [], None, 0
    monkeypatch.chdir(tmp_path)  # the Trainer makes its output_dir here


def trainer(callbacks: list[Any], max_steps: int = 3 * BUDGET * EVAL_STEPS) -> Any:
    recorder = Recorder()
    recorder.member = callbacks[0] if callbacks else None
    made = example.make_trainer(callbacks=[*callbacks, recorder])
    made.args.max_steps, made.args.eval_steps = max_steps, EVAL_STEPS
    return made


def run(storage: str) -> gp.Result:
    pbt = gp.AskTell(
        SPACE,
        metric="eval_loss",
        mode="min",
        population=POPULATION,
        ready=gp.Every(2),
        budget=gp.Budget(steps=BUDGET),
        seed=1,
        storage=storage,
    )
    with pbt:
        return gph.train(pbt, trainer=trainer)


def test_exploits_happen_in_place_with_the_decided_values(tmp_path: Path) -> None:
    result = run(f"sqlite:///{tmp_path / 'run.db'}")
    exploits = [e for e in result.events if e.kind == "exploit"]
    assert exploits, "the run made no exploit: the test shows nothing"
    assert len(Recorder.made) == POPULATION  # one Trainer per member, ever
    by_member = dict(enumerate(Recorder.made))
    checked = 0
    for e in exploits:
        after = next(s for s in by_member[e.member].seen if s["generation"] == e.data["generation"])
        assert after["global_step"] == EVAL_STEPS * e.data["donor_step"]
        new = e.data["new_hparams"]
        assert after["base_lr"] == pytest.approx(new["learning_rate"], rel=1e-12)
        decays = after["decays"]  # the decaying group, and the one left undecayed
        assert decays[0] == pytest.approx(new["weight_decay"], rel=1e-12)
        assert decays[1] == 0.0
        assert after["warmup"] == new["warmup_steps"]
        donor = [
            s for s in by_member[e.data["donor"]].seen if s["global_step"] == after["global_step"]
        ]
        checked += bool(donor)
        assert not donor or after["weights"] == donor[0]["weights"]
    assert checked, "no donor trained on from the step copied: the weights were not compared"
    for recorder in Recorder.made:
        steps = [s["global_step"] for s in recorder.seen]
        assert steps[0] == 0
        assert all(s > 0 for s in steps[1:])
    assert all(m.step == BUDGET for m in result.members)


def test_a_member_restarts_from_its_checkpoint_not_from_step_0(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'run.db'}"
    Recorder.fail_at = 70
    with pytest.raises(RuntimeError, match="went down"):
        run(storage)
    Recorder.made, Recorder.fail_at = [], None
    result = run(storage)
    assert all(m.step == BUDGET for m in result.members)
    assert Recorder.made
    assert all(r.seen[0]["global_step"] > 0 for r in Recorder.made)


def pbt_of() -> gp.AskTell:
    return gp.AskTell(
        SPACE, metric="eval_loss", population=2, ready=gp.Every(2), budget=gp.Budget(steps=4)
    )


def test_hugging_face_checkpoints_are_refused() -> None:
    def saving(callbacks: list[Any]) -> Any:
        made = trainer(callbacks)
        made.args.save_strategy = "steps"
        return made

    with pbt_of() as pbt, pytest.raises(gp.InvalidArgumentError, match="save_strategy"):
        gph.train(pbt, trainer=saving)


def test_a_trainer_without_its_callback_is_refused() -> None:
    with pbt_of() as pbt, pytest.raises(gp.InvalidArgumentError, match="callback"):
        gph.train(pbt, trainer=lambda callbacks: trainer([]))


def test_a_hyperparameter_the_trainer_does_not_read_must_be_mapped() -> None:
    space = gp.Space(learning_rate=gp.Float(1e-4, 1e-3), dropout=gp.Float(0.0, 0.5))
    pbt = gp.AskTell(
        space, metric="eval_loss", population=2, ready=gp.Every(2), budget=gp.Budget(steps=4)
    )
    with pbt, pytest.raises(gp.InvalidArgumentError, match="dropout"):
        gph.train(pbt, trainer=trainer)


def test_the_pbt_example_adds_at_most_10_lines_to_the_plain_one() -> None:
    root = Path(__file__).resolve().parents[2] / "examples"
    plain, pbt = (
        (root / f"huggingface_{name}.py").read_text().split('"""', 2)[2].splitlines()
        for name in ("plain", "pbt")
    )
    added = [line for line in difflib.ndiff(plain, pbt) if line.startswith("+ ")]
    assert 0 < len(added) <= 10, added


def test_without_transformers_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import now fails
    monkeypatch.delitem(sys.modules, "genepool.integrations.huggingface")
    with pytest.raises(gp.MissingDependencyError, match=r"pip install 'genepool\[huggingface\]'"):
        importlib.import_module("genepool.integrations.huggingface")
