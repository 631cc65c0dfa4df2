"""A whole population in one process: members of one architecture as stacked tensors.

The round's third driver (after the worker and ask/tell): every member steps at once in
one batched computation (``torch.func``: ``stack_module_state``, ``vmap`` of
``functional_call``), while the decision, the store, lineage, the report, export and
replay work as for any run. Requires the ``torch`` extra (``pip install
'genepool[torch]'``).

Modules (one thing each):

- :mod:`genepool.vectorised._optim`: optimizers whose hyperparameters are per-member
  tensors (SGD with momentum and Nesterov, Adam, AdamW; gradient clipping per member).
- :mod:`genepool.vectorised._stack`: the stacked members: parameters and buffers with a
  population axis, the batched forward and backward, a member's slice in and out
  (checkpoints, in-place exploits), and each member's own random stream for dropout.
"""
