"""A kiosk's own settings: the stage watchdog's times, the attract screen, the opening hours.

Qt-free values. :class:`KioskSettings` is one section of the app's settings (``kiosk``); the
stage watchdog runs in every mode (its findings are shown and logged), the recovery and the
attract screen only in kiosk mode.

Opening hours are lines such as ``mon-fri 09:00-18:00``, ``sat,sun 10:00-14:00``,
``daily 08:00-20:00`` or just ``09:00-17:00`` (every day); a range past midnight
(``fri 20:00-02:00``) ends the next morning. No lines: always open.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterable, Sequence
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from avaturn_desktop.core.events import WatchdogCommand

DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_LINE = re.compile(
    r"^\s*(?:(?P<days>[a-z,\-\s]+?)\s+)?(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$"
)
#: The longest attract image the page is sent (it travels as a data: URL).
MAX_ATTRACT_IMAGE_BYTES: Final = 5 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class OpenRange:
    """Open on ``days`` (0 = Monday) from ``start`` to ``end`` (past midnight if end <= start)."""

    days: frozenset[int]
    start: dt.time
    end: dt.time

    def covers(self, when: dt.datetime) -> bool:
        t = when.time()
        today = when.weekday()
        yesterday = (today - 1) % 7
        if self.start < self.end:
            return today in self.days and self.start <= t < self.end
        # past midnight: the evening of an opening day, or the morning after one
        return (today in self.days and t >= self.start) or (yesterday in self.days and t < self.end)


class OpeningHours:
    """When a kiosk is open; parsed from lines (see the module docs)."""

    def __init__(self, ranges: Sequence[OpenRange] = ()) -> None:
        self.ranges = tuple(ranges)

    @classmethod
    def parse(cls, lines: Iterable[str]) -> OpeningHours:
        """Raises ``ValueError`` with a sentence naming the line that is wrong."""
        return cls([_parse_line(line) for line in lines if line.strip()])

    @property
    def always(self) -> bool:
        return not self.ranges

    def is_open(self, when: dt.datetime) -> bool:
        return self.always or any(r.covers(when) for r in self.ranges)

    def next_change(
        self, when: dt.datetime, *, within: dt.timedelta = dt.timedelta(days=8)
    ) -> dt.datetime | None:
        """The next minute at which open turns closed or closed open (None: never, or not
        within ``within``). Minutes are the unit the lines are written in."""
        if self.always:
            return None
        now_open = self.is_open(when)
        step = when.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        end = when + within
        while step <= end:
            if self.is_open(step) != now_open:
                return step
            step += dt.timedelta(minutes=1)
        return None


def _parse_line(line: str) -> OpenRange:
    match = _LINE.match(line.lower())
    if match is None:
        raise ValueError(
            f"opening hours {line.strip()!r}: write days and times as 'mon-fri 09:00-18:00'"
        )
    days = _parse_days(match.group("days"), line)
    start, end = (_parse_time(match.group(g), line) for g in ("start", "end"))
    if start == end:
        raise ValueError(f"opening hours {line.strip()!r}: the range is empty")
    return OpenRange(days, start, end)


def _parse_days(text: str | None, line: str) -> frozenset[int]:
    if text is None or text.strip() in ("", "daily", "every day"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        first, _, last = (d.strip()[:3] for d in part.partition("-"))
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(
                f"opening hours {line.strip()!r}: days are mon, tue, wed, thu, fri, sat, sun"
            )
        a = DAYS.index(first)
        b = DAYS.index(last) if last else a
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return frozenset(days)


def _parse_time(text: str, line: str) -> dt.time:
    hours, minutes = (int(x) for x in text.split(":"))
    if hours == 24 and minutes == 0:
        return dt.time(23, 59, 59, 999_999)
    if not (0 <= hours < 24 and 0 <= minutes < 60):
        raise ValueError(f"opening hours {line.strip()!r}: {text} is not a time of day")
    return dt.time(hours, minutes)


class KioskSettings(BaseModel):
    """The ``kiosk`` section of the settings (times in seconds unless named otherwise)."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    #: The stage watchdog: heartbeats, and the checks of the live avatar's picture and sound.
    watchdog: bool = True
    heartbeat_s: Annotated[float, Field(ge=0.5, le=60)] = 2.0
    #: A page silent this long hangs: shown; in kiosk mode the page is reloaded.
    heartbeat_timeout_s: Annotated[float, Field(ge=2, le=600)] = 10.0
    sample_s: Annotated[float, Field(ge=0.1, le=10)] = 0.5
    #: How long the picture is black, unchanged, or the speaking avatar silent, before it is a
    #: problem (0: not checked).
    black_after_s: Annotated[float, Field(ge=0, le=600)] = 3.0
    frozen_after_s: Annotated[float, Field(ge=0, le=600)] = 4.0
    silent_after_s: Annotated[float, Field(ge=0, le=600)] = 3.0

    #: After this many minutes without a trigger (a line to say, a touch, a key) the session
    #: ends and the attract screen shows (0: never).
    attract_after_min: Annotated[float, Field(ge=0, le=1440)] = 0.0
    attract_text: Annotated[str, Field(max_length=500)] = "Touch the screen to begin"
    #: An image file for the attract screen (PNG, JPEG, WebP, GIF or SVG), or none.
    attract_image: str | None = None
    #: Outside these hours the kiosk shows ``closed_text`` and starts no session.
    opening_hours: Annotated[list[Annotated[str, Field(max_length=100)]], Field(max_length=50)] = []
    closed_text: Annotated[str, Field(max_length=500)] = "Closed for now. See you soon."

    @field_validator("opening_hours")
    @classmethod
    def _hours(cls, lines: list[str]) -> list[str]:
        OpeningHours.parse(lines)
        return [line.strip() for line in lines if line.strip()]

    @model_validator(mode="after")
    def _heartbeat_fits(self) -> KioskSettings:
        if self.heartbeat_timeout_s < 2 * self.heartbeat_s:
            raise ValueError(
                "heartbeat_timeout_s must be at least twice heartbeat_s (a late heartbeat is "
                "not a hang)"
            )
        return self

    def hours(self) -> OpeningHours:
        return OpeningHours.parse(self.opening_hours)

    def watchdog_command(self) -> WatchdogCommand | None:
        """What the stage page is told (None: the watchdog is off)."""
        if not self.watchdog:
            return None

        def ms(seconds: float) -> int:
            return round(seconds * 1000)

        return WatchdogCommand(
            ref=0,
            heartbeat_ms=ms(self.heartbeat_s),
            sample_ms=ms(self.sample_s),
            black_ms=ms(self.black_after_s),
            frozen_ms=ms(self.frozen_after_s),
            silent_ms=ms(self.silent_after_s),
        )
