"""Name -> implementation registries for models, datasets and DP mechanisms (attacks have their own).

Why: adding a model or a dataset should be one new file with one decorator, and the config
should accept exactly what is registered. A registry maps a kind (``model.kind``,
``data.kind``) to its implementation; the built-in kinds register themselves when their
package is imported, which the registry does on the first lookup (``builtins``), so the
config can validate a kind without importing the models itself. A kind registered from
another module is known once that module has been imported.

    @register_model("my-model")
    class MyRecommender(Recommender): ...

    @register_dataset("my-data")
    def load_my_data(data: DataConfig, path: Path) -> Interactions: ...

    @register_mechanism("my-mechanism")
    class MyMechanism(CentralGaussian): ...   # selected by privacy.mechanism_kind
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ffm_private.errors import FFMPrivateError

T = TypeVar("T")


class RegistryError(FFMPrivateError, ValueError):
    """A kind registered twice, or one that is not registered (the message lists them)."""


class Registry(Generic[T]):
    """Kinds of one sort (``what``: "model", "dataset", ...) and their implementations."""

    def __init__(self, what: str, builtins: tuple[str, ...] = ()) -> None:
        self.what = what
        self._builtins = builtins
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator: register the decorated class or function as ``name`` (and ``aliases``)."""

        def decorate(obj: T) -> T:
            for key in (name, *aliases):
                if not key or not isinstance(key, str):
                    raise RegistryError(f"{self.what} kind {key!r} must be a non-empty string")
                known = self._entries.get(self._aliases.get(key, key))
                if known is not None and known is not obj:
                    raise RegistryError(f"{self.what} kind {key!r} is already registered "
                                        f"({_describe(known)})")
            self._entries[name] = obj
            for alias in aliases:
                self._aliases[alias] = name
            return obj

        return decorate

    def _load_builtins(self) -> None:
        for module in self._builtins:
            importlib.import_module(module)

    def names(self) -> tuple[str, ...]:
        """Every registered kind and alias, in registration order."""
        self._load_builtins()
        return (*self._entries, *self._aliases)

    def canonical(self, name: str) -> str:
        """The kind an alias stands for (the kind itself otherwise)."""
        self._load_builtins()
        return self._aliases.get(name, name)

    def get(self, name: str) -> T:
        """The implementation of ``name``; :class:`RegistryError` listing the known kinds."""
        self._load_builtins()
        key = self._aliases.get(name, name)
        if key not in self._entries:
            raise RegistryError(f"unknown {self.what} kind {name!r}; registered: "
                                f"{list(self.names())}")
        return self._entries[key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def unregister(self, name: str) -> None:
        """Remove a kind and its aliases (for tests that register a temporary kind)."""
        self._entries.pop(name, None)
        for alias in [a for a, k in self._aliases.items() if k == name]:
            del self._aliases[alias]


def _describe(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


#: ``model.kind`` -> a :class:`~ffm_private.models.base.Recommender` subclass with
#: ``from_config(cfg, n_items, num_personal)``.
MODELS: Registry[Any] = Registry("model", builtins=("ffm_private.models",))
#: ``data.kind`` -> ``load(data_config, path) -> Interactions``.
DATASETS: Registry[Any] = Registry("dataset", builtins=("ffm_private.data",))

#: ``privacy.mechanism_kind`` -> a :class:`~ffm_private.privacy.mechanism.Mechanism` subclass
#: with ``serves`` (the ``(mode, noise_placement)`` pairs it implements) and
#: ``from_plan(plan, **context)``. The built-in mechanisms are chosen by ``auto``, not here.
MECHANISMS: Registry[Any] = Registry("DP mechanism")

register_model = MODELS.register
register_dataset = DATASETS.register
register_mechanism = MECHANISMS.register

__all__ = ["DATASETS", "MECHANISMS", "MODELS", "Registry", "RegistryError", "register_dataset",
           "register_mechanism", "register_model"]
