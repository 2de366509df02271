"""Name -> object for every pluggable list (samplers, schedules, tasks, baselines, rules, metrics, ...).

One helper, so every unknown name gets the same kind of error, listing the valid names::

    SAMPLERS = Registry("sampler")

    @SAMPLERS.register("ddim")
    def ddim_sample(...): ...

    SAMPLERS["plms"]  # UnknownNameError: unknown sampler 'plms'; valid: ddim, fusiondiff
"""

from __future__ import annotations

from typing import Any, TypeVar

from fusiondiff.errors import ConfigError

T = TypeVar("T")


class UnknownNameError(ConfigError, KeyError):
    """A name that is not registered; the message lists the valid ones (a KeyError and a ValueError)."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(dict):
    """A dict of named entries whose lookups fail with "unknown <kind> 'x'; valid: a, b, c"."""

    def __init__(self, kind: str, entries: dict[str, Any] | None = None) -> None:
        super().__init__(entries or {})
        self.kind = kind

    def __getitem__(self, name: str) -> Any:
        try:
            return super().__getitem__(name)
        except (KeyError, TypeError):
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid: {', '.join(map(str, self))}") from None

    def check(self, name: str) -> str:
        """``name`` if registered, else the error above."""
        self[name]
        return name

    def register(self, name: str | None = None, obj: Any = None, replace: bool = False) -> Any:
        """Add ``obj`` under ``name`` (default: its ``name`` attribute or ``__name__``); as a decorator without ``obj``."""

        def add(item: T) -> T:
            key = name or getattr(item, "name", None) or item.__name__
            if key in self and not replace and super(Registry, self).__getitem__(key) is not item:
                raise ValueError(f"{self.kind} {key!r} is registered already (pass replace=True to replace it)")
            self[key] = item
            return item

        return add(obj) if obj is not None else add

    def names(self) -> list[str]:
        return list(self)
