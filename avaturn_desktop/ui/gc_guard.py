"""Python's garbage collector, run on the Qt thread only.

The cyclic collector runs in whichever thread happens to allocate when a threshold is crossed:
in the app that can be the in-process simulator's thread. A Qt object it finalizes there is
deleted from the wrong thread, and a timer or event of it later crashes the process. So the
automatic collector is turned off and a timer on the Qt thread collects instead, generation by
generation as the counts grow (the pattern long used by PyQt applications). What start-up
made is frozen out of the collector's sight, so a full collection stays a few milliseconds.
"""

from __future__ import annotations

import gc
import logging

from PySide6.QtCore import QObject, QTimer

log = logging.getLogger("avaturn.gc")


class MainThreadCollector(QObject):
    def __init__(self, interval_ms: int = 500, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thresholds = gc.get_threshold()
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.check)

    def start(self) -> None:
        gc.disable()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        gc.collect()
        gc.enable()

    @staticmethod
    def freeze_long_lived() -> None:
        """Once start-up is done: what exists now lives as long as the app, so full
        collections need not scan it again (each would otherwise stall the window ~50 ms).

        Only the young generations are collected first: a full collection over start-up's
        ~80,000 objects took ~50 ms, on the path of the first session's answer, and found
        nothing (the collector above keeps up with start-up's garbage as it goes).
        """
        gc.collect(1)
        gc.freeze()

    def check(self) -> None:
        """Collect the oldest generation whose count passed its threshold, like Python would."""
        counts = gc.get_count()
        for generation in (2, 1, 0):
            if counts[generation] > self._thresholds[generation]:
                gc.collect(generation)
                return
