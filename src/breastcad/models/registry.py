"""One model registry for every modality: a decorator plus a dict, as in timm.

Example:
    >>> from breastcad.models import create_model, list_models
    >>> "cnn1d" in list_models("tabular")
    True
    >>> model = create_model("logreg")
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from breastcad.errors import ConfigError


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: how to build it and what it is."""

    name: str
    factory: Callable[..., Any]
    family: str
    modality: str
    description: str


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str, *, family: str, modality: str, description: str
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `factory(**params)` under `name`; a name can be registered once."""

    def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is already registered")
        _REGISTRY[name] = ModelSpec(name, factory, family, modality, description)
        return factory

    return decorator


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model; an unknown name fails loudly with the known names."""
    _load_builtin_models()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown model '{name}'; known models: {', '.join(sorted(_REGISTRY))}"
        ) from None


def create_model(name: str, **params: Any) -> Any:
    """Build a registered model with its parameters; one it does not take is a `ConfigError`
    naming those it does."""
    factory = get_spec(name).factory
    accepted = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise ConfigError(
                f"model '{name}' has no parameter {', '.join(map(repr, unknown))}; its "
                f"parameters: {', '.join(accepted)}"
            )
    return factory(**params)


def list_models(modality: str | None = None) -> list[str]:
    """Names of the registered models, optionally of one modality."""
    _load_builtin_models()
    return sorted(n for n, s in _REGISTRY.items() if modality in (None, s.modality))


def _load_builtin_models() -> None:
    from breastcad.models import backbones, cnn, lesion_recipes, tabular  # noqa: F401  (registers)
