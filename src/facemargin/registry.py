"""A small name -> constructor registry shared by losses, heads and backbones.

Every concept folder owns one :class:`Registry`; modules add to it with the
``register`` decorator, and users build objects by lower-case name::

    from facemargin import losses
    head = losses.build("arcface", embedding_size=512, num_classes=1000)
"""
from __future__ import annotations

from typing import Callable, Dict, List


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, Callable] = {}
        self._aliases: Dict[str, str] = {}

    def register(self, name: str, *aliases: str) -> Callable:
        """Decorator: register ``obj`` under ``name`` (and ``aliases``)."""

        def deco(obj):
            for key in (name, *aliases):
                key = key.lower()
                if key in self._items or key in self._aliases:
                    raise KeyError(f"{self.kind} {key!r} is registered twice")
            self._items[name.lower()] = obj
            for a in aliases:
                self._aliases[a.lower()] = name.lower()
            return obj

        return deco

    def resolve(self, name: str) -> str:
        key = str(name).lower()
        key = self._aliases.get(key, key)
        if key not in self._items:
            raise ValueError(
                f"unknown {self.kind} {name!r}; available: {', '.join(self.available())}"
            )
        return key

    def get(self, name: str) -> Callable:
        return self._items[self.resolve(name)]

    def build(self, name: str, **kw):
        return self.get(name)(**kw)

    def available(self, aliases: bool = False) -> List[str]:
        names = sorted(self._items)
        if aliases:
            names = sorted(names + list(self._aliases))
        return names

    def __contains__(self, name: str) -> bool:
        key = str(name).lower()
        return key in self._items or key in self._aliases
