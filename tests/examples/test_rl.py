"""examples/rl.py: A2C on Acrobot with PBT, end to end at the smoke size, and its pieces."""

from __future__ import annotations

import copy
import math
import sys
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gymnasium")
pytest.importorskip("scipy")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

import rl  # noqa: E402

import genepool as gp  # noqa: E402
from tests._golden import check_golden  # noqa: E402

LOW, HIGH = rl.RETURN_RANGE[rl.SIZES["smoke"]["env_id"]]
#: CartPole's episodes are short at first: a quick size to watch episodes finish.
CARTPOLE = rl.Size(
    population=1, steps=1, ready=1, burn_in=0, envs=4, rollout=16, hidden=16, env_id="CartPole-v1"
)


@pytest.fixture(scope="module")
def pbt() -> gp.Result:
    return rl.run(method="pbt", seed=0, size="smoke")


@pytest.fixture(scope="module")
def random_search() -> gp.Result:
    return rl.run(method="random", seed=0, size="smoke")


def test_the_interface() -> None:
    assert rl.TASK == "rl"
    assert rl.MODE == "max"
    assert {"smoke", "full"} <= set(rl.SIZES)
    for size in rl.SIZES.values():
        assert size["population"] >= 2
        assert size["steps"] % size["ready"] == 0
    assert rl.SIZES["full"]["env_id"] == rl.ENV_ID == "Acrobot-v1"
    assert rl.SIZES["full"]["population"] == 8
    with pytest.raises(ValueError, match="method"):
        rl.run(method="grid", seed=0, size="smoke")


def test_an_acrobot_member_trains_and_scores_in_range() -> None:
    size = rl.Size(population=1, steps=1, ready=1, burn_in=0, envs=2, rollout=8, hidden=16)
    agent = make_member(size)
    low, high = rl.RETURN_RANGE["Acrobot-v1"]
    for _ in range(2):
        metrics = agent.step()
        assert low <= metrics[rl.METRIC] <= high
    assert metrics[rl.METRIC] == -16.0  # no episode has ended: the running return


def test_pbt_runs_end_to_end_exploits_and_has_a_schedule(pbt: gp.Result) -> None:
    smoke = rl.SIZES["smoke"]
    score = pbt.best.score
    assert score is not None
    assert math.isfinite(score)
    assert LOW <= score <= HIGH
    assert len(pbt.members) == smoke["population"]
    assert all(m.step == smoke["steps"] for m in pbt.members)
    assert any(e.kind == "exploit" for e in pbt.events)
    schedule = pbt.schedule()
    assert schedule.final_step == smoke["steps"]
    assert set(schedule.at(0)) == {"lr", "entropy", "horizon"}
    frame = pbt.history_frame()
    # the counters travel with the weights: a member's environment steps match its step
    per_step = smoke["envs"] * smoke["rollout"]
    assert (frame["env_steps"] == frame["step"] * per_step).all()


def test_random_search_is_the_same_population_without_exploits(
    pbt: gp.Result, random_search: gp.Result
) -> None:
    score = random_search.best.score
    assert score is not None
    assert math.isfinite(score)
    assert LOW <= score <= HIGH
    assert not [e for e in random_search.events if e.kind in ("exploit", "explore")]
    # the same seed samples the same starting population, which trains the same first step
    first_pbt = {r["member"]: r for r in pbt.history_frame().to_dict("records") if r["step"] == 1}
    first_rnd = {
        r["member"]: r for r in random_search.history_frame().to_dict("records") if r["step"] == 1
    }
    for member, row in first_rnd.items():
        assert row["hp.lr"] == first_pbt[member]["hp.lr"]
        assert row[rl.METRIC] == first_pbt[member][rl.METRIC]


def test_a_seeded_serial_run_is_reproducible(pbt: gp.Result) -> None:
    again = rl.run(method="pbt", seed=0, size="smoke")
    assert again.best.score == pbt.best.score
    assert [m.hparams for m in again.members] == [m.hparams for m in pbt.members]
    a = pbt.history_frame()[["member", "step", rl.METRIC]].to_numpy()
    b = again.history_frame()[["member", "step", rl.METRIC]].to_numpy()
    assert np.array_equal(a, b)


# -- the pieces ---------------------------------------------------------------------------
def test_gae_with_lambda_one_is_the_discounted_return_and_stops_at_an_episode_end() -> None:
    rewards = torch.tensor([[1.0], [1.0], [1.0]])
    values = torch.zeros(3, 1)
    dones = torch.tensor([[0.0], [1.0], [0.0]])
    last = torch.tensor([10.0])
    adv, target = rl.gae(rewards, values, dones, last, gamma=0.5, lam=1.0)
    # episode 1: steps 0-1 end at 1 (no bootstrap); episode 2: step 2 bootstraps from 10
    assert adv[:, 0].tolist() == pytest.approx([1.5, 1.0, 6.0])
    assert torch.equal(adv, target)  # values are zero
    # lambda 0 is the one-step TD error
    values = torch.tensor([[1.0], [2.0], [3.0]])
    adv, _ = rl.gae(rewards, values, dones, last, gamma=0.5, lam=0.0)
    assert adv[:, 0].tolist() == pytest.approx([1 + 0.5 * 2 - 1, 1 - 2, 1 + 0.5 * 10 - 3])


def test_actions_follow_the_softmax_and_come_from_the_given_stream() -> None:
    logits = torch.log(torch.tensor([[0.2, 0.8]])).repeat(20_000, 1)
    actions = rl.sample_actions(logits, np.random.default_rng(0))
    assert set(np.unique(actions)) == {0, 1}
    assert actions.mean() == pytest.approx(0.8, abs=0.01)
    again = rl.sample_actions(logits, np.random.default_rng(0))
    assert np.array_equal(actions, again)
    certain = rl.sample_actions(torch.tensor([[0.0, -1e9, -1e9]] * 50), np.random.default_rng(1))
    assert (certain == 0).all()


def test_the_score_is_the_mean_of_the_last_finished_episodes() -> None:
    returns: deque[float] = deque(maxlen=rl.EPISODES)
    for r in range(1, 21):
        returns.append(float(r))
    assert rl.recent_score(returns, np.zeros(4)) == pytest.approx(np.mean(range(11, 21)))
    # before any episode has finished: the running returns
    assert rl.recent_score(deque(), np.array([3.0, 5.0])) == 4.0


def make_member(size: str | rl.Size = "smoke", seed: int = 0, **hparams: Any) -> rl.A2C:
    hp = {"lr": 1e-3, "entropy": 1e-2, "horizon": 100.0, **hparams}
    agent = rl.trainable(size)()
    agent.member = gp.Member(id=0, hparams=hp, rng=np.random.default_rng(seed))
    agent.setup(hp)
    return agent


def test_episode_returns_travel_with_the_weights_and_the_envs_are_reset() -> None:
    donor = make_member(CARTPOLE, seed=1)
    for _ in range(6):
        metrics = donor.step()
    saved = donor.save()
    assert len(saved["returns"]) == rl.EPISODES  # CartPole's first episodes are short
    assert metrics[rl.METRIC] == pytest.approx(np.mean(saved["returns"]))

    me = make_member(CARTPOLE, seed=2, lr=3e-3)
    me.step()
    me.load(saved)
    me.apply_hparams({"lr": 5e-4, "entropy": 2e-3, "horizon": 50.0})
    assert me.hparams_in_effect() == {"lr": 5e-4, "entropy": 2e-3, "horizon": 50.0}
    assert me.gamma == pytest.approx(0.98)
    assert list(me.returns) == saved["returns"]
    assert me.state.counters == donor.state.counters
    assert me.obs is None  # the environments start again, seeded from the member's stream
    for a, b in zip(me.model.parameters(), donor.model.parameters(), strict=True):
        assert torch.equal(a, b)
    metrics = me.step()
    assert metrics["env_steps"] == 7 * CARTPOLE.envs * CARTPOLE.rollout


def test_a_time_limit_bootstraps_and_a_failure_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """An episode cut by the time limit adds gamma * V(final state) to its last reward."""
    agent = make_member(CARTPOLE, horizon=10.0)  # gamma 0.9; a reward of 1 a step
    before = copy.deepcopy(agent.model)  # the rollout's values come from these weights
    finals: list[np.ndarray] = []
    real_step = agent.envs.step

    def step(actions: Any) -> Any:
        obs, reward, term, trunc, _ = real_step(actions)
        term, trunc = np.zeros_like(term), np.zeros_like(trunc)
        trunc[0] = True  # env 0 hits the time limit at every step
        term[1] = True  # env 1 fails at every step; the others never end
        final = np.empty(len(obs), dtype=object)
        final[0] = obs[0] + 1.0
        finals.append(final[0])
        return obs, reward, term, trunc, {"final_obs": final, "_final_obs": trunc.copy()}

    monkeypatch.setattr(agent.envs, "step", step)
    rewards: list[np.ndarray] = []
    real_gae = rl.gae

    def spy(r: Any, *args: Any, **kwargs: Any) -> Any:
        rewards.append(r.numpy().copy())
        return real_gae(r, *args, **kwargs)

    monkeypatch.setattr(rl, "gae", spy)
    agent.step()
    with torch.no_grad():
        v = before.value(torch.from_numpy(np.stack(finals).astype(np.float32))).squeeze(-1)
    (r,) = rewards
    assert r[:, 0] == pytest.approx((1.0 + 0.9 * v).numpy(), rel=1e-5)
    assert np.all(r[:, 1:] == 1.0)  # no bootstrap at a failure, nor where nothing ended
    # the recorded returns are undiscounted rewards, with no bootstrap in them
    assert list(agent.returns) == [1.0] * rl.EPISODES


def test_the_seeded_run_matches_its_golden_file(pbt: gp.Result) -> None:
    """Its lineage and scores, as before issue 15 rewrote the round (tests/_golden.py)."""
    check_golden(pbt, rl.METRIC, "rl")
