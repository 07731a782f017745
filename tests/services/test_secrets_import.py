"""Looking the key up in the keyring costs no search for macOS frameworks elsewhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import ctypes.util
looked_for = []
find = ctypes.util.find_library
ctypes.util.find_library = lambda name: looked_for.append(name) or find(name)
from avaturn_desktop.services import secrets
secrets.load_api_key()
import keyring
print(sorted(set(looked_for)), type(keyring.get_keyring()).__module__)
"""


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS has the frameworks it looks for")
def test_the_keyring_lookup_does_not_search_for_macos_frameworks() -> None:
    """keyring's macOS backend runs ldconfig, gcc and ld to look for them at import (~80 ms
    before the first session); the app's lookup skips that import where it cannot succeed."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
        check=True, timeout=60,
    ).stdout.split()  # fmt: skip
    assert out[0] == "[]", out
