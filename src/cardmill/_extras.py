"""Optional parts of cardmill and the extras that install them."""

from __future__ import annotations

import importlib

from .errors import MissingExtra

__all__ = ["require"]


def require(*modules: str, extra: str, feature: str) -> None:
    """Import `modules`, or raise `MissingExtra` naming `extra` when one cannot be.

    Args:
        modules: the modules the feature imports.
        extra: the extra of cardmill's distribution that installs them.
        feature: what needs them, as the message names it.

    Raises:
        MissingExtra: a module is not installed (or cannot be imported).
    """
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise MissingExtra(feature, extra, module=module) from exc
