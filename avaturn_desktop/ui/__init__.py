"""Everything that touches Qt.

Importing this package first undoes a PySide6 behaviour that keeps the source of every module
imported after Qt in memory (see :mod:`avaturn_desktop.ui.pyside_quirks`): every Qt module of
the app is in this package, so it runs before the app's own imports that follow Qt's.
"""

from avaturn_desktop.ui.pyside_quirks import stop_source_caching

stop_source_caching()
