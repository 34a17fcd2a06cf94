"""A small name -> constructor registry shared by losses, heads and backbones, and the one
mechanism that checks their hyper-parameters.

Every concept folder owns one :class:`Registry`; modules add to it with the
``register`` decorator, and users build objects by lower-case name::

    from facemargin import losses
    head = losses.build("arcface", embedding_size=512, num_classes=1000)

Hyper-parameter checks. The rules a class declares in ``PARAMS`` live in :mod:`facemargin.params`;
:meth:`Registry.check_params` runs them on a plain ``dict`` without building anything (e.g. while
a training config is resolved, before any data loads), the very checks the constructor runs.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Mapping, Optional

from .params import Param, accepted_arguments, default_arguments, param_specs, validate_params


class Registry:
    """Constructors by lower-case name (and aliases).

    ``common_params`` holds :class:`Param` rules for argument names that many constructors of
    this registry share (a backbone's ``dropout``); they apply to every constructor that accepts
    such an argument and does not declare it itself in ``PARAMS``.
    """

    def __init__(self, kind: str, common_params: Optional[Mapping[str, Param]] = None):
        self.kind = kind
        self.common_params: Dict[str, Param] = dict(common_params or {})
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
            own = vars(obj) if isinstance(obj, type) else getattr(obj, "__dict__", {})
            if "registered_name" not in own:
                try:  # the name messages about its arguments start with
                    obj.registered_name = name.lower()
                except (AttributeError, TypeError):
                    pass
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

    def check_arguments(self, name: str, kw: Mapping[str, Any], require: bool = True) -> None:
        """Raise ``ValueError`` naming any argument the constructor of ``name`` does not accept,
        or (with ``require``) a required one that is missing, and listing what it accepts."""
        key = self.resolve(name)
        ctor = self._items[key]
        accepted = accepted_arguments(ctor)
        if accepted is None:
            return
        unknown = [k for k in kw if k not in accepted]
        if unknown:
            raise ValueError(f"{self.kind} {key!r}: bad parameters: unknown argument(s) {', '.join(map(repr, unknown))}; "
                             f"it accepts: {', '.join(accepted)}")
        if not require:
            return
        fn = ctor.__init__ if isinstance(ctor, type) else ctor
        required = [p.name for p in inspect.signature(fn).parameters.values()
                    if p.name != "self" and p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        missing = [r for r in required if r not in kw]
        if missing:
            raise ValueError(f"{self.kind} {key!r}: bad parameters: missing argument(s) {', '.join(map(repr, missing))}; "
                             f"it accepts: {', '.join(accepted)}")

    def param_specs(self, name: str) -> Dict[str, Param]:
        """The rules the arguments of ``name`` are checked with: the constructor's ``PARAMS`` and
        this registry's ``common_params``, for the arguments it accepts."""
        ctor = self.get(name)
        accepted = accepted_arguments(ctor)
        specs = {**self.common_params, **param_specs(ctor)}
        return {k: v for k, v in specs.items() if accepted is None or k in accepted}

    def check_params(self, name: str, params: Mapping[str, Any]) -> Dict[str, Any]:
        """Check keyword arguments for ``name`` without building anything; return them as the
        constructor will use them.

        An unknown argument raises ``ValueError`` listing the accepted ones; a declared argument
        of the wrong type or out of its range raises ``ValueError("<name>: <arg>=<value> ...")``
        naming the valid values (see :class:`Param`). Arguments that ``build`` needs but ``params``
        leaves out (``embedding_size``, ``num_classes``, ...) are not required here; ranges that
        refer to another argument compare with its default when it is left out.
        """
        if not isinstance(params, Mapping):
            raise ValueError(f"{self.kind} {name!r}: parameters must be a table of name = value, got {params!r}")
        key = self.resolve(name)
        self.check_arguments(key, params, require=False)
        ctor = self._items[key]
        values = {**default_arguments(ctor), **params}
        checked = validate_params(key, self.param_specs(key), values, given=list(params))
        return {k: checked[k] for k in params}

    def build(self, name: str, **kw):
        """Build ``name`` with bind-checked, value-checked keyword arguments (a clear
        ``ValueError`` otherwise; see :meth:`check_params`)."""
        self.check_arguments(name, kw)
        kw = self.check_params(name, kw)
        return self.get(name)(**kw)

    def available(self, aliases: bool = False) -> List[str]:
        names = sorted(self._items)
        if aliases:
            names = sorted(names + list(self._aliases))
        return names

    def __contains__(self, name: str) -> bool:
        key = str(name).lower()
        return key in self._items or key in self._aliases
