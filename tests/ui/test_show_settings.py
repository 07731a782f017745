"""Settings → Show and Keys: the stage's look and the keys saved with the rest, checked by the
same rules; two actions on one key are not saved."""

from __future__ import annotations

from typing import Any

from PySide6.QtGui import QKeySequence

from avaturn_desktop.core.look import CHROMA_BLUE
from avaturn_desktop.core.settings import Settings
from avaturn_desktop.ui.settings_dialog import SettingsDialog


def test_the_show_and_keys_pages_are_saved(qtbot: Any) -> None:
    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    page = dialog.show_page
    page.background.setCurrentIndex(page.background.findData("colour"))
    page.background_colour.edit.setText(CHROMA_BLUE.upper())
    page.captions_on.setChecked(True)
    page.caption_size.setValue(7.5)
    page.caption_position.setCurrentIndex(page.caption_position.findData("top"))
    dialog.keys_page.edits["go"].setKeySequence(QKeySequence("F8"))
    with qtbot.waitSignal(dialog.saved) as saved:
        dialog.accept()
    new: Settings = saved.args[0]
    assert new.stage_background.kind == "colour" and new.stage_background.colour == CHROMA_BLUE
    assert new.captions.on and new.captions.size_pct == 7.5 and new.captions.position == "top"
    assert new.keys == {"go": "F8"}  # only what differs from the defaults


def test_bad_values_and_key_conflicts_are_not_saved(qtbot: Any) -> None:
    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    saved: list[Any] = []
    dialog.saved.connect(saved.append)
    dialog.show_page.caption_colour.edit.setText("white")
    dialog.accept()
    assert not saved and "colour" in dialog.error.text()
    dialog.show_page.caption_colour.edit.setText("#ffffff")
    dialog.show_page.background.setCurrentIndex(dialog.show_page.background.findData("image"))
    dialog.accept()
    assert not saved and "image" in dialog.error.text()
    dialog.show_page.background.setCurrentIndex(0)
    dialog.keys_page.edits["skip"].setKeySequence(QKeySequence("Ctrl+G"))  # GO's key
    dialog.accept()
    assert not saved and dialog.tabs.currentWidget() is dialog.keys_page
    assert "Give one of them another key" in dialog.error.text()
    dialog.keys_page.edits["skip"].setKeySequence(QKeySequence("Ctrl+Q"))  # Quit's
    dialog.accept()
    assert not saved and "Quit" in dialog.error.text()
    dialog.keys_page.edits["skip"].setKeySequence(QKeySequence("Ctrl+K"))
    dialog.accept()
    assert saved and saved[0].keys == {"skip": "Ctrl+K"}
