"""Settings → Show: what the stage paints behind the avatar, the captions, and the audience
output's screen (``core/look.py``). The Keys page is ``ui/keys.py``'s :class:`KeysEditor`."""

from __future__ import annotations

from typing import Any

from PySide6.QtGui import QColor, QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QColorDialog,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QWidget,
)

from avaturn_desktop.core.look import CHROMA_BLUE, CHROMA_GREEN, IMAGE_TYPES
from avaturn_desktop.core.settings import Settings

_BACKGROUNDS = (
    ("default", "The avatar's own (default)"),
    ("transparent", "Transparent (OBS window capture with alpha)"),
    ("colour", "A colour (chroma green, blue, any)"),
    ("image", "An image"),
)


class ColourField(QWidget):
    """``#rrggbb`` / ``#rrggbbaa`` typed, or picked."""

    def __init__(self, value: str, *, alpha: bool = False, presets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.edit = QLineEdit(value)
        self.edit.setMaxLength(9)
        self.edit.setPlaceholderText("#rrggbb" + ("aa" if alpha else ""))
        self._alpha = alpha
        pick = QPushButton("Pick…")
        pick.clicked.connect(self._pick)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit, 1)
        for preset, label in (
            (p, {CHROMA_GREEN: "Green", CHROMA_BLUE: "Blue"}[p]) for p in presets
        ):
            button = QPushButton(label)
            button.clicked.connect(lambda _c=False, p=preset: self.edit.setText(p))
            row.addWidget(button)
        row.addWidget(pick)

    def value(self) -> str:
        return self.edit.text().strip()

    def _pick(self) -> None:
        options = QColorDialog.ColorDialogOption.ShowAlphaChannel if self._alpha else None
        current = QColor(self.value()) if QColor.isValidColorName(self.value()) else QColor()
        colour = (
            QColorDialog.getColor(current, self, "Colour", options)
            if options is not None
            else QColorDialog.getColor(current, self, "Colour")
        )
        if colour.isValid():
            text = colour.name(QColor.NameFormat.HexRgb)
            if self._alpha:
                text += f"{colour.alpha():02x}"
            self.edit.setText(text)


class ShowSettings(QWidget):
    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("show_settings")
        background = settings.stage_background
        captions = settings.captions
        self.background = QComboBox()
        for value, label in _BACKGROUNDS:
            self.background.addItem(label, value)
        self.background.setCurrentIndex(self.background.findData(background.kind))
        self.background_colour = ColourField(background.colour, presets=(CHROMA_GREEN, CHROMA_BLUE))
        self.background_image = QLineEdit(background.image or "")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        image_row = QHBoxLayout()
        image_row.addWidget(self.background_image, 1)
        image_row.addWidget(browse)
        self.captions_on = QCheckBox("Show captions of what the avatar says")
        self.captions_on.setChecked(captions.on)
        self.caption_size = QDoubleSpinBox()
        self.caption_size.setRange(2, 15)
        self.caption_size.setSingleStep(0.5)
        self.caption_size.setSuffix(" % of the height")
        self.caption_size.setValue(captions.size_pct)
        self.caption_position = QComboBox()
        self.caption_position.addItem("Bottom", "bottom")
        self.caption_position.addItem("Top", "top")
        self.caption_position.setCurrentIndex(self.caption_position.findData(captions.position))
        self.caption_colour = ColourField(captions.colour)
        self.caption_background = ColourField(captions.background, alpha=True)
        self.audience_screen = QComboBox()
        for number, screen in enumerate(QGuiApplication.screens()):
            size = screen.geometry()
            self.audience_screen.addItem(
                f"{number}: {screen.name()} {size.width()}×{size.height()}", number
            )
        if self.audience_screen.findData(settings.audience_screen) < 0:
            self.audience_screen.addItem(
                f"{settings.audience_screen}: not connected", settings.audience_screen
            )
        self.audience_screen.setCurrentIndex(
            self.audience_screen.findData(settings.audience_screen)
        )
        self.fullscreen = QCheckBox("Full screen")
        self.fullscreen.setChecked(settings.audience_fullscreen)

        form = QFormLayout(self)
        form.addRow("Stage &background", self.background)
        form.addRow("Background &colour", self.background_colour)
        form.addRow("Background &image", image_row)
        form.addRow("", self.captions_on)
        form.addRow("Caption si&ze", self.caption_size)
        form.addRow("Caption &position", self.caption_position)
        form.addRow("Caption &text colour", self.caption_colour)
        form.addRow("Caption bo&x colour", self.caption_background)
        form.addRow("Audience &screen", self.audience_screen)
        form.addRow("", self.fullscreen)

    def _browse(self) -> None:
        kinds = " ".join(f"*{s}" for s in sorted(IMAGE_TYPES))
        path, _ = QFileDialog.getOpenFileName(
            self, "Background image", self.background_image.text(), f"Images ({kinds})"
        )
        if path:
            self.background_image.setText(path)

    def values(self) -> dict[str, Any]:
        """The fields of :class:`Settings` this page edits (validated by the dialog)."""
        image = self.background_image.text().strip()
        return {
            "stage_background": {
                "kind": self.background.currentData(),
                "colour": self.background_colour.value(),
                "image": image or None,
            },
            "captions": {
                "on": self.captions_on.isChecked(),
                "size_pct": self.caption_size.value(),
                "position": self.caption_position.currentData(),
                "colour": self.caption_colour.value(),
                "background": self.caption_background.value(),
            },
            "audience_screen": self.audience_screen.currentData(),
            "audience_fullscreen": self.fullscreen.isChecked(),
        }
