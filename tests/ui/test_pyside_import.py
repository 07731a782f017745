"""PySide6's feature import hook is taken out, and Qt's own imports still work without it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CHECK = textwrap.dedent(
    """
    import builtins, sys
    from PySide6.QtWidgets import QApplication
    feature_dict = sys.modules["shibokensupport.feature"].pyside_feature_dict
    noted = len(feature_dict)
    import json.tool  # with the hook: each new module read and noted
    assert len(feature_dict) > noted, "PySide6 no longer notes imported modules"
    from avaturn_desktop.ui.pyside_import import drop_feature_import
    assert drop_feature_import() is True
    assert drop_feature_import() is False  # once is enough
    noted = len(feature_dict)
    import http.server  # without the hook: not read, not noted
    assert len(feature_dict) == noted
    from PySide6.QtGui import QAction  # PySide6's lazily made types still load
    from PySide6.QtWebEngineCore import QWebEngineProfile
    assert QAction.__name__ == "QAction" and QWebEngineProfile.__name__ == "QWebEngineProfile"
    print("ok")
    """
)


def test_the_feature_hook_is_dropped_and_qt_imports_still_work() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_the_app_process_imports_without_the_hook() -> None:
    import builtins

    assert getattr(builtins.__import__, "__name__", "") != "__feature_import__"
