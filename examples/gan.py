"""The PBT paper's GAN experiment at laptop scale: maximise an Inception-style score.

A small GAN (multilayer perceptrons, non-saturating loss, Adam) learns scikit-learn's 8x8
handwritten digits (``sklearn.datasets.load_digits``, shipped with the package). Its score
is an Inception-style score, ``IS = exp(E_x KL(p(y|x) || p(y)))``, of a fixed number of
generated images, where ``p(y|x)`` is a digits classifier that this module trains once,
deterministically from a fixed seed, and then keeps fixed. IS lies between 1 (every image
classified alike, or nothing recognisable) and 10 (ten equally frequent, confidently
classified digits). The classifier is also taught that noise is no digit (its prediction
on random images is pushed towards uniform), so that noise scores near 1.

PBT tunes the generator's and the discriminator's learning rates (log scale) as the paper
does, with binary tournament selection and perturb (x0.8 / x1.2) explore, or a resample
with probability 0.25 (examples/_methods.py), in synchronous generations (a donor is never
at an earlier step, so no member redoes steps and PBT spends exactly the compute of random
search). Random search is the same population with
rates sampled from the same space and kept, for the same budget.

Every random draw comes from the member's own stream (``member.rng``): the weights'
initialisation, the batches, the discriminator's dropout masks and the noise fed to the
generator (through torch generators or seeds drawn from it), so a seeded serial run is
reproducible, and a member moved to another worker process goes on exactly as if it had
stayed.

Run: python examples/gan.py [--method pbt|random] [--seed 0] [--size full|smoke]
[--workers 2]; prints one JSON line with the best final score.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import _cli
import _methods
import numpy as np
import torch
from torch import nn

import genepool as gp
from genepool.integrations import torch as gpt

TASK = "gan"
METRIC = "inception_score"
MODE: Final = "max"

#: Run sizes. ``iters``: GAN updates (one of D, one of G) per PBT step; ``ready``: steps
#: between decisions; ``steps``: each member's budget; ``eval_samples``: generated images
#: scored per step.
SIZES: dict[str, dict[str, Any]] = {
    "smoke": {
        "population": 3,
        "ready": 2,
        "steps": 6,
        "iters": 10,
        "batch": 32,
        "eval_samples": 200,
    },
    "full": {
        "population": 8,
        "ready": 2,
        "steps": 40,
        "iters": 90,
        "batch": 64,
        "eval_samples": 500,
    },
}

#: The learning rates: log-uniform priors, the same for PBT and random search.
SPACE = gp.Space(
    lr_g=gp.Float(1e-5, 1e-2, log=True),
    lr_d=gp.Float(1e-5, 1e-2, log=True),
)

Z_DIM = 16
HIDDEN = 128
BETAS = (0.5, 0.999)
D_DROPOUT = 0.3

# -- data -----------------------------------------------------------------------------------
#: Images are scaled from 0..16 to -1..1; a fixed permutation splits them.
HELD_OUT = 397  # of 1797 images: the rest train the classifier and the GAN
SPLIT_SEED = 0

_DATA: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def digits(part: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 digits as ``(images, labels)``: images float32 (n, 64) in [-1, 1].

    Args:
        part: ``"train"`` (1400 images: the classifier and the GAN learn from them) or
            ``"held_out"`` (397 images no model sees).
    """
    if part not in ("train", "held_out"):
        raise ValueError(f"part must be 'train' or 'held_out', got {part!r}")
    if not _DATA:
        datasets = importlib.import_module("sklearn.datasets")  # untyped: keep it Any
        bunch = datasets.load_digits()
        x = (np.asarray(bunch.data, dtype=np.float32) / 8.0 - 1.0).astype(np.float32)
        y = np.asarray(bunch.target, dtype=np.int64)
        order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
        train, held = order[HELD_OUT:], order[:HELD_OUT]
        _DATA["train"] = (x[train], y[train])
        _DATA["held_out"] = (x[held], y[held])
    return _DATA[part]


# -- the fixed classifier and the score -----------------------------------------------------
#: How the scoring classifier is trained; its file cache is keyed by a hash of these.
CLASSIFIER: dict[str, Any] = {
    "hidden": 256,
    "epochs": 300,
    "lr": 3e-3,
    "weight_decay": 1e-4,
    "noise_batch": 128,  # uniform and Gaussian noise images per epoch ...
    "noise_weight": 0.1,  # ... whose predictions are pulled towards uniform with this weight
    "seed": 1234,
}

_CLASSIFIERS: dict[str, nn.Module] = {}


def _classifier_net(hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def _settings_key(settings: Mapping[str, Any]) -> str:
    text = json.dumps(
        {
            "settings": dict(settings),
            "held_out": HELD_OUT,
            "split": SPLIT_SEED,
            "torch": torch.__version__,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train_classifier(settings: Mapping[str, Any] = CLASSIFIER) -> nn.Module:
    """Train the scoring classifier from scratch: the same settings give the same weights.

    Full-batch Adam on the training digits (cross-entropy), plus a term that pulls its
    predictions on noise images towards uniform. All randomness comes from a torch
    generator seeded with ``settings["seed"]``; one thread, so the sums are in one order.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.enable_grad():  # it may first be asked for under no_grad()
            gen = torch.Generator().manual_seed(int(settings["seed"]))
            net = _classifier_net(int(settings["hidden"]))
            with torch.no_grad():
                for layer in net.modules():
                    if isinstance(layer, nn.Linear):
                        bound = 1.0 / float(np.sqrt(layer.in_features))
                        layer.weight.uniform_(-bound, bound, generator=gen)
                        layer.bias.uniform_(-bound, bound, generator=gen)
            x_np, y_np = digits("train")
            x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
            opt = torch.optim.Adam(
                net.parameters(), lr=float(settings["lr"]), weight_decay=settings["weight_decay"]
            )
            n = int(settings["noise_batch"])
            for _ in range(int(settings["epochs"])):
                loss = nn.functional.cross_entropy(net(x), y)
                if n and settings["noise_weight"]:
                    uniform = torch.rand(n, 64, generator=gen) * 2.0 - 1.0
                    gauss = (torch.randn(n, 64, generator=gen) * 0.7).clamp(-1.0, 1.0)
                    logp = torch.log_softmax(net(torch.cat([uniform, gauss])), dim=1)
                    loss = loss + float(settings["noise_weight"]) * (-logp.mean(dim=1)).mean()
                opt.zero_grad()
                torch.autograd.backward(loss)
                opt.step()
    finally:
        torch.set_num_threads(threads)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _cache_path(key: str) -> Path:
    root = Path(os.environ.get("GENEPOOL_CACHE", Path(tempfile.gettempdir()) / "genepool-cache"))
    return root / f"gan-classifier-{key}.pt"


def _write_atomically(path: Path, net: nn.Module) -> None:
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        torch.save(net.state_dict(), tmp)
        os.replace(tmp, path)
    except OSError:  # the cache only saves time: go on without it
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def classifier(settings: Mapping[str, Any] = CLASSIFIER, *, cache: bool = True) -> nn.Module:
    """The scoring classifier: trained once per process (and cached in a temporary file).

    The file (``$GENEPOOL_CACHE`` or ``<tmp>/genepool-cache``, named by a hash of the
    settings, the data split and the torch version) only saves the training time: the
    training is deterministic, so the file holds what training would give. It is read
    with ``weights_only=True`` and written atomically; a bad file is trained over.
    """
    key = _settings_key(settings)
    if key in _CLASSIFIERS:
        return _CLASSIFIERS[key]
    net: nn.Module | None = None
    path = _cache_path(key)
    if cache and path.exists():
        try:
            net = _classifier_net(int(settings["hidden"]))
            net.load_state_dict(torch.load(path, weights_only=True))
            net.eval()
            for p in net.parameters():
                p.requires_grad_(False)
        except Exception:
            net = None
    if net is None:
        net = train_classifier(settings)
        if cache:
            _write_atomically(path, net)
    _CLASSIFIERS[key] = net
    return net


def inception_score(probs: torch.Tensor | np.ndarray) -> float:
    """``exp(mean_x KL(p(y|x) || p(y)))`` of class probabilities ``probs`` (n, classes).

    ``p(y)`` is the mean of the rows. 1 when all rows are alike; at most the number of
    classes (one-hot rows, classes equally frequent).
    """
    p = torch.as_tensor(probs, dtype=torch.float64)
    p = p / p.sum(dim=1, keepdim=True)
    marginal = p.mean(dim=0, keepdim=True)
    tiny = 1e-12
    kl = (p * (torch.log(p + tiny) - torch.log(marginal + tiny))).sum(dim=1)
    return float(torch.exp(kl.mean()))


def score_images(images: torch.Tensor | np.ndarray) -> float:
    """The Inception-style score of images (n, 64) in [-1, 1] under the fixed classifier."""
    x = torch.as_tensor(images, dtype=torch.float32).reshape(-1, 64)
    with torch.no_grad():
        probs = torch.softmax(classifier()(x), dim=1)
    return inception_score(probs)


# -- the GAN --------------------------------------------------------------------------------
def generator() -> nn.Module:
    """Noise (Z_DIM) to an image (64 values in [-1, 1])."""
    return nn.Sequential(
        nn.Linear(Z_DIM, HIDDEN),
        nn.LeakyReLU(0.2),
        nn.Linear(HIDDEN, HIDDEN),
        nn.LeakyReLU(0.2),
        nn.Linear(HIDDEN, 64),
        nn.Tanh(),
    )


def discriminator() -> nn.Module:
    """An image to a logit: real (> 0) or generated.

    Dropout keeps it from memorising the 1400 training images: without it, a fast
    discriminator soon overpowers the generator and the score stalls (near 6), so a high
    rate that leads early falls behind later.
    """
    return nn.Sequential(
        nn.Linear(64, HIDDEN),
        nn.LeakyReLU(0.2),
        nn.Dropout(D_DROPOUT),
        nn.Linear(HIDDEN, HIDDEN),
        nn.LeakyReLU(0.2),
        nn.Dropout(D_DROPOUT),
        nn.Linear(HIDDEN, 1),
    )


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**62))


class GAN(gpt.TorchTrainable):
    """One member: a generator and a discriminator, each with its own Adam.

    ``settings`` (a size from :data:`SIZES`) is set on a subclass by :func:`trainable`.
    """

    settings: Mapping[str, Any] = SIZES["smoke"]

    def build(self, hparams: Mapping[str, Any]) -> gpt.TorchState:
        torch.set_num_threads(1)
        classifier()  # trained (or read from the cache) before the first step is timed
        # placeholders: the weights are drawn at the first step, from member.rng. Drawing
        # them here would take a draw from the stream at every build, also when a
        # checkpoint is loaded over them at once, so a member moved between worker
        # processes would go on with another stream than one that stayed.
        with torch.random.fork_rng():
            torch.manual_seed(0)
            g, d = generator(), discriminator()
        self.data = torch.from_numpy(digits("train")[0])
        opt_g = torch.optim.Adam(g.parameters(), lr=hparams["lr_g"], betas=BETAS)
        opt_d = torch.optim.Adam(d.parameters(), lr=hparams["lr_d"], betas=BETAS)
        return gpt.TorchState(
            models={"G": g, "D": d},
            optimizers={"G": opt_g, "D": opt_d},
            hparams={"lr_g": gpt.Optimizer("G", "lr"), "lr_d": gpt.Optimizer("D", "lr")},
            rng=False,  # no global stream is used: every draw comes from member.rng
        )

    def step(self) -> dict[str, float]:
        s = self.settings
        state = self.state
        g, d = state.models["G"], state.models["D"]
        opt_g, opt_d = state.optimizers["G"], state.optimizers["D"]
        rng = self.member.rng
        if not state.counters.get("iters"):  # a new member: initialise its weights
            with torch.random.fork_rng():
                torch.manual_seed(_seed(rng))
                for model in (g, d):
                    for layer in model.modules():
                        if isinstance(layer, nn.Linear):
                            layer.reset_parameters()
        noise = torch.Generator().manual_seed(_seed(rng))
        batch = int(s["batch"])
        ones, zeros = torch.ones(batch, 1), torch.zeros(batch, 1)
        bce = nn.functional.binary_cross_entropy_with_logits
        picks = torch.from_numpy(rng.integers(len(self.data), size=(int(s["iters"]), batch)))
        loss_d = loss_g = torch.zeros(())
        with torch.random.fork_rng():  # dropout's masks: from the member's stream too
            torch.manual_seed(_seed(rng))
            for i in range(int(s["iters"])):
                real = self.data[picks[i]]
                fake = g(torch.randn(batch, Z_DIM, generator=noise))
                loss_d = bce(d(real), ones) + bce(d(fake.detach()), zeros)
                opt_d.zero_grad()
                torch.autograd.backward(loss_d)
                opt_d.step()
                loss_g = bce(d(fake), ones)  # the non-saturating generator loss
                opt_g.zero_grad()
                torch.autograd.backward(loss_g)
                opt_g.step()
        state.counters["iters"] = state.counters.get("iters", 0) + int(s["iters"])
        with torch.no_grad():
            samples = g(torch.randn(int(s["eval_samples"]), Z_DIM, generator=noise))
        score = score_images(samples)
        return {
            METRIC: score,
            "loss_d": loss_d.item(),
            "loss_g": loss_g.item(),
            "iters": float(state.counters["iters"]),
            "lr_g_now": float(opt_g.param_groups[0]["lr"]),  # the rates that trained it
            "lr_d_now": float(opt_d.param_groups[0]["lr"]),
        }


def trainable(size: str) -> type[GAN]:
    """The :class:`GAN` trainable for one of :data:`SIZES`."""
    return type(f"GAN_{size}", (GAN,), {"settings": SIZES[size], "__module__": __name__})


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
    the same space, ready interval and budget; PBT's exploit is a binary tournament.
    """
    policy = _methods.policy(method, select=gp.Tournament())
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    s = SIZES[size]
    classifier()  # train it once here: worker processes then read it from the cache file
    return gp.run(
        trainable(size),
        SPACE,
        metric=METRIC,
        mode=MODE,
        population=population or s["population"],
        ready=gp.Every(s["ready"]),
        budget=gp.Budget(steps=s["steps"]),
        **policy,
        seed=seed,
        # generations: every member decides on the same round, so a donor is never behind
        # (asynchronously a member could copy one at an earlier step and redo its steps,
        # spending more compute than random search)
        synchronous=True,
        storage=storage,
        workers=workers,
        progress=progress,
    )


def main() -> None:
    """The command line: ``--method``, ``--seed``, ``--size``, ``--workers`` (see _cli)."""
    _cli.main(doc=__doc__ or TASK, task=TASK, metric=METRIC, sizes=SIZES, run=run)


if __name__ == "__main__":
    main()
