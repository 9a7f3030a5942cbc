"""Losses, one module each, registered by name into ``LOSSES``; every one is a
:class:`~densekit.training.losses.base.DensekitLoss` (the contract is written down there).

``build_loss(name, model, options, context)`` checks the user's options against the loss's constructor before
building it, so a typo is an error that lists what the loss takes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from densekit.errors import ConfigError
from densekit.registry import Registry

LOSSES: Registry = Registry("loss", "densekit.training.losses")
_COLLABORATORS = ("self", "model", "context")


def register_loss(name: str) -> Callable[[type], type]:
    """Register a loss class under ``name`` (its ``registered_name``)."""
    def decorator(cls: type) -> type:
        cls.registered_name = name
        return LOSSES.register(name)(cls)
    return decorator


def loss_options(cls: type) -> list[str]:
    """The options a loss takes (its constructor's parameters besides the model and the context)."""
    return [p for p in inspect.signature(cls).parameters if p not in _COLLABORATORS]


def build_loss(name: str, model, options: dict[str, Any], context=None):
    cls = LOSSES.get(name)
    accepted = loss_options(cls)
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise ConfigError(f"loss '{name}' has no option(s) {', '.join(unknown)}; "
                          f"it takes: {', '.join(accepted) or 'none'}")
    return cls(model, **options, context=context)
