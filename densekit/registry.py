"""Name -> strategy registries, so the CLI and YAML configs can pick miners, losses and index types.

Each registry knows the package whose modules register into it; ``get`` imports that package's
modules on first use, so adding a strategy is one new file with a ``@REGISTRY.register("name")``.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from typing import Generic, TypeVar

from densekit.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind
        self.package = package
        self._items: dict[str, T] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ConfigError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj
        return decorator

    def _discover(self) -> None:
        if self._discovered or self.package is None:
            return
        self._discovered = True
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")

    def get(self, name: str) -> T:
        self._discover()
        if name not in self._items:
            raise ConfigError(f"unknown {self.kind} '{name}'; choose one of: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        self._discover()
        return name in self._items

    def get_checked(self, name: str, params: dict, noun: str = "option", internal: tuple[str, ...] = ()) -> T:
        """``get(name)``, refusing any of ``params`` its signature does not take (``internal``: not user-facing)."""
        obj = self.get(name)
        accepted = inspect.signature(obj).parameters
        unknown = [k for k in params if k not in accepted or k in internal]
        if unknown:
            takes = ", ".join(p for p in accepted if p not in internal) or "none"
            raise ConfigError(f"{self.kind} '{name}' has no {noun}(s) {', '.join(unknown)}; it takes: {takes}")
        return obj
