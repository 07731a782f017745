"""What must be settled before Qt starts: system libraries, the Chromium sandbox, the GPU, and
secrets that must not reach Qt's child processes.

Qt aborts with a cryptic platform-plugin error when an xcb library is missing, and Chromium
refuses to run as root with its sandbox on. Both are checked here, before any Qt import, so
the user gets one clear line instead.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger("avaturn.startup")

#: Libraries Qt's xcb platform plugin and QtWebEngine load: the name to look for, the file the
#: dynamic loader opens (its soname), and the Debian/Ubuntu package that ships it. (Seen
#: missing on fresh machines: the first three.)
XCB_LIBRARIES: tuple[tuple[str, str, str], ...] = (
    ("xcb-cursor", "libxcb-cursor.so.0", "libxcb-cursor0"),
    ("xcb-icccm", "libxcb-icccm.so.4", "libxcb-icccm4"),
    ("xcb-keysyms", "libxcb-keysyms.so.1", "libxcb-keysyms1"),
    ("xcb-image", "libxcb-image.so.0", "libxcb-image0"),
    ("xcb-render-util", "libxcb-render-util.so.0", "libxcb-render-util0"),
    ("xcb-randr", "libxcb-randr.so.0", "libxcb-randr0"),
    ("xcb-shape", "libxcb-shape.so.0", "libxcb-shape0"),
    ("xcb-xkb", "libxcb-xkb.so.1", "libxcb-xkb1"),
    ("xkbcommon-x11", "libxkbcommon-x11.so.0", "libxkbcommon-x11-0"),
)
WEBENGINE_LIBRARIES: tuple[tuple[str, str, str], ...] = (
    ("nss3", "libnss3.so", "libnss3"),
    ("asound", "libasound.so.2", "libasound2"),
    ("fontconfig", "libfontconfig.so.1", "libfontconfig1"),
)


def platform_name() -> str:
    """The Qt platform plugin that will be used (as Qt would choose it, roughly)."""
    explicit = os.environ.get("QT_QPA_PLATFORM", "")
    if explicit:
        return explicit.split(":")[0]
    if not sys.platform.startswith("linux"):
        return "native"
    if os.environ.get("WAYLAND_DISPLAY"):
        return "wayland"
    return "xcb"


def display_available() -> bool:
    """False on a Linux machine with no screen to open a window on (and no platform forced)."""
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def missing_packages() -> list[str]:
    """Debian/Ubuntu packages whose libraries Qt will need here but cannot find."""
    if not sys.platform.startswith("linux"):
        return []
    wanted = list(WEBENGINE_LIBRARIES)
    if platform_name() == "xcb":
        wanted += XCB_LIBRARIES
    return [package for name, soname, package in wanted if not _present(name, soname)]


def _present(name: str, soname: str) -> bool:
    """Whether the dynamic loader finds a library. Opened by its soname first: a fraction of a
    millisecond, and Qt opens it right after anyway. Only when that fails is it looked for
    by name, as ``ctypes.util`` does (it runs ldconfig, then gcc: ~4 ms a library, before
    the window)."""
    try:
        ctypes.CDLL(soname)
    except OSError:
        from ctypes.util import find_library

        return find_library(name) is not None
    return True


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def prepare_environment(*, headless: bool = False) -> list[str]:
    """Set what QtWebEngine needs on this machine; returns what was done, to be logged."""
    notes: list[str] = []
    if running_as_root() and not os.environ.get("QTWEBENGINE_DISABLE_SANDBOX"):
        os.environ["QTWEBENGINE_DISABLE_SANDBOX"] = "1"
        notes.append(
            "Running as root: Chromium's sandbox is turned off for the avatar page "
            "(run as a normal user to keep it on)"
        )
    flags = os.environ.get("QTWEBENGINE_CHROMIUM_FLAGS", "").split()
    if (headless or platform_name() in ("offscreen", "minimal")) and "--disable-gpu" not in flags:
        flags.append("--disable-gpu")
        notes.append("No display: the avatar page renders in software (--disable-gpu)")
    # The page must be able to play the avatar's audio without a click (a kiosk has nobody).
    if "--autoplay-policy=no-user-gesture-required" not in flags:
        flags.append("--autoplay-policy=no-user-gesture-required")
    os.environ["QTWEBENGINE_CHROMIUM_FLAGS"] = " ".join(flags)
    return notes


def scrub_secrets() -> list[str]:
    """Take the API key out of the environment before Qt starts; returns what was done.

    QtWebEngine starts its processes (the page's renderer among them) with the app's
    environment, and as root Chromium's sandbox is off, so a renderer could also read the
    app's own ``/proc/<pid>/environ``. The key is taken out of the environment (the app keeps
    it, see ``secrets.withdraw_from_environment``), and on Linux its value is also wiped from
    the process's original environment block, which is what ``/proc/<pid>/environ`` shows.
    """
    from avaturn_desktop.services import secrets

    notes: list[str] = []
    for name in secrets.SECRET_ENV_VARS:
        wiped = _wipe_initial_environment(name)
        if not secrets.withdraw_from_environment(name) and not wiped:
            continue
        notes.append(
            f"{name} was taken out of the environment: the avatar page's processes never see it"
        )
        if _visible_in_proc_environ(name):
            notes.append(
                f"{name} is still listed in /proc/{os.getpid()}/environ: store the key in the "
                "OS keyring (File → Settings) to keep it out of the environment entirely"
            )
    return notes


def _wipe_initial_environment(name: str) -> bool:
    """Overwrite the value of ``name`` in the C environment's strings; True if any was found.

    The kernel's ``/proc/<pid>/environ`` is the environment the process started with, where
    the C library's ``environ`` entries still point until they are unset: zeroing the value
    there is the only way to take it out of that view. Linux only; elsewhere a no-op.
    """
    if not sys.platform.startswith("linux"):
        return False
    prefix = name.encode() + b"="
    try:
        libc = ctypes.CDLL(None)
        entries = ctypes.POINTER(ctypes.c_void_p).in_dll(libc, "environ")
    except (OSError, ValueError, AttributeError):
        return False
    found = False
    index = 0
    while (address := entries[index]) is not None:
        index += 1
        entry = ctypes.string_at(address)
        if entry.startswith(prefix):
            ctypes.memset(address + len(prefix), 0, len(entry) - len(prefix))
            found = True
    return found


def _visible_in_proc_environ(name: str) -> bool:
    """Whether ``/proc/self/environ`` still lists ``name`` with a value."""
    try:
        with open("/proc/self/environ", "rb") as raw:
            block = raw.read()
    except OSError:
        return False
    prefix = name.encode() + b"="
    return any(e.startswith(prefix) and len(e) > len(prefix) for e in block.split(b"\0"))
