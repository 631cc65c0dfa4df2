"""The domain that never moves: :class:`Fixed`, a value in every config."""

from __future__ import annotations

from typing import Any

import numpy as np

from genepool._errors import invalid
from genepool._redact import shown
from genepool.space._base import Domain, is_domain
from genepool.space._values import same_value, value_key


class Fixed(Domain):
    """A value that is part of every config but never explored."""

    mutable = False

    def __init__(self, value: Any) -> None:
        if is_domain(value):
            raise invalid(
                "Fixed",
                "value",
                "a plain value, not a domain",
                shown(value),
                "Fix: declare the hyperparameter with the domain itself, such as "
                "gp.Float(1e-4, 1e-1), or fix a plain value: gp.Fixed(0.01).",
            )
        self.value = value

    def sample(self, rng: np.random.Generator) -> Any:
        return self.value

    def perturb(self, value: Any, factor: float, rng: np.random.Generator) -> Any:
        return self.value

    def noise(self, value: Any, sigma: float, rng: np.random.Generator) -> Any:
        return self.value

    def validate(self, value: Any, *, name: str = "value") -> Any:
        if same_value(value, self.value):
            return self.value
        raise invalid(
            "Fixed",
            name,
            f"the fixed value {shown(self.value)}",
            shown(value),
            "Fix: drop it from the config, or declare it with gp.Float/gp.Int/gp.Choice.",
        )

    def __repr__(self) -> str:
        return f"Fixed({self.value!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Fixed) and same_value(self.value, other.value)

    def __hash__(self) -> int:
        # an unhashable fixed value (a list) hashes as None: equal objects still agree
        return hash(("Fixed", value_key(self.value)))
