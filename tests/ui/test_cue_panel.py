"""The cue list redraws only the rows that look different: a GO changes a few rows of a
200-cue script, and the voice's measured pace, which moves every estimate a little with each
line spoken, repaints nothing until a time as shown changes."""

from __future__ import annotations

import dataclasses
from typing import Any

from avaturn_desktop.services.cues import CueState, CueView
from avaturn_desktop.ui.docks.cue_panel import CueModel


class _Presenter:
    def __init__(self, views: list[CueView]) -> None:
        self.views = views

    def cues(self) -> list[CueView]:
        return list(self.views)

    def edit(self, _index: int, _source: str) -> bool:
        return False


def _views(count: int) -> list[CueView]:
    return [
        CueView(
            index=n,
            section=None,
            text=f"Cue {n}.",
            source=f"Cue {n}.",
            notes=(),
            estimate_s=4.2,
            state=CueState.STANDBY if n == 0 else CueState.LATER,
            item_ids=(),
        )
        for n in range(count)
    ]


def _redrawn(model: CueModel) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    model.dataChanged.connect(lambda a, b, _roles=(): spans.append((a.row(), b.row())))
    assert not model.refresh()
    return spans


def test_only_rows_that_look_different_are_redrawn_in_runs(qtbot: Any) -> None:
    presenter = _Presenter(_views(20))
    model = CueModel(presenter)  # type: ignore[arg-type]
    assert model.refresh()  # the script: a reset
    assert model.rowCount() == 20

    assert _redrawn(model) == []  # the very same views

    # every view made again at a pace a little different: the times shown are the same
    presenter.views = [dataclasses.replace(v, estimate_s=4.3) for v in presenter.views]
    assert _redrawn(model) == []

    # a GO: cue 0 plays, 1 stands by, 2 is next; cue 9 was cut off meanwhile
    views = list(presenter.views)
    views[0] = dataclasses.replace(views[0], state=CueState.PLAYING, item_ids=(1, 2))
    views[1] = dataclasses.replace(views[1], state=CueState.STANDBY)
    views[2] = dataclasses.replace(views[2], state=CueState.NEXT)
    views[9] = dataclasses.replace(views[9], state=CueState.STOPPED)
    presenter.views = views
    assert _redrawn(model) == [(0, 2), (9, 9)]
    assert model.index(1, 5).data() == "▶ standby"

    # a pace that changes the times shown redraws them all
    presenter.views = [dataclasses.replace(v, estimate_s=9.0) for v in presenter.views]
    assert _redrawn(model) == [(0, 19)]
    assert model.index(5, 4).data() == "0:09"
