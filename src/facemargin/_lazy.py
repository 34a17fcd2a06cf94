"""Packages whose public names load on first use, so that ``facemargin --help`` starts without torch.

A package keeps its public imports in a function and hands it to :func:`lazy_package`; the
first attribute that is not already there runs the function once and takes every name it
imported. A name that is not public but is a submodule (``facemargin.eval.roc``) is imported as
such. Code that imports a submodule directly (``from facemargin.eval.roc import auc``) never runs
the function at all.
"""
from __future__ import annotations

import importlib
import sys
from typing import Callable, Dict


def lazy_package(package: str, load: Callable[[], Dict[str, object]]):
    """The ``__getattr__`` of ``package``: ``load()`` returns the public names (its ``locals()``)."""

    def __getattr__(name: str):
        namespace = sys.modules[package].__dict__
        if not namespace.get("_public_loaded"):
            namespace["_public_loaded"] = True
            try:
                public = load()
            except BaseException:
                namespace["_public_loaded"] = False  # a failed import is retried, and reported, next time
                raise
            namespace.update({k: v for k, v in public.items() if not k.startswith("__")})
            if name in namespace:
                return namespace[name]
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{package}.{name}":
                raise
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
