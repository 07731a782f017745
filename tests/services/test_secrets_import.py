"""Looking the key up in the keyring costs no search for macOS frameworks elsewhere, and no
import of the Secret Service client where no session bus can be found."""

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


SECRET_SERVICE_PROBE = """
import sys
from avaturn_desktop.services import secrets
print(secrets.load_api_key()[1], sys.modules.get("secretstorage", "absent") is None)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Secret Service is Linux's")
@pytest.mark.parametrize(
    ("bus", "skipped"),
    [
        ({}, True),
        ({"DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent/bus"}, False),
        ({"XDG_RUNTIME_DIR": "{tmp}"}, False),  # a systemd user session's socket is there
    ],
)
def test_no_session_bus_no_secret_service_client(
    bus: dict[str, str], skipped: bool, tmp_path: Path
) -> None:
    """secretstorage (with cryptography, ~35 ms) is imported only where a session bus can be
    found; the lookup still answers, and the keyring is still asked where one can."""
    (tmp_path / "bus").touch()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    env |= {name: value.format(tmp=tmp_path) for name, value in bus.items()}
    out = subprocess.run(
        [sys.executable, "-c", SECRET_SERVICE_PROBE], cwd=ROOT, env=env, capture_output=True,
        text=True, check=True, timeout=60,
    ).stdout.split()  # fmt: skip
    assert out == ["none", str(skipped)]
