"""The run as a worker sees it: :class:`RunContext`, built by :func:`genepool.run`."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from genepool._errors import storage_fault
from genepool._residents import MAX_RESIDENT
from genepool.checkpoints import CheckpointStore, decode, encode
from genepool.checkpoints._resident import ResidentCheckpoints
from genepool.clock import Clock
from genepool.member import MemberView
from genepool.policy import Policy
from genepool.store import Store
from genepool.trainable import TrainableLike

__all__ = ["RunContext"]


@dataclass
class RunContext:
    """Everything a worker needs to train a run's members (built by :func:`genepool.run`)."""

    name: str
    trainable: TrainableLike
    policy: Policy
    metric: str
    seed: int
    store: Store
    checkpoints: CheckpointStore
    clock: Clock
    started: float
    recent_window: int = 100
    #: Metrics other than the decision metric (and the ready counter) are stored only at
    #: steps that are multiples of this, and at the last step of each round.
    metrics_every: int = 1
    lease_seconds: float = 60.0
    max_ahead: int | None = None
    synchronous: bool = False
    #: Seconds to wait before claiming again when every member is held by other workers;
    #: ``None``: :data:`genepool.worker.IDLE_WAIT_ALONE` (a worker alone waits only for a
    #: lease that runs out, or for another process training the same run).
    idle_wait: float | None = None
    #: Reports reach the store at every ready and at least this often.
    flush_seconds: float = 1.0
    #: Renew the lease from a background thread (several workers).
    heartbeat: bool = False
    #: Stop renewing (so another worker takes over) when no step came for this long.
    progress_timeout: float | None = None
    #: A member whose workers died this many times is stopped as failed.
    max_crashes: int = 3
    #: A worker keeps at most this many members' sessions (their models, and a function
    #: trainable's thread) resident, closing the least recently used first; a member
    #: closed is started again from its checkpoint when next trained.
    max_resident: int = MAX_RESIDENT
    #: Whether a trainable may lower ``max_resident`` by asking for fewer (its member's
    #: ``resident_limit``: 1 for a torch model on a CUDA device); ``False`` when the user
    #: chose ``max_resident``.
    resident_hint: bool = True
    #: Checkpoints each member keeps beyond its current one (and a pinned one): its
    #: previous ones, newest first, what it falls back to when its current one cannot be
    #: read (see ``MemberView.previous``).
    keep: int = 1
    #: Store and read any Python object in checkpoints (pickle): the checkpoint storage
    #: is then as trusted as the code. Off: checkpoints hold plain data, arrays and
    #: tensors, and reading one never runs code.
    trust_checkpoints: bool = False
    stop_event: threading.Event = field(default_factory=threading.Event)
    stop_reason: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for worker processes: all but this process's stop signal."""
        state = self.__dict__.copy()
        del state["stop_event"]
        state["stop_reason"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.stop_event = threading.Event()

    def read_checkpoint(self, checkpoint_id: str) -> Any:
        """The payload of a checkpoint (``{"state": ..., "rng": ...}``), decoded as this
        run's trust allows."""
        blob = self.checkpoints.get(checkpoint_id)
        return decode(blob, checkpoint_id=checkpoint_id, trust=self.trust_checkpoints)

    def write_checkpoint(
        self, view: MemberView, state: Any, rng: Any, *, durable: bool = True
    ) -> tuple[str, int]:
        """Checkpoint ``view`` (its step, score and ready counter as in ``view.checkpoint``)
        with the trainable's ``state`` and the member's stream state ``rng``: the new
        checkpoint's id and its size in bytes. ``durable=False`` keeps it in this
        process's memory (:class:`~genepool.checkpoints._resident.ResidentCheckpoints`,
        which ``checkpoints`` must then be).

        Raises:
            StorageError: The checkpoint storage failed (a full disk, say).
        """
        if view.checkpoint is None:
            raise ValueError("write_checkpoint needs the view of a round (its checkpoint)")
        ref = view.checkpoint
        blob = encode({"state": state, "rng": rng}, trust=self.trust_checkpoints)
        manifest = {
            "hparams": dict(view.hparams),
            "score": ref.score,
            "counter": ref.counter,
            "generation": view.generation,
            "parent": view.parent,
            "ready_count": view.ready_count,
            "metric": self.metric,
        }
        put = self.checkpoints.put
        if not durable:
            if not isinstance(self.checkpoints, ResidentCheckpoints):
                raise ValueError("a resident checkpoint needs ResidentCheckpoints")
            put = self.checkpoints.put_resident
        try:
            ckpt_id = put(self.name, view.id, ref.step, blob, manifest=manifest)
        except OSError as err:  # a store that lets the system's error through
            what = f"writing a checkpoint of member {view.id}"
            raise storage_fault(err, what, repr(self.checkpoints)) from err
        return ckpt_id, len(blob)
