"""Where the app finds its shipped resources and keeps its data."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import platformdirs

APP_NAME = "avaturn-desktop"
HOME_ENV = "AVATURN_DESKTOP_HOME"


@cache
def resources_dir() -> Path:
    """The ``resources/`` tree: inside the installed wheel, or beside the package in a checkout."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "resources", package.parent / "resources"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the app's resources are missing (looked beside {package})")


def resource(*parts: str) -> Path:
    return resources_dir().joinpath(*parts)


def data_dir() -> Path:
    """The user data dir (task log, exports, session registry); ``AVATURN_DESKTOP_HOME`` wins."""
    override = os.environ.get(HOME_ENV)
    path = Path(override) if override else Path(platformdirs.user_data_dir(APP_NAME, False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_dir() -> Path:
    override = os.environ.get(HOME_ENV)
    path = (
        Path(override) / "config"
        if override
        else Path(platformdirs.user_config_dir(APP_NAME, False))
    )
    path.mkdir(parents=True, exist_ok=True)
    return path
