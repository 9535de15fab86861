"""Run a function on a module right after it is imported, before any importer sees its names.

verl imports some functions by name (``from verl.trainer.ppo.ray_trainer import compute_advantage``), so a
wrapper must replace the function in its defining module *before* the importing module runs. Importing those
modules eagerly from the plugin would add seconds and heavy side effects to every ``import verl`` (in every Ray
worker), so instead a ``sys.meta_path`` finder wraps the loader of each watched module and calls the hooks once
the module's code has run. A module already imported when a hook is registered gets the hook immediately. The
finder takes no import lock of its own (see :func:`_find_with_others`), so imports from several threads at once
behave as without it.

Hooks are fail-soft: a hook that raises never breaks the import of its module. The failure is recorded
(:func:`hook_failures`) and handed to the hook's ``on_error`` callback, or logged as a warning without one.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

__all__ = ["HookFailure", "hook_failures", "when_imported"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HookFailure:
    """A hook that raised: the module was imported without it."""

    module: str
    hook: str
    error: BaseException

    def __str__(self) -> str:
        return f"{self.hook} on {self.module}: {type(self.error).__name__}: {self.error}"


Hook = Callable[[ModuleType], None]
ErrorHandler = Callable[[HookFailure], None]

_hooks: dict[str, list[tuple[Hook, ErrorHandler | None]]] = {}
_failures: list[HookFailure] = []
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
    def find_spec(self, fullname: str, path: Any, target: ModuleType | None = None) -> Any:
        if fullname not in _hooks:
            return None
        spec = _find_with_others(self, fullname, path, target)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _HookedLoader(spec.loader, fullname)
        return spec


def _find_with_others(finder: object, fullname: str, path: Any, target: ModuleType | None) -> Any:
    """The spec the rest of ``sys.meta_path`` gives, asked with the import system's own arguments.

    Not ``importlib.util.find_spec``: that re-imports the parent package, which takes the parent's module lock
    while the import system holds the child's. With the parent still initialising in another thread (which waits
    for the child's lock), the two threads wait for each other forever: 4 threads importing verl's trainer modules
    at once hung in about 1 run of 4. Calling the other finders directly takes no import lock.
    """
    for other in list(sys.meta_path):
        if other is finder:
            continue
        find_spec = getattr(other, "find_spec", None)
        if find_spec is None:
            continue
        spec = find_spec(fullname, path, target)
        if spec is not None:
            return spec
    return None


_finder = _PostImportFinder()


def _run_hooks(name: str, module: ModuleType) -> None:
    with _lock:
        hooks = _hooks.pop(name, [])
    for hook, on_error in hooks:
        _run_one(name, module, hook, on_error)


def _run_one(name: str, module: ModuleType, hook: Hook, on_error: ErrorHandler | None) -> None:
    """Run one hook; whatever it raises is recorded and reported, never propagated into the import."""
    try:
        hook(module)
    except Exception as err:  # fail-soft by design: the module must import without its hook
        failure = HookFailure(name, getattr(hook, "__qualname__", repr(hook)), err)
        with _lock:
            _failures.append(failure)
        try:
            if on_error is None:
                logger.warning("post-import hook failed, %s imported without it: %s", name, failure)
            else:
                on_error(failure)
        except Exception:
            logger.warning("post-import hook failed, %s imported without it: %s", name, failure)


def hook_failures() -> list[HookFailure]:
    """Every hook that raised in this process, in order."""
    with _lock:
        return list(_failures)


def when_imported(module_name: str, hook: Hook, on_error: ErrorHandler | None = None) -> None:
    """Call ``hook(module)`` once ``module_name`` has been imported (now, if it already is).

    Args:
        module_name: fully qualified module name, e.g. ``"verl.trainer.ppo.ray_trainer"``.
        hook: called once with the module object, after its code ran and before the import returns. If it
            raises, the module is imported without it and the failure is recorded (:func:`hook_failures`).
        on_error: called with the :class:`HookFailure` when ``hook`` raises; default: a logged warning.
    """
    module = sys.modules.get(module_name)
    if module is not None and getattr(module, "__spec__", None) is not None and not _initialising(module):
        _run_one(module_name, module, hook, on_error)
        return
    with _lock:
        _hooks.setdefault(module_name, []).append((hook, on_error))
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)


def _initialising(module: ModuleType) -> bool:
    return bool(getattr(module.__spec__, "_initializing", False))
