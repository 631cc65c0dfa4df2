"""A whole population in one process: members of one architecture as stacked tensors.

The round's third driver (after the worker and ask/tell): every member steps at once in
one batched computation (``torch.func``: ``stack_module_state``, ``vmap`` of
``functional_call``), while the decision, the store, lineage, the report, export and
replay work as for any run. Requires the ``torch`` extra (``pip install
'genepool[torch]'``); ``import genepool`` never imports it.

:func:`run` is the entry point (see its example); :class:`Dropout` is the dropout a
vectorised model uses; :class:`Sample` the fast form of the commonest ``data``. Modules
(one thing each):

- :mod:`genepool.vectorised._population`: the driver, :func:`run`: PBT through
  :class:`genepool.AskTell` (synchronous), each member's slice brought to its claim's
  starting point (an exploit copied in place), all stepped together until ready.
- :mod:`genepool.vectorised._member`: :func:`trainable`, one member alone through the
  same code, as a :class:`genepool.Trainable` (replay, one-by-one runs); a member's
  checkpoint state.
- :mod:`genepool.vectorised._memory`: one member's share of the device's memory,
  estimated from the probe, and a population too large for it refused up front.
- :mod:`genepool.vectorised._inputs`: the user's functions (``loss``, ``data``,
  ``evaluate``) applied to the stack, and the run's arguments checked before it starts.
- :mod:`genepool.vectorised._sample`: :class:`Sample`, batches drawn at random from
  tensors in memory, every member's gathered at once.
- :mod:`genepool.vectorised._hparams`: where the space's names go: the optimizer's
  columns, the dropout rates, the loss weight.
- :mod:`genepool.vectorised._optim`: optimizers whose hyperparameters are per-member
  tensors (SGD with momentum and Nesterov, Adam, AdamW; gradient clipping per member).
- :mod:`genepool.vectorised._stack`: the stacked members: parameters and buffers with a
  population axis, the batched forward and backward, a member's slice in and out
  (checkpoints, in-place exploits), and each member's own random stream for dropout.
"""

from genepool.vectorised._member import VectorisedMember, trainable
from genepool.vectorised._optim import SGD, Adam, AdamW
from genepool.vectorised._population import run
from genepool.vectorised._sample import Sample
from genepool.vectorised._stack import Dropout, StackedMembers, member_generator

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "Dropout",
    "Sample",
    "StackedMembers",
    "VectorisedMember",
    "member_generator",
    "run",
    "trainable",
]
