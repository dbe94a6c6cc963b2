"""Modules imported on first use: pandas costs about half a second of every cutover's start-up,
and the first table it builds is well after the run has begun (in a thread, beside other work)."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule(ModuleType):
    def __init__(self, name: str):
        super().__init__(name)
        self._module: ModuleType | None = None

    def load(self) -> ModuleType:
        if self._module is None:
            self._module = importlib.import_module(self.__name__)
        return self._module

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(self.load(), attr)


pandas = LazyModule("pandas")


def preload(module: LazyModule) -> None:
    """Import it now in a daemon thread: a run's first steps mostly wait on PostgreSQL and
    subprocesses, so the import fits in their idle time instead of the first table's step."""
    import threading

    def load() -> None:
        try:
            module.load()
        except Exception:  # the step that needs it reports the error
            pass

    threading.Thread(target=load, name=f"preload-{module.__name__}", daemon=True).start()
