"""Window geometry and dock layout: opaque Qt state, versioned, kept apart from settings."""

from __future__ import annotations

from PySide6.QtCore import QByteArray, QSettings
from PySide6.QtWidgets import QMainWindow

from avaturn_desktop.core.paths import config_dir

#: Bump whenever the set of docks changes: an old layout is then ignored, not half-applied.
LAYOUT_VERSION = 4


def _store() -> QSettings:
    return QSettings(str(config_dir() / "window-state.ini"), QSettings.Format.IniFormat)


def save(window: QMainWindow) -> None:
    store = _store()
    store.setValue("layout_version", LAYOUT_VERSION)
    store.setValue("geometry", window.saveGeometry())
    store.setValue("state", window.saveState(LAYOUT_VERSION))
    store.sync()


def restore(window: QMainWindow) -> bool:
    """Restore what was saved for this layout version; False when the defaults stay."""
    store = _store()
    if str(store.value("layout_version", 0)) != str(LAYOUT_VERSION):
        return False
    geometry = store.value("geometry")
    state = store.value("state")
    ok = isinstance(geometry, QByteArray) and window.restoreGeometry(geometry)
    return bool(isinstance(state, QByteArray) and window.restoreState(state, LAYOUT_VERSION) and ok)
