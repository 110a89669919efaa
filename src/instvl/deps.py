"""Optional heavy dependencies: import them lazily and say which extra installs a missing one."""

import importlib
import importlib.util
from types import ModuleType


class MissingDependencyError(ImportError):
    """Raised when an optional dependency is not installed; the message names the extra to install."""


def is_available(module: str) -> bool:
    """True when `module` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, extra: str) -> ModuleType:
    """Import `module`, or raise an error that names `pip install 'instvl[extra]'`."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependencyError(
            f"{module!r} is needed here but could not be imported ({err}). "
            f"Install it with: pip install 'instvl[{extra}]'"
        ) from err
