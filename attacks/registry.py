"""The attacks an audit can run: a registry filled by one decorator per attack module.

Why: adding an attack should be one new file and one decorator, and the audit runner, its
options and the command line should offer exactly the registered attacks. An attack is a
function ``run(ctx, view, options) -> list[AttackResult]`` (``ctx``: an
:class:`~attacks.context.AuditContext`, ``options``: the :class:`~attacks.audit.AuditOptions`):

    @register_attack("a7", title="my attack")
    def audit_my_attack(ctx, view, options):
        return [...]

Attacks with ``per_view=False`` run once, on the mechanism itself (view ``"mechanism"``).
The built-in attack modules are imported on the first lookup; an attack in another module is
known once that module has been imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ffm_private.registry import Registry

BUILTIN_MODULES = ("attacks.item_inference", "attacks.membership", "attacks.attribute",
                   "attacks.linkage", "attacks.reconstruction", "attacks.canaries")


@dataclass(frozen=True)
class AttackSpec:
    """One registered attack: its id, its title, how to run it, whether it runs per view."""

    name: str
    title: str
    run: Callable[..., list[Any]]
    per_view: bool = True


ATTACKS: Registry[AttackSpec] = Registry("attack", builtins=BUILTIN_MODULES)


def register_attack(name: str, *, title: str, per_view: bool = True
                    ) -> Callable[[Callable[..., list[Any]]], Callable[..., list[Any]]]:
    """Decorator: register ``run(ctx, view, options)`` as attack ``name`` (lower case)."""

    def decorate(run: Callable[..., list[Any]]) -> Callable[..., list[Any]]:
        key = name.lower()
        ATTACKS.register(key)(AttackSpec(key, title, run, per_view))
        return run

    return decorate


def attack_names() -> tuple[str, ...]:
    """The registered attack ids, sorted (registration order follows import order)."""
    return tuple(sorted(ATTACKS.names()))


def attack(name: str) -> AttackSpec:
    """The registered attack ``name``; :class:`~ffm_private.registry.RegistryError` if none."""
    return ATTACKS.get(name.lower())


__all__ = ["ATTACKS", "AttackSpec", "attack", "attack_names", "register_attack"]
