"""The search space itself: :class:`Space`, names mapped to domains, which samples,
validates and completes whole configs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from genepool._errors import invalid
from genepool._redact import shown
from genepool.space._base import Domain
from genepool.space._fixed import Fixed

#: How to declare each kind of domain, for the message that refuses the class itself.
_DECLARE = {
    "Float": "gp.Float(1e-4, 1e-1)",
    "Int": "gp.Int(1, 8)",
    "Choice": "gp.Choice(['adam', 'sgd'])",
    "Fixed": "gp.Fixed(0.9)",
}


def _checked_name(name: Any) -> str:
    """A hyperparameter's name: a non-empty string."""
    if not isinstance(name, str) or not name:
        raise invalid("Space", "name", "a non-empty string", shown(name))
    return name


def _as_domain(name: str, spec: Any) -> Domain:
    """The domain of hyperparameter ``name`` declared as ``spec``: a domain, or a plain
    value that is fixed. A domain class and a collection are refused."""
    if isinstance(spec, Domain):
        return spec
    if isinstance(spec, type) and issubclass(spec, Domain):
        example = _DECLARE.get(spec.__name__, _DECLARE["Float"])
        raise invalid(
            "Space",
            name,
            "a domain (an instance such as gp.Float(low, high)) or a plain value, not a class",
            shown(spec),
            f"Fix: give its bounds or options, such as {name}={example}.",
        )
    if isinstance(spec, (list, tuple, set, frozenset, dict)):
        raise invalid(
            "Space",
            name,
            "a domain (gp.Float, gp.Int, gp.Choice, gp.Fixed) or a plain value",
            shown(spec),
            f"Fix: gp.Choice({shown(list(spec))}) for categories, or gp.Fixed(...) for a value "
            "that never changes.",
        )
    return Fixed(spec)


class Space(Mapping[str, Domain]):
    """The named hyperparameters of a population.

    Args:
        params: A mapping of names to domains (alternative to keyword arguments).
        **kwargs: Names to domains. A plain value (a number, a string, ``None``) is fixed;
            a list, tuple, set or dict is refused, because whether it means categories or a
            fixed value would depend on its type: wrap it in :class:`Choice` or :class:`Fixed`.
    """

    def __init__(self, params: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        if params is not None and not isinstance(params, Mapping):
            raise invalid(
                "Space",
                "params",
                "a mapping of names to domains (a dict) or None",
                shown(params),
                "Fix: gp.Space({'lr': gp.Float(1e-4, 1e-1)}) or gp.Space(lr=gp.Float(1e-4, 1e-1)).",
            )
        merged: dict[str, Any] = dict(params or {})
        for key in kwargs:
            if key in merged:
                raise invalid("Space", key, "declared once", "it twice")
        merged.update(kwargs)
        if not merged:
            raise invalid(
                "Space",
                "params",
                "at least one hyperparameter",
                "none",
                "Fix: gp.Space(lr=gp.Float(1e-4, 1e-1, log=True)).",
            )
        domains = {_checked_name(name): _as_domain(name, spec) for name, spec in merged.items()}
        self._domains: dict[str, Domain] = domains
        self.mutable_names: tuple[str, ...] = tuple(n for n, d in domains.items() if d.mutable)

    def __getitem__(self, name: str) -> Domain:
        return self._domains[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._domains)

    def __len__(self) -> int:
        return len(self._domains)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={d!r}" for n, d in self._domains.items())
        return f"Space({inner})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Space) and self._domains == other._domains

    def __hash__(self) -> int:
        return hash(frozenset(self._domains))

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """Draw a whole config from the prior."""
        return {name: d.sample(rng) for name, d in self._domains.items()}

    def validate(self, config: Mapping[str, Any], *, name: str = "config") -> dict[str, Any]:
        """Check a whole config and return it with canonical types.

        Raises:
            InvalidArgumentError: a key not in the space, a missing key, or a bad value.
        """
        if not isinstance(config, Mapping):
            raise invalid("Space.validate", name, "a dict of hyperparameters", shown(config))
        unknown = [k for k in config if k not in self._domains]
        if unknown:
            raise invalid(
                "Space.validate",
                name,
                f"made of the space's keys {list(self._domains)}",
                f"the unknown key(s) {unknown}",
                "Fix: declare them in gp.Space(...) or remove them from the config.",
            )
        missing = [k for k in self._domains if k not in config]
        if missing:
            raise invalid(
                "Space.validate",
                name,
                "complete",
                f"no value for {missing}",
                "Fix: give a value for each hyperparameter.",
            )
        return {k: d.validate(config[k], name=f"{name}[{k!r}]") for k, d in self._domains.items()}

    def complete(
        self, config: Mapping[str, Any], rng: np.random.Generator, *, name: str = "config"
    ) -> dict[str, Any]:
        """Validate a partial config, drawing the missing values from the prior."""
        if not isinstance(config, Mapping):
            raise invalid("Space.complete", name, "a dict of hyperparameters", shown(config))
        full = dict(config)
        for key, domain in self._domains.items():
            if key not in full:
                full[key] = domain.sample(rng)
        return self.validate(full, name=name)
