"""PySide6 must not keep the source of every module imported after it (``ui/pyside_quirks``).

Run in a fresh interpreter: what the import hook did depends on what was imported before.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from avaturn_desktop.ui.pyside_quirks import mentions_pyside

_PROBE = textwrap.dedent(
    """
    import json, linecache, sys
    import PySide6.QtCore
    import avaturn_desktop.ui
    import with_qt, without_qt
    import avaturn_desktop.ui.shell  # the app's whole window and services
    feature = sys.modules["shibokensupport.feature"]
    print(json.dumps({
        "cached": sorted(linecache.cache),
        "with_qt": feature.pyside_feature_dict.get("with_qt"),
        "without_qt": feature.pyside_feature_dict.get("without_qt"),
    }))
    """
)


def _run_probe(where: Path) -> dict[str, object]:
    (where / "with_qt.py").write_text("from PySide6 import QtCore\n", encoding="utf-8")
    (where / "without_qt.py").write_text("import json\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=where,
        env={"PYTHONPATH": str(where), "QT_QPA_PLATFORM": "offscreen", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_no_module_source_is_kept_after_qt(tmp_path: Path) -> None:
    found = _run_probe(tmp_path)
    # shiboken's hook read ~400 files (the app's and its libraries') into linecache for good
    assert found["cached"] == []
    # ...and still tells a module that uses PySide6 from one that does not, as before
    assert found["with_qt"] == 0
    assert found["without_qt"] == -1


def test_the_check_reads_sources_without_keeping_them() -> None:
    import linecache

    import avaturn_desktop.ui.web.view as qt_module
    from avaturn_desktop.core import paths

    linecache.clearcache()
    assert mentions_pyside(qt_module)
    assert not mentions_pyside(paths)
    assert not mentions_pyside(sys)  # built in: no source, as for shiboken's own check
    assert qt_module.__file__ not in linecache.cache
