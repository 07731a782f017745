"""PySide6 behaviours that cost the app memory and give it nothing, undone at the source.

**Every module's source kept in memory.** Importing PySide6 replaces ``builtins.__import__``
with shiboken's ``__feature__`` hook (for ``from __feature__ import snake_case``, which this
app never uses). For each module an ``import`` statement names after that, the hook asks
whether its source mentions "PySide6" through ``inspect.getsource``, and ``linecache`` keeps
every line it read for good: about 400 files and 15 MB of strings in the app's process (a
third of its memory over a bare Qt window). :func:`stop_source_caching` makes the same check
by reading the source without caching it, so every module gets the same answer as before,
and drops the files the hook had read until then.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import ModuleType

log = logging.getLogger("avaturn.ui")

_FEATURE_MODULE = "shibokensupport.feature"
_CHECK = "_mod_uses_pyside"


def mentions_pyside(module: ModuleType) -> bool:
    """Whether the module's source mentions "PySide6" (as shiboken's own check answers),
    read from its loader or its file and not kept: no source (a built-in, an extension, a
    frozen module) is False, as it is for shiboken."""
    spec = getattr(module, "__spec__", None)
    file = getattr(module, "__file__", None)
    source: str | None = None
    try:
        get_source = getattr(getattr(spec, "loader", None), "get_source", None)
        if spec is not None and get_source is not None:
            source = get_source(spec.name)
        elif isinstance(file, str) and file.endswith(".py"):
            source = Path(file).read_text(encoding="utf-8")
    except (ImportError, OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return False
    return source is not None and "PySide6" in source


def stop_source_caching() -> bool:
    """Replace shiboken's source check by :func:`mentions_pyside` (see the module docs).

    True when it was replaced (or already was); False when this PySide6 has no such check,
    which is then nothing to undo.
    """
    import PySide6  # noqa: F401 (loads shiboken, which installs its import hook)

    feature = sys.modules.get(_FEATURE_MODULE)
    check = getattr(feature, _CHECK, None)
    if feature is None or check is None:
        log.debug("PySide6 has no %s.%s: nothing to replace", _FEATURE_MODULE, _CHECK)
        return False
    setattr(feature, _CHECK, mentions_pyside)
    _forget_read_sources()
    return True


def _forget_read_sources() -> None:
    """Drop from ``linecache`` what the hook read before it was replaced (PySide6's own
    modules and the few this one imports): only files, which a traceback reads again when it
    needs them; lines registered for code with no file are kept."""
    import linecache

    for name, entry in list(linecache.cache.items()):
        if len(entry) == 4 and entry[1] is not None:
            linecache.cache.pop(name, None)
