"""The kiosk section of the settings: opening hours as a class of lines (every day form, past
midnight, every wrong form refused with a sentence) and the watchdog's times."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from avaturn_desktop.core.kiosk import KioskSettings, OpeningHours
from avaturn_desktop.core.settings import Settings

MONDAY = dt.datetime(2026, 11, 30)  # a Monday


def at(day: int, hhmm: str) -> dt.datetime:
    hours, minutes = (int(x) for x in hhmm.split(":"))
    return MONDAY + dt.timedelta(days=day, hours=hours, minutes=minutes)


@pytest.mark.parametrize(
    ("line", "open_at", "closed_at"),
    [
        ("09:00-17:00", [at(0, "09:00"), at(6, "16:59")], [at(0, "08:59"), at(3, "17:00")]),
        ("daily 09:00-17:00", [at(5, "12:00")], [at(5, "17:30")]),
        ("mon-fri 09:00-18:00", [at(4, "17:59")], [at(5, "10:00"), at(6, "10:00")]),
        ("sat,sun 10:00-14:00", [at(5, "10:00"), at(6, "13:59")], [at(0, "11:00")]),
        ("Monday-Wednesday 08:00-09:00", [at(2, "08:30")], [at(3, "08:30")]),
        ("fri-mon 12:00-13:00", [at(4, "12:00"), at(0, "12:00")], [at(1, "12:00")]),
        # past midnight: the evening of the day, and the morning after it
        ("fri 20:00-02:00", [at(4, "23:00"), at(5, "01:59")], [at(5, "02:00"), at(3, "23:00")]),
        ("sun 22:00-01:00", [at(6, "22:30"), at(7, "00:30")], [at(1, "00:30"), at(6, "00:30")]),
        ("mon 00:00-24:00", [at(0, "00:00"), at(0, "23:59")], [at(1, "00:00")]),
    ],
)
def test_opening_hours_lines(
    line: str, open_at: list[dt.datetime], closed_at: list[dt.datetime]
) -> None:
    hours = OpeningHours.parse([line])
    for when in open_at:
        assert hours.is_open(when), when
    for when in closed_at:
        assert not hours.is_open(when), when


def test_no_lines_is_always_open_and_several_lines_add_up() -> None:
    assert OpeningHours.parse([]).is_open(at(3, "03:00"))
    assert OpeningHours.parse(["", "  "]).always
    hours = OpeningHours.parse(["mon-fri 09:00-12:00", "mon-fri 13:00-17:00"])
    assert hours.is_open(at(0, "11:00")) and not hours.is_open(at(0, "12:30"))
    assert hours.next_change(at(0, "11:00")) == at(0, "12:00")
    assert hours.next_change(at(0, "12:30")) == at(0, "13:00")
    assert hours.next_change(at(4, "17:00")) == at(7, "09:00")  # the weekend passes
    assert OpeningHours.parse([]).next_change(at(0, "10:00")) is None


@pytest.mark.parametrize(
    "line",
    [
        "9-17",
        "mon-fri",
        "someday 09:00-10:00",
        "mon-xyz 09:00-10:00",
        "25:00-26:00",
        "09:60-10:00",
        "09:00-09:00",
        "mon 09:00 to 17:00",
        "mon;tue 09:00-10:00",
    ],
)
def test_wrong_lines_are_refused_with_a_sentence_that_names_them(line: str) -> None:
    with pytest.raises(ValueError, match="opening hours") as caught:
        OpeningHours.parse([line])
    assert line.strip() in str(caught.value)
    with pytest.raises(ValidationError):
        KioskSettings(opening_hours=[line])


def test_the_settings_section_and_its_watchdog_command() -> None:
    settings = Settings.model_validate(
        {"kiosk": {"heartbeat_s": 1, "heartbeat_timeout_s": 5, "frozen_after_s": 0}}
    )
    command = settings.kiosk.watchdog_command()
    assert command is not None
    assert (command.heartbeat_ms, command.frozen_ms, command.black_ms) == (1000, 0, 3000)
    assert Settings().kiosk.attract_after_min == 0  # the attract screen is off by default
    assert KioskSettings(watchdog=False).watchdog_command() is None
    with pytest.raises(ValidationError, match="twice"):
        KioskSettings(heartbeat_s=5, heartbeat_timeout_s=6)
    assert KioskSettings(opening_hours=[" mon 09:00-10:00 ", ""]).opening_hours == [
        "mon 09:00-10:00"
    ]
