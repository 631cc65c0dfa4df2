"""Reinforcement learning with PBT: an advantage actor-critic (A2C) on Acrobot-v1.

The paper's first experiment (Jaderberg et al. 2017, section 4.1) at laptop scale. Each
member is an A2C agent written in torch (separate policy and value MLPs, Adam, GAE, a
few Acrobot-v1 environments in a ``gymnasium.vector.SyncVectorEnv``). PBT tunes:

- ``lr``: Adam's learning rate (log scale);
- ``entropy``: the entropy cost (log scale);
- ``horizon``: the discount's horizon, ``gamma = 1 - 1 / horizon`` (log scale, so that
  the paper's x0.8 / x1.2 perturbation is a sensible move: gamma itself sits too close
  to 1 for a multiplicative step).

Why Acrobot and not CartPole: on CartPole-v1 at this budget random search's best member
reaches the maximum return (500) as PBT's does, so nothing can be compared. Acrobot-v1's
return is minus the steps taken to swing the arm up (a good policy needs 60 to 80; -500 when the
time limit cuts the episode): no ceiling is within easy reach. (The ``smoke`` size, for
CI, runs CartPole-v1, whose first episodes end within tens of steps.)

One ``step`` is one rollout batch (``envs x rollout`` environment steps) and one gradient
update; a member is ready every ``ready`` steps, so every fixed number of environment
steps, after a burn-in of ``burn_in`` steps. (Without the burn-in, the population copied
whichever member first swung up by luck, at a time when every return was still about
-500, and the t-test, fed with overlapping running means, called that certain: one of the
first five seeds then ended on a slow learner's line.)

The score (``return``) is the mean undiscounted return of the member's last 10 finished
episodes (before its first episode ends: the mean running return). Selection is the
paper's rule for RL, Welch's t-test on the member's recent scores against a random other
member's (``gp.WelchTTest``), with the perturb explore (or a resample, with probability
0.25; examples/_methods.py). The finished episodes' returns and the step counters travel
with the weights in the checkpoint; the environments do not: after an exploit or a resume
they are reset with a fresh seed from the member's random stream.

Every random draw (weights, environment seeds, actions) comes from ``member.rng``: a
seeded serial run is exactly reproducible.

Run: python examples/rl.py --method pbt --seed 0 [--size full] [--workers 2]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import _cli
import _methods
import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from torch import nn

import genepool as gp
from genepool.integrations import torch as gpt

TASK = "rl"
METRIC = "return"
MODE: Literal["max", "min"] = "max"
#: The task (see the module's docstring for why not CartPole-v1).
ENV_ID = "Acrobot-v1"
#: The range of an episode's return, per task.
RETURN_RANGE = {"Acrobot-v1": (-500.0, 0.0), "CartPole-v1": (0.0, 500.0)}
#: How many finished episodes the score averages (and the checkpoint keeps).
EPISODES = 10

SPACE = gp.Space(
    lr=gp.Float(1e-5, 1e-2, log=True),
    entropy=gp.Float(1e-4, 1e-1, log=True),
    horizon=gp.Float(10.0, 1000.0, log=True),
)


@dataclass(frozen=True)
class Size:
    """One size of the experiment: the population, its budget and the agent's batch."""

    population: int
    steps: int  # budget: updates per member (each one rollout batch)
    ready: int  # ready every this many updates
    burn_in: int  # no ready before this many updates
    envs: int  # parallel environments
    rollout: int  # environment steps per environment per update
    env_id: str = ENV_ID
    hidden: int = 64
    gae_lambda: float = 0.95
    value_cost: float = 0.5
    max_grad_norm: float = 0.5

    @property
    def env_steps(self) -> int:
        """Environment steps per member over the whole budget."""
        return self.steps * self.envs * self.rollout

    def as_dict(self) -> dict[str, Any]:
        return {
            "env_id": self.env_id,
            "population": self.population,
            "steps": self.steps,
            "ready": self.ready,
            "burn_in": self.burn_in,
            "envs": self.envs,
            "rollout": self.rollout,
            "env_steps_per_member": self.env_steps,
            "env_steps_per_ready": self.ready * self.envs * self.rollout,
            "hidden": self.hidden,
            "gae_lambda": self.gae_lambda,
        }


_SIZES = {
    # CartPole's first episodes end within tens of steps (Acrobot's within 500): a few
    # seconds show finished episodes, t-tests and exploits
    "smoke": Size(
        population=4,
        steps=12,
        ready=3,
        burn_in=0,
        envs=4,
        rollout=16,
        hidden=16,
        env_id="CartPole-v1",
    ),
    "full": Size(population=8, steps=600, ready=20, burn_in=100, envs=8, rollout=32),
}
SIZES: dict[str, dict[str, Any]] = {name: s.as_dict() for name, s in _SIZES.items()}


class ActorCritic(nn.Module):
    """Separate policy and value networks (two tanh layers each)."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: int) -> None:
        super().__init__()
        self.policy = nn.Sequential(
            nn.Linear(obs_dim, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, n_actions),
        )
        self.value = nn.Sequential(
            nn.Linear(obs_dim, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, 1),
        )

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.policy(obs), self.value(obs).squeeze(-1)


def make_envs(n: int, env_id: str = ENV_ID) -> SyncVectorEnv:
    """``n`` environments; a finished one is reset within the same step."""
    return SyncVectorEnv(
        [lambda: gym.make(env_id) for _ in range(n)], autoreset_mode=AutoresetMode.SAME_STEP
    )


def sample_actions(logits: torch.Tensor, rng: np.random.Generator) -> np.ndarray:
    """One action per row of ``logits``, drawn from its softmax with ``rng`` (inverse CDF)."""
    probs = torch.softmax(logits, dim=-1).numpy().astype(np.float64)
    cdf = np.cumsum(probs, axis=-1)
    cdf[:, -1] = 1.0
    u = rng.random(len(cdf))
    actions: np.ndarray = np.argmax(cdf > u[:, None], axis=-1).astype(np.int64)
    return actions


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    last_value: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and value targets for a ``[time, env]`` rollout.

    ``dones[t]`` marks that the episode ended at step ``t`` (no bootstrap across it);
    a truncated episode's bootstrap is already folded into its reward.
    """
    steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(last_value)
    next_value = last_value
    for t in reversed(range(steps)):
        live = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * live - values[t]
        running = delta + gamma * lam * live * running
        advantages[t] = running
        next_value = values[t]
    return advantages, advantages + values


def recent_score(returns: deque[float], running: np.ndarray) -> float:
    """The mean return of the last finished episodes (before any: of the running ones)."""
    if returns:
        return float(np.mean(returns))
    return float(np.mean(running))


class A2C(gpt.TorchTrainable):
    """An A2C member; ``size`` is set by :func:`trainable` (one subclass per size)."""

    size: ClassVar[Size] = _SIZES["smoke"]

    def build(self, hparams: Mapping[str, Any]) -> gpt.TorchState:
        torch.set_num_threads(1)
        cfg = self.size
        self.envs = make_envs(cfg.envs, cfg.env_id)
        obs_dim = int(np.prod(self.envs.single_observation_space.shape or (1,)))
        n_actions = int(getattr(self.envs.single_action_space, "n", 2))
        # the weights' initial draw comes from the member's stream; the global one is kept
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.member.rng.integers(2**62)))
            self.model = ActorCritic(obs_dim, n_actions, cfg.hidden)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=hparams["lr"], eps=1e-5)
        self.entropy = float(hparams["entropy"])
        self.horizon = float(hparams["horizon"])
        self.returns: deque[float] = deque(maxlen=EPISODES)
        self.running = np.zeros(cfg.envs)
        self.obs: np.ndarray | None = None  # None: reset the environments before stepping
        return gpt.TorchState(
            models={"model": self.model},
            optimizers={"opt": self.opt},
            hparams={
                "lr": gpt.Optimizer("opt", "lr"),
                "entropy": gpt.Custom(self._set_entropy, lambda s: self.entropy),
                "horizon": gpt.Custom(self._set_horizon, lambda s: self.horizon),
            },
            rng=False,  # every draw comes from member.rng, which genepool saves itself
        )

    def _set_entropy(self, state: gpt.TorchState, value: float) -> None:
        self.entropy = float(value)

    def _set_horizon(self, state: gpt.TorchState, value: float) -> None:
        self.horizon = float(value)

    @property
    def gamma(self) -> float:
        return 1.0 - 1.0 / self.horizon

    # -- the weights travel with the episode statistics; the environments are reset -----
    def save(self) -> dict[str, Any]:
        return {"torch": self.state.state_dict(), "returns": list(self.returns)}

    def load(self, state: Any) -> None:
        self.state.load_state_dict(state["torch"])
        self.returns = deque((float(r) for r in state["returns"]), maxlen=EPISODES)
        self.obs = None  # a fresh seed from the (reseeded) member stream at the next step

    def _reset(self) -> np.ndarray:
        seed = int(self.member.rng.integers(2**31 - 1))
        obs, _ = self.envs.reset(seed=seed)
        self.running = np.zeros(self.size.envs)
        return np.asarray(obs, dtype=np.float32)

    # -- one rollout batch and one update ------------------------------------------------
    def step(self) -> dict[str, float]:
        cfg = self.size
        rng = self.member.rng
        gamma = self.gamma
        obs = self._reset() if self.obs is None else self.obs
        n, t_max = cfg.envs, cfg.rollout
        all_obs = np.zeros((t_max, n, obs.shape[-1]), dtype=np.float32)
        actions = np.zeros((t_max, n), dtype=np.int64)
        rewards = np.zeros((t_max, n), dtype=np.float32)
        dones = np.zeros((t_max, n), dtype=np.float32)
        model = self.model
        for t in range(t_max):
            all_obs[t] = obs
            with torch.no_grad():
                logits = model.policy(torch.from_numpy(obs))
            act = sample_actions(logits, rng)
            next_obs, reward, term, trunc, info = self.envs.step(act)
            reward = np.asarray(reward, dtype=np.float64)
            self.running += reward
            done = np.logical_or(term, trunc)
            boot = reward.copy()
            cut = np.logical_and(trunc, np.logical_not(term))
            if cut.any():  # a time limit is no failure: bootstrap from the last state
                final = np.stack([info["final_obs"][i] for i in np.flatnonzero(cut)])
                with torch.no_grad():
                    v_final = model.value(torch.from_numpy(final.astype(np.float32)))
                boot[cut] += gamma * v_final.squeeze(-1).numpy()
            for i in np.flatnonzero(done):
                self.returns.append(float(self.running[i]))
                self.running[i] = 0.0
            actions[t], rewards[t], dones[t] = act, boot, done
            obs = np.asarray(next_obs, dtype=np.float32)
        self.obs = obs

        obs_t = torch.from_numpy(all_obs)
        logits, values = model(obs_t)
        with torch.no_grad():
            last_value = model.value(torch.from_numpy(obs)).squeeze(-1)
            adv, target = gae(
                torch.from_numpy(rewards),
                values.detach(),
                torch.from_numpy(dones),
                last_value,
                gamma,
                cfg.gae_lambda,
            )
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        logp = torch.log_softmax(logits, dim=-1)
        taken = logp.gather(-1, torch.from_numpy(actions).unsqueeze(-1)).squeeze(-1)
        entropy = -(logp.exp() * logp).sum(-1).mean()
        policy_loss = -(adv * taken).mean()
        value_loss = 0.5 * (target - values).pow(2).mean()
        loss = policy_loss + cfg.value_cost * value_loss - self.entropy * entropy
        self.opt.zero_grad()
        loss.backward()
        # each network's gradient is clipped on its own, so that large value errors (a
        # long horizon's returns) never scale the policy's step down to nothing
        nn.utils.clip_grad_norm_(model.policy.parameters(), cfg.max_grad_norm)
        nn.utils.clip_grad_norm_(model.value.parameters(), cfg.max_grad_norm)
        self.opt.step()

        counters = self.state.counters
        counters["env_steps"] = counters.get("env_steps", 0) + n * t_max
        counters["episodes"] = counters.get("episodes", 0) + int(dones.sum())
        return {
            METRIC: recent_score(self.returns, self.running),
            "env_steps": counters["env_steps"],
            "episodes": counters["episodes"],
            "policy_entropy": float(entropy.detach()),
        }


def trainable(size: str | Size) -> type[A2C]:
    """The :class:`A2C` trainable of a size (a name in :data:`SIZES`, or a :class:`Size`)."""
    cfg = _size(size)
    name = size if isinstance(size, str) else "custom"
    return type(f"A2C_{name}", (A2C,), {"size": cfg, "__module__": __name__})


def _size(size: str | Size) -> Size:
    if isinstance(size, Size):
        return size
    if size not in _SIZES:
        raise ValueError(f"size must be one of {sorted(_SIZES)}, got {size!r}")
    return _SIZES[size]


def run(
    *,
    method: str,
    seed: int,
    size: str = "full",
    workers: int = 1,
    storage: str | None = None,
    progress: bool = False,
    population: int | None = None,
) -> gp.Result:
    """One run of ``method`` (see examples/_methods.py: ``"pbt"``, ``"random"``, ...).

    Every method trains the same population (``population``, default the size's) with
    the same space, ready interval and budget; only the decision at ready differs. PBT's
    exploit is the paper's Welch t-test on the last 10 episodes' returns.
    """
    policy = _methods.policy(method, select=gp.WelchTTest(window=10))
    cfg = _size(size)
    return gp.run(
        trainable(size),
        SPACE,
        metric=METRIC,
        mode=MODE,
        population=population or cfg.population,
        ready=gp.Every(cfg.ready, burn_in=cfg.burn_in),
        budget=gp.Budget(steps=cfg.steps),
        **policy,
        seed=seed,
        name=f"{TASK}-{method}-{seed}",
        storage=storage,
        workers=workers,
        progress=progress,
    )


def main() -> None:
    """The command line: ``--method``, ``--seed``, ``--size``, ``--workers`` (see _cli)."""
    _cli.main(doc=__doc__ or TASK, task=TASK, metric=METRIC, sizes=_SIZES, run=run)


if __name__ == "__main__":
    main()
