"""The toy example of the PBT paper (Jaderberg et al. 2017, Figure 2), with genepool.

theta = (theta0, theta1) starts at (0.9, 0.9). The true objective is
Q(theta) = 1.2 - theta0^2 - theta1^2. Each member does gradient ascent (step size 0.01) on
the surrogate Qhat(theta | h) = 1.2 - h0 theta0^2 - h1 theta1^2. Two members start with
h = (1, 0) and h = (0, 1); every 4 steps a member compares itself with the other: exploit
copies theta and h from the better one, explore adds Gaussian noise (sigma 0.1) to h.

Four variants over 20 seeds: PBT (exploit and explore), exploit only, explore only, and grid
search (neither). Prints one JSON object per variant, then (with matplotlib) writes the
figure: theta over the contours of Q, and Q against steps. Then the report of the PBT run
(seed 0): the HTML file (genepool.analysis.write_report) and, with matplotlib, its overview
figure: Q of both members, the lineage tree and the schedule of h found.

Run: python examples/toy.py [--seeds 20] [--figure docs/toy.png] [--no-figure]
[--report artifacts/toy_report.html] [--report-figure docs/toy_report.png] [--no-report]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

import genepool as gp

STEPS = 200
LR = 0.01
START = (0.9, 0.9)
SPACE = gp.Space(h0=gp.Float(0.0, 1.0), h1=gp.Float(0.0, 1.0))
INITIAL = [{"h0": 1.0, "h1": 0.0}, {"h0": 0.0, "h1": 1.0}]


def q_true(theta: np.ndarray) -> float:
    """The objective we care about."""
    return 1.2 - float(theta[0] ** 2 + theta[1] ** 2)


class Toy(gp.Trainable):
    """Gradient ascent on the surrogate Qhat(theta | h)."""

    def setup(self, hparams: Mapping[str, Any]) -> None:
        self.theta = np.array(START)
        self.apply_hparams(hparams)

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.h = np.array([hparams["h0"], hparams["h1"]])

    def hparams_in_effect(self) -> Mapping[str, Any]:
        return {"h0": float(self.h[0]), "h1": float(self.h[1])}

    def step(self) -> dict[str, float]:
        # d Qhat / d theta = -2 h theta
        self.theta = self.theta + LR * (-2.0 * self.h * self.theta)
        return {"Q": q_true(self.theta), "theta0": self.theta[0], "theta1": self.theta[1]}

    def save(self) -> dict[str, Any]:
        return {"theta": self.theta.copy()}

    def load(self, state: Mapping[str, Any]) -> None:
        self.theta = np.array(state["theta"])


VARIANTS: dict[str, dict[str, Any]] = {
    "pbt": {"exploit": gp.Truncation(), "explore": gp.GaussianNoise(0.1)},
    "exploit_only": {"exploit": gp.Truncation(), "explore": None},
    "explore_only": {"exploit": None, "explore": gp.GaussianNoise(0.1)},
    "grid_search": {"exploit": None, "explore": None},
}


def run_variant(variant: str, seed: int, *, population: int = 2, steps: int = STEPS) -> gp.Result:
    """One run of a variant; the population's first two members start as in the paper."""
    options = VARIANTS[variant]
    return gp.run(
        Toy,
        SPACE,
        metric="Q",
        population=population,
        initial=INITIAL[:population],
        ready=gp.Every(4),
        budget=gp.Budget(steps=steps),
        exploit=options["exploit"],
        explore=options["explore"],
        seed=seed,
        synchronous=True,  # as in the paper's figure: both members compare the same round
    )


def summarise(seeds: int) -> dict[str, dict[str, Any]]:
    """Run every variant over ``seeds`` seeds; the best final Q of each run."""
    out: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        finals = [run_variant(variant, seed).best.score for seed in range(seeds)]
        values = [float(v) for v in finals if v is not None]
        out[variant] = {
            "variant": variant,
            "seeds": seeds,
            "mean_best_Q": statistics.fmean(values),
            "median_best_Q": statistics.median(values),
            "min_best_Q": min(values),
            "max_best_Q": max(values),
        }
    return out


def figure(path: Path, seed: int = 0) -> None:
    """Theta trajectories over the contours of Q, and Q against steps, per variant."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure (pip install 'genepool[plot]')")
        return
    fig, axes = plt.subplots(2, 4, figsize=(16, 7.5))
    grid = np.linspace(0.0, 1.0, 200)
    xx, yy = np.meshgrid(grid, grid)
    qq = 1.2 - xx**2 - yy**2
    for col, variant in enumerate(VARIANTS):
        result = run_variant(variant, seed)
        top, bottom = axes[0, col], axes[1, col]
        top.contourf(xx, yy, qq, levels=20, cmap="viridis", alpha=0.6)
        for member in range(2):
            rows = [r for r in result.records() if r["member"] == member]
            rows.sort(key=lambda r: r["time"])
            t0 = [START[0]] + [r["theta0"] for r in rows]
            t1 = [START[1]] + [r["theta1"] for r in rows]
            top.plot(t0, t1, ".", ms=2.5, label=f"member {member}")
            bottom.plot(
                [r["step"] for r in rows],
                [r["Q"] for r in rows],
                ".",
                ms=2.5,
                label=f"member {member}",
            )
        top.set(title=variant.replace("_", " "), xlabel="θ0", ylabel="θ1", xlim=(0, 1), ylim=(0, 1))
        bottom.set(xlabel="step", ylabel="Q(θ)", ylim=(-0.45, 1.25))
        bottom.axhline(1.2, color="grey", lw=0.5)
        top.legend(loc="lower left", fontsize=7)
    fig.suptitle(f"PBT toy example (paper Fig. 2), seed {seed}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"figure written to {path}")


def report(html: Path, figure: Path | None, seed: int = 0) -> None:
    """The PBT run's report (HTML) and, with matplotlib, its overview figure (PNG)."""
    from genepool.analysis import plot_overview, write_report

    result = run_variant("pbt", seed)
    title = f"PBT on the paper's toy example (Figure 2), seed {seed}"
    print(f"report written to {write_report(result, html, title=title)}")
    if figure is None:
        return
    try:
        print(f"report figure written to {plot_overview(result, figure, title=title)}")
    except ImportError:
        print("matplotlib is not installed: no report figure (pip install 'genepool[plot]')")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--figure", type=Path, default=Path("artifacts/toy.png"))
    parser.add_argument("--no-figure", action="store_true")
    parser.add_argument("--report", type=Path, default=Path("artifacts/toy_report.html"))
    parser.add_argument("--report-figure", type=Path, default=Path("artifacts/toy_report.png"))
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args()
    for summary in summarise(args.seeds).values():
        print(json.dumps(summary))
    if not args.no_figure:
        figure(args.figure)
    if not args.no_report:
        report(args.report, None if args.no_figure else args.report_figure)


if __name__ == "__main__":
    main()
