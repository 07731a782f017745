"""PySide6's per-import hook for ``from __feature__ import ...``, taken out of the app's imports.

Importing PySide6 puts its ``__feature_import__`` in place of ``builtins.__import__``. It calls
back into Python on every import statement, and for every module imported for the first time
it reads that module's whole source file to see whether it mentions PySide6 (such a module may
opt into the ``snake_case`` and ``true_property`` features). The app uses neither feature, and
the reading cost about 50 ms of CPU at each start: the settings, the services and the panels
are imported after Qt, so that the window's frame is painted first. Only that layer goes: the
import it wraps (``builtins.__orig_import__``, PySide6's loader of its lazily made types)
stays, so ``from PySide6.QtGui import QAction`` works as before.
"""

from __future__ import annotations

import builtins
import logging

__all__ = ["drop_feature_import"]

log = logging.getLogger("avaturn.qt")


def drop_feature_import() -> bool:
    """Take PySide6's feature hook out of ``builtins.__import__``; True if it was there.

    Call it once PySide6 is imported; calling it again, or on a PySide6 without the hook,
    changes nothing.
    """
    current = builtins.__import__
    below = getattr(builtins, "__orig_import__", None)
    if below is None or getattr(current, "__name__", "") != "__feature_import__":
        return False
    builtins.__import__ = below
    log.debug("PySide6's feature import hook is off (the app uses no __feature__)")
    return True
