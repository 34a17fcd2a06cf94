"""A small name -> constructor registry shared by losses, heads and backbones.

Every concept folder owns one :class:`Registry`; modules add to it with the
``register`` decorator, and users build objects by lower-case name::

    from facemargin import losses
    head = losses.build("arcface", embedding_size=512, num_classes=1000)
"""
from __future__ import annotations

import inspect
from typing import Callable, Dict, List, Optional


def accepted_arguments(ctor: Callable) -> Optional[List[str]]:
    """The keyword arguments ``ctor`` accepts, following ``**kw`` up a class's bases
    (``None`` when some callable in the chain takes arbitrary keywords we cannot list)."""
    own = getattr(ctor, "accepted_arguments", None)
    if callable(own):  # a class that knows which of its bases' options it passes through
        return list(own())
    names: List[str] = []
    targets = [c.__init__ for c in inspect.getmro(ctor) if "__init__" in vars(c)] if isinstance(ctor, type) else [ctor]
    for fn in targets:
        if fn is object.__init__:
            break
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            return None
        more = False
        for p in params:
            if p.name == "self" or p.kind is p.VAR_POSITIONAL:
                continue
            if p.kind is p.VAR_KEYWORD:
                more = True
            elif p.name not in names:
                names.append(p.name)
        if not more:
            return names
    return None if not isinstance(ctor, type) else names


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

    def unregister(self, name: str) -> None:
        """Remove ``name`` and its aliases (e.g. a class registered for an experiment)."""
        key = self.resolve(name)
        del self._items[key]
        for alias in [a for a, k in self._aliases.items() if k == key]:
            del self._aliases[alias]

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

    def check_arguments(self, name: str, kw: dict) -> None:
        """Raise ``ValueError`` naming any argument the constructor of ``name`` does not accept,
        or a required one that is missing, and listing what it accepts."""
        key = self.resolve(name)
        ctor = self._items[key]
        accepted = accepted_arguments(ctor)
        if accepted is None:
            return
        unknown = [k for k in kw if k not in accepted]
        if unknown:
            raise ValueError(f"{self.kind} {key!r}: bad parameters: unknown argument(s) {', '.join(map(repr, unknown))}; "
                             f"it accepts: {', '.join(accepted)}")
        fn = ctor.__init__ if isinstance(ctor, type) else ctor
        required = [p.name for p in inspect.signature(fn).parameters.values()
                    if p.name != "self" and p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        missing = [r for r in required if r not in kw]
        if missing:
            raise ValueError(f"{self.kind} {key!r}: bad parameters: missing argument(s) {', '.join(map(repr, missing))}; "
                             f"it accepts: {', '.join(accepted)}")

    def build(self, name: str, **kw):
        """Build ``name`` with bind-checked keyword arguments (a clear ValueError otherwise)."""
        self.check_arguments(name, kw)
        return self.get(name)(**kw)

    def available(self, aliases: bool = False) -> List[str]:
        names = sorted(self._items)
        if aliases:
            names = sorted(names + list(self._aliases))
        return names

    def __contains__(self, name: str) -> bool:
        key = str(name).lower()
        return key in self._items or key in self._aliases
