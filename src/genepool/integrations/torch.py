"""PyTorch: save and restore everything a member is, and make hyperparameters take effect.

A :class:`TorchState` names a member's models, optimizers, LR schedulers and gradient
scaler, and maps each hyperparameter to where it lives (:class:`Optimizer` param groups,
:class:`Modules` attributes such as dropout rates, or a :class:`Custom` pair of
functions). Then:

- :meth:`TorchState.state_dict` is one call that captures all of it, plus the torch,
  NumPy and Python random states and the member's :attr:`~TorchState.counters` (data
  position, epochs, ...), as plain tensors, numbers and strings, which genepool's
  checkpoint format stores as they are (reading a checkpoint never runs code);
  :meth:`~TorchState.load_state_dict` maps it onto the member's own device, and also
  reads the first layout (``{"genepool.torch": bytes}`` of ``torch.save``) with
  ``torch.load(weights_only=True)``;
- :meth:`TorchState.apply` sets the hyperparameters after every load (an optimizer
  restored from a donor carries the donor's learning rate; an LR scheduler would
  overwrite a new rate at its next step unless its base values change too), then reads
  back the values in effect and raises :class:`~genepool.HyperparameterNotAppliedError`
  if any differs from the decided one.

Class API: subclass :class:`TorchTrainable` and implement ``build`` and ``step``. Function
API: build a :class:`TorchState` and call :meth:`TorchState.restore` with the member.

Example:
    >>> import torch
    >>> import genepool as gp
    >>> from genepool.integrations import torch as gpt
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.1),
    ...                             torch.nn.Linear(8, 1))
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    >>> ts = gpt.TorchState(models={"model": model}, optimizers={"opt": opt},
    ...                     hparams={"lr": gpt.Optimizer("opt", "lr"),
    ...                              "dropout": gpt.Modules("model", torch.nn.Dropout, "p")})
    >>> ts.apply({"lr": 0.02, "dropout": 0.3})
    >>> ts.in_effect()
    {'lr': 0.02, 'dropout': 0.3}
"""

from __future__ import annotations

import io
from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from genepool._errors import (
    CheckpointError,
    invalid,
    missing_dependency,
)
from genepool.integrations._torch_hparams import Custom, Modules, Optimizer, Target, same
from genepool.integrations._torch_rng import global_rng_state, set_global_rng_state
from genepool.round import check_applied
from genepool.trainable import Member, Trainable

try:
    import torch
except ImportError as _err:  # pragma: no cover - exercised only without torch
    raise missing_dependency("torch", "torch", "genepool.integrations.torch") from _err

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "STATE_FORMAT",
    "STATE_VERSION",
    "Custom",
    "Modules",
    "Optimizer",
    "Target",
    "TorchState",
    "TorchTrainable",
]

#: Name and version of the saved layout; a newer version is refused with a clear error.
#: Version 1 was ``{"genepool.torch": <torch.save bytes>}``; version 2 is the plain dict.
STATE_FORMAT = "genepool.torch"
STATE_VERSION = 2


class TorchState:
    """Everything a member is, in torch: models, optimizers, schedulers, scaler, RNGs.

    Args:
        models: The models by name (a GAN has two: ``{"G": g, "D": d}``).
        optimizers: The optimizers by name.
        schedulers: LR schedulers by name (each belongs to one of the optimizers).
        scaler: A ``torch.amp.GradScaler``, if training uses one.
        hparams: Where each hyperparameter lives: :class:`Optimizer`, :class:`Modules`
            or :class:`Custom`. Hyperparameters not named here are left to your code.
        device: Where the member's tensors live; a loaded state is mapped onto it. On a
            CUDA device (or, with no ``device``, models on one), the member asks the worker
            to keep one member's model resident at a time (see :attr:`resident_limit`).
        rng: Save and restore the global torch, NumPy and Python random states.

    Attributes:
        counters: Integers of yours saved with the state (the data position, the epoch).
    """

    def __init__(
        self,
        *,
        models: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
        schedulers: Mapping[str, Any] | None = None,
        scaler: Any = None,
        hparams: Mapping[str, Target] | None = None,
        device: str | torch.device | None = None,
        rng: bool = True,
    ) -> None:
        if not isinstance(models, Mapping) or not models:
            raise invalid(
                "TorchState",
                "models",
                "a non-empty dict of name -> torch.nn.Module",
                repr(models),
            )
        self.models = dict(models)
        self.optimizers = dict(optimizers or {})
        self.schedulers = dict(schedulers or {})
        self.scaler = scaler
        self.device = torch.device(device) if device is not None else None
        self.rng = rng
        self.counters: dict[str, int] = {}
        for name, sched in self.schedulers.items():
            if not any(sched.optimizer is o for o in self.optimizers.values()):
                raise invalid(
                    "TorchState",
                    f"schedulers[{name!r}]",
                    "a scheduler of one of the optimizers given",
                    repr(sched),
                )
        self.hparams = dict(hparams or {})
        for name, target in self.hparams.items():
            if not isinstance(target, Target):
                raise invalid(
                    "TorchState",
                    f"hparams[{name!r}]",
                    "an Optimizer(...), Modules(...) or Custom(...) target",
                    repr(target),
                )
            target.bind(self, name)

    @property
    def resident_limit(self) -> int | None:
        """How many members' sessions a worker should keep at once while this state is one
        of them: ``1`` on a CUDA device (every resident member's model would hold device
        memory), else ``None`` (as the run says). :meth:`restore` and
        :class:`TorchTrainable` pass it to the member (:attr:`genepool.Member.resident_limit`);
        ``gp.run(max_resident=...)`` overrides it."""
        if self.device is not None:
            on_cuda = self.device.type == "cuda"
        else:
            on_cuda = any(p.is_cuda for m in self.models.values() for p in m.parameters())
        return 1 if on_cuda else None

    def _schedulers_of(self, opt: torch.optim.Optimizer) -> list[Any]:
        return [
            s for s in self.schedulers.values() if s.optimizer is opt and hasattr(s, "base_lrs")
        ]

    # -- hyperparameters ---------------------------------------------------------------
    def apply(self, hparams: Mapping[str, Any]) -> None:
        """Put the mapped hyperparameters in effect, then check that they are.

        Raises:
            HyperparameterNotAppliedError: A value read back differs from the decided one.
        """
        for name, target in self.hparams.items():
            if name in hparams:
                target.set(self, hparams[name])
        self.verify(hparams)

    def in_effect(self) -> dict[str, Any]:
        """The values in effect now, read from the optimizers, modules and schedulers."""
        return {name: target.get(self) for name, target in self.hparams.items()}

    def verify(self, hparams: Mapping[str, Any]) -> None:
        """Raise if a mapped hyperparameter in effect differs from ``hparams``."""
        check_applied(
            self.in_effect(),
            hparams,
            who="The TorchState",
            fix="something set them back (a scheduler step, a load after apply?); call "
            "apply() after load.",
            same=same,
        )

    # -- state -------------------------------------------------------------------------
    def _plain(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "models": {k: m.state_dict() for k, m in self.models.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "counters": {k: int(v) for k, v in self.counters.items()},
        }
        if self.rng:
            state["rng"] = global_rng_state()
        return state

    def state_dict(self) -> dict[str, Any]:
        """The whole state, as plain tensors, numbers and strings (``"format"`` names it):
        a snapshot (its tensors are copies), which genepool's checkpoints store as is."""
        snapshot: dict[str, Any] = _map_tensors(self._plain(), lambda t: t.detach().clone())
        return snapshot

    def load_state_dict(self, state: Any, hparams: Mapping[str, Any] | None = None) -> None:
        """Restore a :meth:`state_dict` (maybe a donor's), then apply ``hparams`` if given.

        Raises:
            CheckpointError: ``state`` is torn, foreign, or of a newer layout.
        """
        plain = _read(state, self.device)
        try:
            for k, m in self.models.items():
                m.load_state_dict(plain["models"][k])
            for k, o in self.optimizers.items():
                o.load_state_dict(plain["optimizers"][k])
            for k, s in self.schedulers.items():
                s.load_state_dict(plain["schedulers"][k])
            if self.scaler is not None and plain.get("scaler") is not None:
                self.scaler.load_state_dict(plain["scaler"])
        except KeyError as err:
            raise CheckpointError(
                f"the saved state has no entry {err}: it was saved by a TorchState with other "
                "models / optimizers / schedulers. Fix: build the same TorchState as the saver."
            ) from err
        self.counters = {k: int(v) for k, v in plain.get("counters", {}).items()}
        if self.rng and "rng" in plain:
            set_global_rng_state(plain["rng"])
        if hparams is not None:
            self.apply(hparams)

    def restore(self, member: Member) -> bool:
        """Function API: load the member's state to start from (if any), apply its hparams.

        Returns whether a state was loaded (``False`` on a fresh start). Also tells the
        worker how many members to keep resident (:attr:`resident_limit`).
        """
        member.resident_limit = self.resident_limit
        state = member.restore()
        if state is not None:
            self.load_state_dict(state)
        self.apply(member.hparams)
        return state is not None

    def save_file(self, path: str) -> None:
        """Write the state to a file that ``torch.load(path, weights_only=True)`` reads."""
        torch.save(self._plain(), path)

    def load_file(self, path: str, hparams: Mapping[str, Any] | None = None) -> None:
        """Read a file written by :meth:`save_file`."""
        with open(path, "rb") as f:
            self.load_state_dict({STATE_FORMAT: f.read()}, hparams)


def _read(state: Any, device: torch.device | None) -> dict[str, Any]:
    """The plain state of a :meth:`TorchState.state_dict` (either layout), on ``device``."""
    if isinstance(state, Mapping) and state.get("format") == STATE_FORMAT:
        plain: Any = dict(state)
        if device is not None:
            plain = _map_tensors(plain, lambda t: t.to(device))
    elif isinstance(state, Mapping) and isinstance(state.get(STATE_FORMAT), bytes):
        try:  # the first layout: torch.save bytes, read without running code
            buffer = io.BytesIO(state[STATE_FORMAT])
            plain = torch.load(buffer, weights_only=True, map_location=device)
        except Exception as err:
            raise CheckpointError(
                f"the torch state is torn or not a plain-tensor state ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}); it was not loaded."
            ) from err
        if not isinstance(plain, dict) or plain.get("format") != STATE_FORMAT:
            raise CheckpointError("the file is a torch file but not a genepool torch state")
    else:
        raise CheckpointError(
            f"not a genepool torch state (expected the dict of TorchState.state_dict(), got "
            f"{type(state).__name__}). Fix: save with TorchState.state_dict()."
        )
    version = plain.get("version")
    if not isinstance(version, int) or version > STATE_VERSION:
        raise CheckpointError(
            f"torch state layout version {version!r} is newer than this genepool reads "
            f"({STATE_VERSION}); upgrade genepool"
        )
    read: dict[str, Any] = plain
    return read


def _map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``value`` with ``fn`` applied to each of its tensors (dicts, lists, tuples)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):  # OrderedDict (a module's state_dict) included
        mapped = type(value)((k, _map_tensors(v, fn)) for k, v in value.items())
        if hasattr(value, "_metadata"):
            mapped._metadata = value._metadata  # type: ignore[attr-defined]
        return mapped
    if isinstance(value, (list, tuple)):
        return type(value)(_map_tensors(v, fn) for v in value)
    return value


class TorchTrainable(Trainable):
    """The class API for torch: implement :meth:`build` and ``step``; the rest is done.

    ``build`` makes the models and optimizers from the hyperparameters and returns their
    :class:`TorchState`; saving, loading (onto this member's device), applying and
    checking hyperparameters after every load are provided. Keep the data position in
    ``self.state.counters`` so that it travels with the weights. A state on a CUDA device
    has the worker keep one member's model on the device at a time
    (:attr:`TorchState.resident_limit`).
    """

    state: TorchState

    @abstractmethod
    def build(self, hparams: Mapping[str, Any]) -> TorchState:
        """Build the models, optimizers and schedulers; return their :class:`TorchState`."""

    def setup(self, hparams: Mapping[str, Any]) -> None:
        self.state = self.build(hparams)
        member = getattr(self, "member", None)  # None when used outside a run
        if member is not None:
            member.resident_limit = self.state.resident_limit
        self.state.apply(hparams)

    def save(self) -> Any:
        return self.state.state_dict()

    def load(self, state: Any) -> None:
        self.state.load_state_dict(state)

    def apply_hparams(self, hparams: Mapping[str, Any]) -> None:
        self.state.apply(hparams)

    def hparams_in_effect(self) -> Mapping[str, Any] | None:
        return self.state.in_effect()
