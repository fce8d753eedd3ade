"""Source handlers: one pure module per platform (see ``handlers.base``)."""
from __future__ import annotations

import importlib
from types import ModuleType

REQUIRED = ("ENDPOINTS", "BODY", "STATES", "parse", "apply")


class HandlerNotFound(LookupError):
    pass


def load_handler(source: str, module_name: str | None = None) -> ModuleType:
    """Import the handler of a source: ``module_name`` if given, else ``handlers.<source>``."""
    name = module_name or f"handlers.{source}"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name and name.startswith(error.name):
            raise HandlerNotFound(f"no handler module '{name}'") from None
        raise
    missing = [attr for attr in REQUIRED if not hasattr(module, attr)]
    if missing:
        raise HandlerNotFound(f"handler module '{name}' lacks {', '.join(missing)}")
    return module
