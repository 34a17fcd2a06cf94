"""Out-of-tree extensions for the command line: heads, losses and backbones that live in the
user's own files or packages, registered with facemargin's registry decorators.

Three ways to bring them in, loaded in this order right before a sub-command runs (never for
``--help``, which stays free of torch):

1. installed packages that declare an entry point in the group ``facemargin.losses`` or
   ``facemargin.models`` (``name = "module"`` or ``name = "module:object"``): the module is
   imported, and the object, if named, is looked up;
2. the modules of the environment variable ``FACEMARGIN_IMPORT`` (comma-separated), which every
   rank of a ``torchrun`` job inherits;
3. the modules of ``facemargin --import MODULE`` (repeatable).

A module is a dotted name importable from ``sys.path`` or a path to a ``.py`` file. Importing it
runs its ``@LOSSES.register(...)`` / ``@BACKBONES.register(...)`` decorators, and from then on the
names work everywhere a built-in name does (``--set loss.name=...``, ``model.name``).

A module that cannot be imported raises :class:`PluginError` with one line naming it and the
cause; the CLI prints it and exits with status 2. ``FACEMARGIN_NO_PLUGINS=1`` skips the entry
points (not the explicit imports), e.g. to get past a broken installed plugin.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import zlib
from pathlib import Path
from typing import Dict, Iterable, List, Sequence

#: the environment variable naming modules to import (comma-separated)
ENV_IMPORT = "FACEMARGIN_IMPORT"
#: set to 1 to skip the installed entry points
ENV_NO_PLUGINS = "FACEMARGIN_NO_PLUGINS"
#: the entry-point groups read at the start of a command
GROUPS = ("facemargin.losses", "facemargin.models")

# .py files already imported in this process, by resolved path -> module name (a second main()
# in one process must not run the file again: its names would be registered twice)
_FILES: Dict[Path, str] = {}


class PluginError(Exception):
    """A user module or an installed plugin could not be loaded (the message is one line)."""


def _reason(e: BaseException) -> str:
    """The cause in one line: ``No module named 'x'`` for a missing module, else ``Type: message``."""
    text = " ".join(str(e).split())
    if isinstance(e, ImportError) and text:
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _is_path(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or os.sep in spec


def _import_file(spec: str):
    path = Path(spec).expanduser()
    if not path.is_file():
        where = str(path.absolute())
        what = "a folder, not a .py file" if path.is_dir() else "no such file"
        raise PluginError(f"cannot import {spec}: {what}" + ("" if where == spec else f" ({where})"))
    path = path.resolve()
    if path in _FILES:
        return sys.modules[_FILES[path]]
    name = path.stem
    same = sys.modules.get(name)
    if same is not None and getattr(same, "__file__", None) and Path(same.__file__).resolve() == path:
        return same  # already imported by its module name (e.g. --import my_margins and my_margins.py)
    if not name.isidentifier() or name in sys.modules:  # never shadow a module already loaded
        name = f"facemargin_user_{zlib.crc32(str(path).encode()):08x}"
    mod_spec = importlib.util.spec_from_file_location(name, path)
    if mod_spec is None or mod_spec.loader is None:
        raise PluginError(f"cannot import {spec}: not a Python source file")
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[name] = module  # as a normal import does (pickling, dataclasses, self-imports)
    try:
        mod_spec.loader.exec_module(module)
    except BaseException as e:
        sys.modules.pop(name, None)
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise PluginError(f"cannot import {spec}: {_reason(e)}") from e
    _FILES[path] = name
    return module


def import_module(spec: str):
    """Import ``spec``: a dotted module name importable from ``sys.path``, or a path to a ``.py``
    file. Raise :class:`PluginError` ``"cannot import SPEC: ..."`` when it fails."""
    spec = spec.strip()
    if not spec:
        raise PluginError("cannot import an empty module name")
    if _is_path(spec):
        return _import_file(spec)
    try:
        return importlib.import_module(spec)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:
        raise PluginError(f"cannot import {spec}: {_reason(e)}") from e


def env_imports(environ=None) -> List[str]:
    """The modules of ``FACEMARGIN_IMPORT`` (comma-separated, blanks ignored)."""
    value = (os.environ if environ is None else environ).get(ENV_IMPORT, "")
    return [s.strip() for s in value.split(",") if s.strip()]


def entry_points(groups: Sequence[str] = GROUPS):
    """The installed entry points of ``groups``, group by group, each sorted by name."""
    from importlib.metadata import entry_points as _eps

    out = []
    for group in groups:
        out.extend(sorted(_eps(group=group), key=lambda ep: ep.name))
    return out


def load_entry_points(groups: Sequence[str] = GROUPS) -> List[str]:
    """Load every installed plugin of ``groups``; return their ``group:name``. Raise
    :class:`PluginError` naming the first one that fails."""
    loaded = []
    for ep in entry_points(groups):
        try:
            ep.load()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:
            dist = getattr(ep, "dist", None)
            origin = f", package {dist.name} {dist.version}" if dist is not None else ""
            raise PluginError(f"plugin {ep.name!r} ({ep.group} = {ep.value!r}{origin}) failed to load: "
                              f"{_reason(e)}; uninstall it or set {ENV_NO_PLUGINS}=1 to skip installed plugins") from e
        loaded.append(f"{ep.group}:{ep.name}")
    return loaded


def load(imports: Iterable[str] = (), environ=None) -> None:
    """Everything a command run needs: the installed plugins (unless ``FACEMARGIN_NO_PLUGINS`` is
    set), then the modules of ``FACEMARGIN_IMPORT``, then ``imports`` (``--import``)."""
    environ = os.environ if environ is None else environ
    if environ.get(ENV_NO_PLUGINS, "").strip().lower() in ("", "0", "false", "no"):
        load_entry_points()
    seen = set()
    for spec in [*env_imports(environ), *imports]:
        if spec in seen:
            continue
        seen.add(spec)
        import_module(spec)
