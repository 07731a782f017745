"""File → Settings, Ask's part: the language model's fields, checked, and its key going to the
keyring only (never a file, never the widget after saving)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from avaturn_desktop.core import paths
from avaturn_desktop.core import settings as settings_mod
from avaturn_desktop.core.settings import DEFAULT_LLM_BASE_URL, Settings
from avaturn_desktop.services import secrets
from avaturn_desktop.ui.settings_dialog import SettingsDialog


@pytest.fixture
def dialog(qtbot: Any) -> SettingsDialog:
    widget = SettingsDialog(Settings())
    qtbot.addWidget(widget)
    return widget


def test_the_model_and_its_key_are_saved_apart(
    dialog: SettingsDialog, qtbot: Any, _memory_keyring: dict[tuple[str, str], str]
) -> None:
    canary = "sk-llm-canary-5f0e9d8c7b"
    assert dialog.llm_base_url.text() == DEFAULT_LLM_BASE_URL
    dialog.llm_base_url.setText("http://localhost:11434/v1/")
    dialog.llm_model.setText("  llama3.2  ")
    dialog.llm_prompt.setPlainText("Answer like a pirate.")
    dialog.llm_timeout.setValue(12)
    dialog.llm_sim_rate.setValue(55)
    dialog.llm_key.setText(canary)
    with qtbot.waitSignal(dialog.saved) as saved:
        dialog.accept()
    llm = saved.args[0].llm
    assert (llm.base_url, llm.model, llm.system_prompt) == (
        "http://localhost:11434/v1",
        "llama3.2",
        "Answer like a pirate.",
    )
    assert (llm.timeout_s, llm.sim_tokens_per_second) == (12, 55)
    assert secrets.load_llm_api_key() == (canary, "keyring")
    assert secrets.load_api_key() == (None, "none")  # the Avaturn key is another entry
    assert dialog.llm_key.text() == ""
    settings_mod.save(saved.args[0], paths.config_dir())
    for path in Path(paths.config_dir()).rglob("*"):
        if path.is_file():
            assert canary not in path.read_text(encoding="utf-8", errors="replace")
    assert settings_mod.load(paths.config_dir()).llm == llm


def test_the_stored_key_can_be_removed(
    qtbot: Any, _memory_keyring: dict[tuple[str, str], str]
) -> None:
    secrets.store_llm_api_key("sk-stored")
    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    assert "keyring" in dialog.llm_key.placeholderText()
    dialog.forget_llm_key.setChecked(True)
    with qtbot.waitSignal(dialog.saved):
        dialog.accept()
    assert secrets.load_llm_api_key() == (None, "none")


def test_the_environment_key_wins(
    monkeypatch: pytest.MonkeyPatch, qtbot: Any, _memory_keyring: dict[tuple[str, str], str]
) -> None:
    secrets.store_llm_api_key("from-keyring")
    monkeypatch.setenv(secrets.LLM_ENV_VAR, " from-env ")
    assert secrets.load_llm_api_key() == ("from-env", "environment")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-shell")  # deliberately never read
    monkeypatch.delenv(secrets.LLM_ENV_VAR)
    assert secrets.load_llm_api_key() == ("from-keyring", "keyring")
    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    assert "keyring" in dialog.llm_key.placeholderText()


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("llm_base_url", "api.openai.com/v1", "llm.base_url"),
        ("llm_model", "   ", "llm.model"),
    ],
)
def test_bad_model_fields_are_refused_with_a_message(
    dialog: SettingsDialog, qtbot: Any, field: str, value: str, says: str
) -> None:
    getattr(dialog, field).setText(value)
    with qtbot.assertNotEmitted(dialog.saved):
        dialog.accept()
    assert says in dialog.error.text()
