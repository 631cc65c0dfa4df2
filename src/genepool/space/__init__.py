"""The search space: which hyperparameters exist, their bounds, and how each one moves.

A :class:`Space` maps names to domains. Each domain knows how to ``sample`` from its prior,
``perturb`` a value by a factor (the paper's x0.8 / x1.2), add ``noise`` to it, and
``validate`` a value given by a user. Every value a domain returns lies inside its declared
bounds and has its declared type: a :class:`Float` returns ``float``, an :class:`Int`
returns ``int``, a :class:`Choice` returns one of its options.

Example:
    >>> import numpy as np
    >>> import genepool as gp
    >>> space = gp.Space(
    ...     lr=gp.Float(1e-4, 1e-1, log=True),
    ...     layers=gp.Int(1, 8),
    ...     batch_size=gp.Choice([32, 64, 128], ordered=True),
    ...     optimizer="adam",  # a plain value is fixed: never mutated
    ... )
    >>> config = space.sample(np.random.default_rng(0))
    >>> sorted(config)
    ['batch_size', 'layers', 'lr', 'optimizer']
    >>> space.validate({"lr": 0.01, "layers": 3, "batch_size": 64, "optimizer": "adam"})["lr"]
    0.01

The modules: ``_base`` (:class:`Domain`, what every domain does), ``_numeric``
(:class:`Float`, :class:`Int`), ``_choice`` (:class:`Choice`), ``_fixed`` (:class:`Fixed`),
``_space`` (:class:`Space`), and ``_values`` (what the domains ask of a value: a real
number, a whole number, the same option).
"""

from __future__ import annotations

from genepool.space._base import Domain
from genepool.space._choice import Choice
from genepool.space._fixed import Fixed
from genepool.space._numeric import Float, Int
from genepool.space._space import Space

# importable from here as they were before the package
from genepool.space._values import INT64_MAX as INT64_MAX
from genepool.space._values import INT64_MIN as INT64_MIN
from genepool.space._values import finite_float as finite_float

__all__ = ["Choice", "Domain", "Fixed", "Float", "Int", "Space"]
