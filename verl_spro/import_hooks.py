"""Run a function on a module right after it is imported, before any importer sees its names.

verl imports some functions by name (``from verl.trainer.ppo.ray_trainer import compute_advantage``), so a
wrapper must replace the function in its defining module *before* the importing module runs. Importing those
modules eagerly from the plugin would add seconds and heavy side effects to every ``import verl`` (in every Ray
worker), so instead a ``sys.meta_path`` finder wraps the loader of each watched module and calls the hooks once
the module's code has run. A module already imported when a hook is registered gets the hook immediately.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ["when_imported"]

Hook = Callable[[ModuleType], None]

_hooks: dict[str, list[Hook]] = {}
_lock = threading.RLock()


class _HookedLoader(importlib.abc.Loader):
    """Delegates to the real loader and runs the hooks after ``exec_module``."""

    def __init__(self, loader: importlib.abc.Loader, name: str) -> None:
        self._loader = loader
        self._name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        # Leave the real loader on the module so tools that inspect __loader__ (inspect, linecache) see it.
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        _run_hooks(self._name, module)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._loader, attr)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    def __init__(self) -> None:
        self._resolving: set[str] = set()

    def find_spec(self, fullname: str, path: Any, target: ModuleType | None = None) -> Any:
        if fullname not in _hooks or fullname in self._resolving:
            return None
        self._resolving.add(fullname)
        try:
            # Ask the rest of sys.meta_path (this finder declines while resolving) for the real spec.
            spec = importlib.util.find_spec(fullname)
        finally:
            self._resolving.discard(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _HookedLoader(spec.loader, fullname)
        return spec


_finder = _PostImportFinder()


def _run_hooks(name: str, module: ModuleType) -> None:
    with _lock:
        hooks = _hooks.pop(name, [])
    for hook in hooks:
        hook(module)


def when_imported(module_name: str, hook: Hook) -> None:
    """Call ``hook(module)`` once ``module_name`` has been imported (now, if it already is).

    Args:
        module_name: fully qualified module name, e.g. ``"verl.trainer.ppo.ray_trainer"``.
        hook: called once with the module object, after its code ran and before the import returns.
    """
    module = sys.modules.get(module_name)
    if module is not None and getattr(module, "__spec__", None) is not None and not _initialising(module):
        hook(module)
        return
    with _lock:
        _hooks.setdefault(module_name, []).append(hook)
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)


def _initialising(module: ModuleType) -> bool:
    return bool(getattr(module.__spec__, "_initializing", False))
