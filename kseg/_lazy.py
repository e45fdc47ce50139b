"""Packages whose names load on first use (PEP 562), so that importing a package starts no
backend: ``kseg``, ``kseg.data`` and ``kseg.experiment`` declare what they offer and import it
when it is first read."""

from __future__ import annotations

import importlib
import os
from typing import Callable, Mapping


def check_backend() -> None:
    """Imports Keras, and with it the backend ``KERAS_BACKEND`` names; where that fails, raises an
    ImportError naming kseg's extras."""
    try:
        import keras  # noqa: F401
    except ImportError as error:
        backend = os.environ.get("KERAS_BACKEND", "tensorflow")
        raise ImportError(
            f"kseg expects the Keras backend KERAS_BACKEND names to be installed. Received: KERAS_BACKEND={backend}, "
            f"which cannot be imported ({error}); install one with pip install 'kseg[tensorflow]', 'kseg[jax]' or "
            "'kseg[torch]' and set KERAS_BACKEND to match"
        ) from None


def loader(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__``: ``names`` maps each public name to the module
    that defines it (a name that is its module's own last part is that module)."""

    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            module = importlib.import_module(names[name])
        except ImportError:
            check_backend()  # a missing backend says which extra brings it
            raise
        return module if names[name].rpartition(".")[2] == name else getattr(module, name)

    def __dir__() -> list[str]:
        return sorted({*vars(importlib.import_module(package)), *names})

    return __getattr__, __dir__


__all__ = ["check_backend", "loader"]
