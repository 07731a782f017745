"""File → Settings: validation, and the API key going to the keyring only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from avaturn_desktop.core import paths
from avaturn_desktop.core import settings as settings_mod
from avaturn_desktop.core.settings import Settings
from avaturn_desktop.services import secrets
from avaturn_desktop.ui.settings_dialog import SettingsDialog


@pytest.fixture
def dialog(qtbot: Any) -> SettingsDialog:
    widget = SettingsDialog(Settings())
    qtbot.addWidget(widget)
    return widget


def test_saves_the_key_in_the_keyring_and_never_in_a_file(
    dialog: SettingsDialog, qtbot: Any, _memory_keyring: dict[tuple[str, str], str]
) -> None:
    canary = "sk-canary-0123456789abcdef"
    dialog.api_key.setText(canary)
    dialog.keep_alive.setChecked(False)
    with qtbot.waitSignal(dialog.saved) as saved:
        dialog.accept()
    new = saved.args[0]
    assert new.keep_alive is False
    assert secrets.load_api_key() == (canary, "keyring")
    assert dialog.api_key.text() == ""  # not left in the widget either
    settings_mod.save(new, paths.config_dir())
    for path in Path(paths.config_dir()).rglob("*"):
        if path.is_file():
            assert canary not in path.read_text(encoding="utf-8", errors="replace")


def test_a_bad_url_is_refused_with_a_message(dialog: SettingsDialog, qtbot: Any) -> None:
    dialog.api_base.setText("ftp://example")
    with qtbot.assertNotEmitted(dialog.saved):
        dialog.accept()
    assert "api_base" in dialog.error.text()
    assert "http" in dialog.error.text()


def test_the_environment_key_wins(
    monkeypatch: pytest.MonkeyPatch, _memory_keyring: dict[tuple[str, str], str]
) -> None:
    secrets.store_api_key("from-keyring")
    monkeypatch.setenv(secrets.ENV_VAR, "from-env")
    assert secrets.load_api_key() == ("from-env", "environment")
    monkeypatch.delenv(secrets.ENV_VAR)
    assert secrets.load_api_key() == ("from-keyring", "keyring")
    secrets.store_api_key(None)
    assert secrets.load_api_key() == (None, "none")


def test_settings_round_trip_and_a_broken_file_is_set_aside(tmp_path: Path) -> None:
    settings_mod.save(Settings(split_sentences=False), tmp_path)
    assert settings_mod.load(tmp_path).split_sentences is False
    (tmp_path / "settings.json").write_text("{not json", encoding="utf-8")
    assert settings_mod.load(tmp_path) == Settings()
    assert (tmp_path / "settings.broken.json").exists()


def test_the_voice_bench_settings_and_the_elevenlabs_key(
    dialog: SettingsDialog, qtbot: Any, _memory_keyring: dict[tuple[str, str], str]
) -> None:
    canary = "el-canary-0123456789abcdef"
    assert dialog.slot_quota.value() == 2  # the default: two avatars side by side
    dialog.slot_quota.setValue(3)
    dialog.slow_connect.setValue(8)
    dialog.elevenlabs_key.setText(canary)
    with qtbot.waitSignal(dialog.saved) as saved:
        dialog.accept()
    new = saved.args[0]
    assert (new.slot_quota, new.slow_connect_s) == (3, 8.0)
    assert secrets.load_elevenlabs_key() == (canary, "keyring")
    assert secrets.load_api_key() == (None, "none")  # its own entry
    assert dialog.elevenlabs_key.text() == ""
    settings_mod.save(new, paths.config_dir())
    for path in Path(paths.config_dir()).rglob("*"):
        if path.is_file():
            assert canary not in path.read_text(encoding="utf-8", errors="replace")
    again = SettingsDialog(new)
    qtbot.addWidget(again)
    assert again.forget_elevenlabs_key.isVisibleTo(again)
    again.forget_elevenlabs_key.setChecked(True)
    with qtbot.waitSignal(again.saved):
        again.accept()
    assert secrets.load_elevenlabs_key() == (None, "none")
